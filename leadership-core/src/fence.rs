//! Fencing tokens.

use std::fmt;

/// The term number of a leadership (F1).
///
/// Every new term of an application gets a fence strictly greater than every fence issued
/// before for that application; extensions keep it. Pass it along with writes made as
/// leader so that the store or a downstream system can refuse a stale leader's write (F2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fence(pub u64);

impl Fence {
    /// The raw term number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Fence {
    fn from(value: u64) -> Self {
        Fence(value)
    }
}

impl From<Fence> for u64 {
    fn from(value: Fence) -> Self {
        value.0
    }
}
