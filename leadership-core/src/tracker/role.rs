//! What a tracker believes about its unit, as its users see it.

use std::fmt;

use crate::Fence;

/// A tracker's role (W3): what it believes about its unit right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Before the first claim has answered.
    Undecided,
    /// Not leader.
    Minion,
    /// Leader in term `fence`.
    Leader {
        /// The term's fence (F1).
        fence: Fence,
    },
    /// The tracker has stopped.
    Stopped,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Undecided => f.write_str("undecided"),
            Role::Minion => f.write_str("minion"),
            Role::Leader { fence } => write!(f, "leader (fence {fence})"),
            Role::Stopped => f.write_str("stopped"),
        }
    }
}
