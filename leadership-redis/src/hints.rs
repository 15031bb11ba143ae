//! What a handle knows of the leases it holds, for the holder's renewal fast path.
//!
//! A hint is made only by a claim the server granted (after the policy accepted the names)
//! or by a renewal of a lease that already had one: a hint for a lease key therefore also
//! says that its names are valid for this handle's (fixed) policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use leadership_core::Fence;

/// How long a renewal may return the fence this handle last read without reading it again.
///
/// Within this window a renewal is one `PEXPIRE GT`. A lease key exists exactly while its
/// unit leads and cannot expire within the window, so only a revoke and a new claim of the
/// *same unit* through *another handle* can change the term under it; this handle then
/// reports the previous term's fence, which is lower and fails every guarded write (F2),
/// for at most this long.
pub(crate) const REVERIFY_AFTER: Duration = Duration::from_secs(1);

/// Past this many remembered leases per shard, the shard's hints are cleared (leases that
/// ended without a revoke through this handle are never removed otherwise).
const MAX_PER_SHARD: usize = 8_192;

/// Shards, so that callers on different worker threads rarely meet on one lock.
const SHARDS: usize = 16;

/// What a handle knows of a lease it holds: the term's fence, read from the server by a
/// call that started at `verified` and extended the lease to at least `verified + millis`;
/// and the holder's renewal commands for this lease and duration ([`Commands`]), built by
/// the first renewal that needs them and kept for the next (building a command costs the
/// client more than the rest of a fast renewal; a claim whose lease is never renewed, such
/// as a one-off claim of a new application, does not pay for them).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) fence: Fence,
    pub(crate) verified: Instant,
    pub(crate) millis: u64,
    commands: Arc<OnceLock<Commands>>,
}

/// A held lease's renewal commands: `PEXPIRE <key> <millis> GT`, and the verifying
/// renewal, `PEXPIRE <key> <millis> GT` + `GET <key>` as one pipeline.
#[derive(Debug)]
pub(crate) struct Commands {
    pub(crate) pexpire: redis::Cmd,
    pub(crate) renew: redis::Pipeline,
}

/// `PEXPIRE key millis GT` and `GET key` in one round trip: extends the lease and reads its
/// fence.
pub(crate) fn renew_pipeline(key: &str, millis: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.add_command(pexpire_gt(key, millis))
        .cmd("GET")
        .arg(key);
    pipe
}

/// `PEXPIRE key millis GT`: extends the lease key to now + `millis`, never shortening it.
pub(crate) fn pexpire_gt(key: &str, millis: u64) -> redis::Cmd {
    let mut pexpire = redis::cmd("PEXPIRE");
    pexpire.arg(key).arg(millis).arg("GT");
    pexpire
}

impl Held {
    /// A lease held with `fence`, read by a call that started at `verified` and extended the
    /// lease by `millis`.
    pub(crate) fn new(fence: Fence, verified: Instant, millis: u64) -> Self {
        Held {
            fence,
            verified,
            millis,
            commands: Arc::default(),
        }
    }

    /// The same hint, its fence read again by a call that started at `verified`; its
    /// commands as they were.
    pub(crate) fn verified_again(self, fence: Fence, verified: Instant) -> Self {
        Held {
            fence,
            verified,
            ..self
        }
    }

    /// The lease's renewal commands if a renewal built them already: the steady state,
    /// which needs no lease key.
    pub(crate) fn built(&self) -> Option<&Commands> {
        self.commands.get()
    }

    /// The lease's renewal commands; `key` is its lease key (the one the hint is kept
    /// under). Built on first use, then shared by every copy of this hint.
    pub(crate) fn commands(&self, key: &str) -> &Commands {
        self.commands.get_or_init(|| Commands {
            pexpire: pexpire_gt(key, self.millis),
            renew: renew_pipeline(key, self.millis),
        })
    }

    /// Whether a renewal starting at `now` may skip reading the fence: the lease key was
    /// read recently enough that it cannot have expired since (C4 of the verifying call),
    /// and any term change through another handle of the same unit shows within
    /// [`REVERIFY_AFTER`].
    pub(crate) fn fresh(&self, now: Instant) -> bool {
        // A hundredth of the lease covers any drift between the two clocks' rates.
        let lease = Duration::from_millis(self.millis - self.millis / 100);
        now.saturating_duration_since(self.verified) < lease.min(REVERIFY_AFTER)
    }
}

type Shard = HashMap<String, Held, foldhash::fast::RandomState>;

/// A lock on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

/// Hints by lease key.
pub(crate) struct Hints {
    shards: [Padded; SHARDS],
    state: foldhash::fast::RandomState,
}

impl Hints {
    pub(crate) fn new() -> Self {
        Hints {
            shards: Default::default(),
            state: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        use std::hash::BuildHasher as _;
        let index = (self.state.hash_one(key) % SHARDS as u64) as usize;
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Held> {
        self.shard(key).get(key).cloned()
    }

    pub(crate) fn insert(&self, key: String, held: Held) {
        let mut shard = self.shard(&key);
        if shard.len() >= MAX_PER_SHARD && !shard.contains_key(&key) {
            shard.clear();
        }
        shard.insert(key, held);
    }

    /// Records that a renewal which started at `verified` read `fence` for `key`, keeping the
    /// hint's commands; `false` if `key` has no hint (it was cleared meanwhile).
    pub(crate) fn refresh(&self, key: &str, fence: Fence, verified: Instant) -> bool {
        match self.shard(key).get_mut(key) {
            Some(held) => {
                held.fence = fence;
                held.verified = verified;
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        self.shard(key).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_fresh_within_the_window_and_the_lease() {
        let verified = Instant::now();
        let hint = |millis| Held::new(Fence(7), verified, millis);
        let long = hint(30_000);
        assert!(long.fresh(verified));
        assert!(long.fresh(verified + REVERIFY_AFTER - Duration::from_millis(1)));
        assert!(!long.fresh(verified + REVERIFY_AFTER));
        // A lease shorter than the window: fresh only while it surely has not expired.
        let short = hint(100);
        assert!(short.fresh(verified + Duration::from_millis(98)));
        assert!(!short.fresh(verified + Duration::from_millis(99)));
        // A clock read before `verified` (another thread's `now`) is not a reason to panic.
        assert!(
            long.fresh(
                verified
                    .checked_sub(Duration::from_millis(5))
                    .unwrap_or(verified)
            )
        );
    }

    #[test]
    fn hints_are_kept_removed_and_bounded() {
        let hints = Hints::new();
        let held = Held::new(Fence(1), Instant::now(), 1_000);
        hints.insert("a".to_owned(), held.clone());
        assert_eq!(hints.get("a").map(|h| h.fence), Some(Fence(1)));
        hints.remove("a");
        assert!(hints.get("a").is_none());
        for i in 0..(SHARDS * MAX_PER_SHARD * 2) {
            hints.insert(format!("k{i}"), held.clone());
        }
        let total: usize = hints.shards.iter().map(|s| s.0.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * MAX_PER_SHARD, "{total} hints kept");
    }

    #[test]
    fn renewal_commands_are_built_once_on_first_use_and_shared_by_copies() {
        let held = Held::new(Fence(3), Instant::now(), 2_500);
        assert!(held.built().is_none(), "a new hint builds no command");
        let copy = held.clone();
        let built = copy.commands("lease:k");
        assert_eq!(
            built.pexpire.get_packed_command(),
            pexpire_gt("lease:k", 2_500).get_packed_command()
        );
        assert_eq!(
            built.renew.get_packed_pipeline(),
            renew_pipeline("lease:k", 2_500).get_packed_pipeline()
        );
        // The original sees the copy's commands: built once per hint, not per call.
        assert!(held.built().is_some_and(|seen| std::ptr::eq(seen, built)));
        assert!(std::ptr::eq(held.commands("lease:k"), built));
    }
}
