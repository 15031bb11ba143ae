//! The shared conformance suite against one private etcd member (one per test binary; etcd
//! 3.4 from `PATH` or `LEADERSHIP_ETCD`); each case in its own namespace, through its own
//! client and its own cuttable proxy. `conformance_35.rs` runs the same suite on etcd 3.5.1.

mod common;

use common::factory::Factory;

leadership_core::conformance_tests!(Factory::new(common::server().endpoint()).await);
