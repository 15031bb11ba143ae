//! The whole conformance suite against one real redis-server.

mod common;

leadership_core::conformance_tests!(common::Factory::new());
