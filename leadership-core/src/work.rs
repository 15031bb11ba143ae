//! Leader-only work over any store (W1): [`with_leader`], juju 4.0's `Ensurer.WithLeader`.
//!
//! [`with_leader`] runs a piece of work only while a unit leads an application, and tells the
//! work, through a [`CancellationToken`], the moment the lease ends. It follows the store's
//! own watch ([`Watcher::watch_leader`](crate::Watcher::watch_leader)) rather than polling, so
//! the token fires within the store's notification latency of a revoke, and within its expiry
//! slack plus that latency of an expiry (O2).
//!
//! The order matters and is what makes it exact: the watch is opened *first*, then the token
//! is checked. Any change after the check is therefore in the stream; a check made before
//! opening the watch could miss a revoke that happened between the two.
//!
//! For a unit that keeps its own lease alive, use the tracker's
//! [`run_as_leader`](crate::LeaderTracker::run_as_leader) instead (W2).

use std::future::{Future, poll_fn};

use tokio_util::sync::CancellationToken;

use crate::watch::{LeaderEvent, LeaderStream};
use crate::{Fence, Leadership, Result};

/// Runs `work` if `unit` leads `application`, with the term's fence and a token that fires
/// when the term ends (W1).
///
/// # Contract
/// - Opens `watch_leader(application)`, then checks the unit's token (K1). If the unit does
///   not lead, returns [`Error::NotLeader`](crate::Error::NotLeader) without running `work`.
/// - Runs `work(fence, token)` to its end and returns its output; the token is cancelled as
///   soon as the watch shows the application not led by `unit` in term `fence`: a revoke, an
///   expiry, or another term (O2 bounds how soon). Extensions and pins do not cancel it.
/// - `work` is never cut short by `with_leader`: it is the work's job to stop writing when the
///   token fires (and to pass the fence to guarded writes, F2, for what it cannot stop).
/// - If the watch stream ends (the store shut down) the token fires too: leadership can no
///   longer be confirmed.
///
/// # Errors
/// [`Error::NotLeader`](crate::Error::NotLeader) if the unit does not lead; `Invalid*` for
/// names the store's policy rejects; [`Error::Unavailable`](crate::Error::Unavailable) if the
/// watch cannot be opened or the check cannot be made.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use leadership_core::{Claimer, Leadership, work::with_leader};
/// # async fn example(store: &dyn Leadership) -> leadership_core::Result<()> {
/// store.claim_leadership("db", "db/0", Duration::from_secs(30)).await?;
/// let rows = with_leader(store, "db", "db/0", |fence, lost| async move {
///     tokio::select! {
///         () = lost.cancelled() => 0,       // the term ended: stop writing
///         rows = migrate(fence) => rows,
///     }
/// }).await?;
/// # let _ = rows; Ok(()) }
/// # async fn migrate(_fence: leadership_core::Fence) -> u64 { 1 }
/// ```
pub async fn with_leader<T, W, Fut>(
    store: &dyn Leadership,
    application: &str,
    unit: &str,
    work: W,
) -> Result<T>
where
    W: FnOnce(Fence, CancellationToken) -> Fut,
    Fut: Future<Output = T>,
{
    let mut stream = store.watch_leader(application).await?;
    // The snapshot is the state at the moment the watch began; every later change follows it.
    let snapshot = next(&mut stream).await;
    let fence = store.leadership_check(application, unit).check().await?;
    let seen = match snapshot {
        Some(LeaderEvent::Snapshot { leaders }) => leaders
            .get(application)
            .is_some_and(|leader| leader.unit == unit && leader.fence == fence),
        _ => false,
    };
    let token = CancellationToken::new();
    let work = work(fence, token.clone());
    let follow = follow(store, application, unit, fence, seen, stream, &token);
    tokio::pin!(work);
    tokio::select! {
        output = &mut work => return Ok(output),
        () = follow => {}
    }
    // The term is over and the token has fired; the work decides when it has stopped.
    Ok(work.await)
}

/// Follows the watch until the term (`unit`, `fence`) is over, then cancels `token`.
///
/// `seen` says whether the stream has shown the term yet. Until it has, events about earlier
/// terms may still arrive (the watch was opened before the check): an `Elected` with a smaller
/// fence is ignored, and a `Vacated` (which carries no fence) is settled by checking again,
/// since latest-state-wins (O3) may have folded "our term began, then ended" into it.
async fn follow(
    store: &dyn Leadership,
    application: &str,
    unit: &str,
    fence: Fence,
    mut seen: bool,
    mut stream: LeaderStream,
    token: &CancellationToken,
) {
    loop {
        let Some(event) = next(&mut stream).await else {
            break;
        };
        let over = match event {
            LeaderEvent::Elected {
                unit: u, fence: f, ..
            } if u == unit && f == fence => {
                seen = true;
                false
            }
            LeaderEvent::Elected { fence: f, .. } => seen || f > fence,
            LeaderEvent::Vacated { .. } if seen => true,
            LeaderEvent::Vacated { .. } => {
                let again = store.leadership_check(application, unit).check().await;
                match again {
                    Ok(f) if f == fence => {
                        // The vacancy was an earlier term's: ours is in force.
                        seen = true;
                        false
                    }
                    _ => true,
                }
            }
            // A resynchronised stream (O4) restates the state: decide from it.
            LeaderEvent::Snapshot { leaders } => !leaders
                .get(application)
                .is_some_and(|leader| leader.unit == unit && leader.fence == fence),
        };
        if over {
            break;
        }
    }
    token.cancel();
}

async fn next(stream: &mut LeaderStream) -> Option<LeaderEvent> {
    poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
