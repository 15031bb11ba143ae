//! mockall mocks of every leadership trait.
//!
//! The traits live in `leadership-core`, so the mocks are written with [`mockall::mock!`],
//! which repeats each signature. Async methods (the traits use `#[async_trait]`) are set up
//! like plain ones: `returning` gives the value, not a future. Methods that return a
//! `Box<dyn Token>` or `Box<dyn Ticket>` take a closure that builds the box, so a
//! [`MockLeadership`] can hand out [`MockToken`]s.
//!
//! Every mock is `Send + Sync` and can be used as `Arc<dyn Leadership>`,
//! `Arc<dyn Tracker>` and so on.

#![allow(missing_docs)] // mockall generates undocumented expectation types and methods.

use std::collections::BTreeMap;
use std::time::Duration;

use leadership_core::{
    Checker, Claimer, Fence, LeaderStream, Pinner, Reader, Result, Revoker, Term, Ticket, Token,
    Tracker, TrackerWorker, Watcher, async_trait,
};
use mockall::mock;
use tokio_util::sync::CancellationToken;

mock! {
    /// A mock [`Claimer`].
    pub Claimer {}

    #[async_trait]
    impl Claimer for Claimer {
        async fn claim_leadership(&self, application: &str, unit: &str, duration: Duration)
            -> Result<Fence>;
        async fn block_until_leadership_released(
            &self,
            application: &str,
            cancel: CancellationToken,
        ) -> Result<()>;
    }
}

mock! {
    /// A mock [`Checker`].
    pub Checker {}

    impl Checker for Checker {
        fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token>;
    }
}

mock! {
    /// A mock [`Token`].
    pub Token {}

    #[async_trait]
    impl Token for Token {
        async fn check(&self) -> Result<Fence>;
    }
}

mock! {
    /// A mock [`Revoker`].
    pub Revoker {}

    #[async_trait]
    impl Revoker for Revoker {
        async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()>;
    }
}

mock! {
    /// A mock [`Pinner`].
    pub Pinner {}

    #[async_trait]
    impl Pinner for Pinner {
        async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()>;
        async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()>;
        async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>>;
    }
}

mock! {
    /// A mock [`Reader`].
    pub Reader {}

    #[async_trait]
    impl Reader for Reader {
        async fn leaders(&self) -> Result<BTreeMap<String, String>>;
    }
}

mock! {
    /// A mock [`Watcher`].
    pub Watcher {}

    #[async_trait]
    impl Watcher for Watcher {
        async fn watch_leaders(&self) -> Result<LeaderStream>;
        async fn watch_leader(&self, application: &str) -> Result<LeaderStream>;
    }
}

mock! {
    /// A mock store: all six store traits, so it is a [`Leadership`](leadership_core::Leadership).
    pub Leadership {}

    #[async_trait]
    impl Claimer for Leadership {
        async fn claim_leadership(&self, application: &str, unit: &str, duration: Duration)
            -> Result<Fence>;
        async fn block_until_leadership_released(
            &self,
            application: &str,
            cancel: CancellationToken,
        ) -> Result<()>;
    }

    impl Checker for Leadership {
        fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token>;
    }

    #[async_trait]
    impl Revoker for Leadership {
        async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()>;
    }

    #[async_trait]
    impl Pinner for Leadership {
        async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()>;
        async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()>;
        async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>>;
    }

    #[async_trait]
    impl Reader for Leadership {
        async fn leaders(&self) -> Result<BTreeMap<String, String>>;
    }

    #[async_trait]
    impl Watcher for Leadership {
        async fn watch_leaders(&self) -> Result<LeaderStream>;
        async fn watch_leader(&self, application: &str) -> Result<LeaderStream>;
    }
}

mock! {
    /// A mock [`Ticket`].
    pub Ticket {}

    #[async_trait]
    impl Ticket for Ticket {
        async fn wait(&self) -> bool;
        async fn ready(&self);
    }
}

mock! {
    /// A mock [`Tracker`].
    pub Tracker {}

    impl Tracker for Tracker {
        fn application_name(&self) -> String;
        fn claim_duration(&self) -> Duration;
        fn claim_leader(&self) -> Box<dyn Ticket>;
        fn wait_leader(&self) -> Box<dyn Ticket>;
        fn wait_minion(&self) -> Box<dyn Ticket>;
        fn current_term(&self) -> Option<Term>;
    }
}

mock! {
    /// A mock [`TrackerWorker`]: a [`Tracker`] that can be killed and waited for.
    pub TrackerWorker {}

    impl Tracker for TrackerWorker {
        fn application_name(&self) -> String;
        fn claim_duration(&self) -> Duration;
        fn claim_leader(&self) -> Box<dyn Ticket>;
        fn wait_leader(&self) -> Box<dyn Ticket>;
        fn wait_minion(&self) -> Box<dyn Ticket>;
        fn current_term(&self) -> Option<Term>;
    }

    #[async_trait]
    impl TrackerWorker for TrackerWorker {
        fn kill(&self);
        async fn wait(&self) -> Result<()>;
    }
}

/// A [`MockTicket`] that answers `answer` to every `wait()` and is always ready.
pub fn ticket(answer: bool) -> MockTicket {
    let mut ticket = MockTicket::new();
    ticket.expect_wait().return_const(answer);
    ticket.expect_ready().return_const(());
    ticket
}

/// A [`MockToken`] whose every `check()` returns `result`.
pub fn token(result: Result<Fence>) -> MockToken {
    let mut token = MockToken::new();
    token.expect_check().returning(move || result.clone());
    token
}
