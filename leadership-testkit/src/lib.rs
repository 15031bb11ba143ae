#![doc = include_str!("../README.md")]

pub mod faulty;
pub mod harness;
pub mod history;
pub mod mocks;

pub use faulty::{ClaimRecord, Fault, FaultyStore};
pub use mockall;
pub use mocks::{
    MockChecker, MockClaimer, MockLeadership, MockPinner, MockReader, MockRevoker, MockTicket,
    MockToken, MockTracker, MockTrackerWorker,
};
