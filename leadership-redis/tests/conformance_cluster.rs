//! The whole conformance suite against a 3-master Redis Cluster (`redis+cluster://`), one
//! cluster for the binary, each case in its own namespace (so its own slot, spread over the
//! masters); waiters and watchers are woken through sharded pub/sub.

mod common;

leadership_core::conformance_tests!(common::scale::ScaleFactory::cluster());
