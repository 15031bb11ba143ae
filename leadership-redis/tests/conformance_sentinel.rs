//! The whole conformance suite through Redis Sentinel (`redis+sentinel://…/leaders`): a
//! primary, a replica and three sentinels, one setup for the binary, each case in its own
//! namespace.

mod common;

leadership_core::conformance_tests!(common::scale::ScaleFactory::sentinel());
