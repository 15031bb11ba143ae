//! What the conformance suite needs to know of this store, exported once (issue 13.4).

use std::time::Duration;

use leadership_core::conformance::Profile;

/// The Redis store's timing promises for the conformance suite.
///
/// The store's expiry is exact on the server's clock (µs) and a watch's timer fires at the
/// expiry it was told of, confirming it with one read; the slacks cover a loaded two-core
/// machine, the pub/sub hop and that read.
pub fn conformance_profile() -> Profile {
    Profile {
        min_duration: Duration::from_millis(200),
        expiry_slack: Duration::from_millis(250),
        notify_latency: Duration::from_millis(500),
    }
}
