#![doc = include_str!("../README.md")]

#[cfg(feature = "faults")]
pub mod faulty;
#[cfg(feature = "harness")]
pub mod harness;
#[cfg(feature = "faults")]
pub mod history;
#[cfg(feature = "mocks")]
pub mod mocks;

#[cfg(feature = "faults")]
pub use faulty::{Fault, FaultyStore};
#[cfg(feature = "mocks")]
pub use mockall;
#[cfg(feature = "mocks")]
pub use mocks::{
    MockChecker, MockClaimer, MockLeadership, MockPinner, MockReader, MockRevoker, MockTicket,
    MockToken, MockTracker, MockTrackerWorker,
};
