//! What the conformance suite needs to know about this store.

use std::time::Duration;

use leadership_core::conformance::Profile;

/// The etcd store's timing promises for the conformance suite (and anyone who runs it, or
/// compares against it, over this store).
///
/// - `min_duration`: etcd leases are whole seconds (V3: durations round up to them).
/// - `expiry_slack`: etcd's lessor looks for expired leases every 500 ms, then revokes them
///   through raft; plus scheduling noise on a busy 2-core machine.
/// - `notify_latency`: a change reaches waiters and watchers through one etcd watch event.
pub fn conformance_profile() -> Profile {
    Profile {
        min_duration: Duration::from_secs(1),
        expiry_slack: Duration::from_secs(1),
        notify_latency: Duration::from_millis(500),
    }
}
