//! Tickets: one-shot answers backed by a `watch` channel.
//!
//! The tracker keeps the sending half ([`Resolver`]) of every pending ticket. Resolving sends
//! the answer; dropping a resolver without an answer (the tracker stopped) makes the ticket
//! resolve `false`, which is how T6 holds even if the tracker task panics.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Ticket;

/// The tracker's half of a pending ticket.
#[derive(Debug)]
pub(super) struct Resolver(watch::Sender<Option<bool>>);

impl Resolver {
    /// Answers the ticket.
    pub(super) fn resolve(self, answer: bool) {
        self.0.send_replace(Some(answer));
    }

    /// True if nobody holds the ticket any more, so its answer would be lost.
    pub(super) fn is_abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

/// The caller's half: implements [`Ticket`].
#[derive(Debug, Clone)]
pub(super) struct WatchTicket(watch::Receiver<Option<bool>>);

#[async_trait]
impl Ticket for WatchTicket {
    async fn wait(&self) -> bool {
        let mut rx = self.0.clone();
        let answered = match rx.wait_for(Option::is_some).await {
            Ok(answer) => *answer,
            Err(_) => None,
        };
        // A closed channel means the tracker stopped (T6); an answer sent just before the
        // drop is still in the channel.
        answered.or(*rx.borrow()).unwrap_or(false)
    }

    async fn ready(&self) {
        self.wait().await;
    }
}

/// A pending ticket and its resolver.
pub(super) fn pending() -> (WatchTicket, Resolver) {
    let (tx, rx) = watch::channel(None);
    (WatchTicket(rx), Resolver(tx))
}

/// A ticket that is ready at once with `answer`.
pub(super) fn resolved(answer: bool) -> WatchTicket {
    let (ticket, resolver) = pending();
    resolver.resolve(answer);
    ticket
}

/// Keeps only the resolvers whose tickets are still held, so callers that drop tickets
/// without waiting cannot grow the tracker's lists without bound.
pub(super) fn prune(resolvers: &mut Vec<Resolver>) {
    resolvers.retain(|r| !r.is_abandoned());
}
