//! W2 on Redis at the size: across 100 handovers by stop-with-release, the next
//! leader's `run_as_leader` work never starts before the previous leader's work ended (one
//! clock, one process). The conformance suite runs the same case with 20 handovers.

mod common;

use leadership_core::tracker_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w2_hundred_handovers_never_overlap() {
    tracker_conformance::w2_handovers(&common::Factory::new(), 100).await;
}
