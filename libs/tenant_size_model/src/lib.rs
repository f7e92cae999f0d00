//! The synthetic-size model: pure arithmetic over a tenant's branch tree, no I/O.
//!
//! A tenant's synthetic size is the cheapest storage that keeps every version its retention
//! rules promise. The tree of branches is cut into segments at interesting points (branch
//! starts, branch points, retention cutoffs, branch ends); for each segment the calculation
//! chooses between keeping the WAL that leads to it and a snapshot (the logical size) at it.
//!
//! - [`ModelBuilder`] turns branches and absolute LSNs into a [`StorageModel`] (the inputs,
//!   serializable, reproducible: a result follows from its inputs alone);
//! - [`calculate`] returns a [`SizeResult`] (the total and the choice per segment);
//! - [`render_svg`] draws both for a person.
//!
//! The retained WAL is part of the model from the start: a branch's end is a point that is
//! always needed (its latest state stays readable whatever the retention), so a fresh
//! single-branch tenant inside its retention window is charged for its WAL (and its starting
//! snapshot), never 0, and a tenant with no retention at all for its current logical size.

mod builder;
mod calculation;
mod model;
mod svg;

pub use builder::{BranchId, ModelBuilder};
pub use calculation::{Method, SegmentSize, SizeResult, calculate};
pub use model::{Branch, Segment, StorageModel};
pub use svg::{human_bytes, picture_size, render_svg};

/// Why a model was refused: every variant names what is wrong, so a caller can say it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A point below the branch's previous point (points are added in LSN order).
    #[error("branch {branch}: LSN {lsn:#X} is below the previous point {previous:#X}")]
    LsnBackwards {
        /// The branch.
        branch: String,
        /// The offending LSN.
        lsn: u64,
        /// The point it would follow.
        previous: u64,
    },
    /// A child branch whose branch point is before its parent starts.
    #[error(
        "a child of {parent} at {branch_lsn:#X} is before the parent's start {parent_start:#X}"
    )]
    ChildBeforeParentStart {
        /// The parent branch.
        parent: String,
        /// Where the child was asked to start.
        branch_lsn: u64,
        /// Where the parent starts.
        parent_start: u64,
    },
    /// A point after the branch's end.
    #[error("branch {branch}: LSN {lsn:#X} is after the branch's end {end:#X}")]
    PointAfterEnd {
        /// The branch.
        branch: String,
        /// The offending LSN.
        lsn: u64,
        /// The branch's end.
        end: u64,
    },
    /// The same point given two different logical sizes.
    #[error("branch {branch}: two sizes for LSN {lsn:#X}: {first} and {second}")]
    ConflictingSize {
        /// The branch.
        branch: String,
        /// The point.
        lsn: u64,
        /// The size given first.
        first: u64,
        /// The size given second.
        second: u64,
    },
    /// A segment naming a branch that does not exist.
    #[error("segment {segment} names branch {branch}, which does not exist")]
    UnknownBranch {
        /// The segment (or the next segment index, from the builder).
        segment: usize,
        /// The missing branch index.
        branch: usize,
    },
    /// A segment whose parent is not earlier in the list (a cycle, or out of order).
    #[error("segment {segment} has parent {parent}, which does not come before it")]
    ParentNotBefore {
        /// The segment.
        segment: usize,
        /// Its parent.
        parent: usize,
    },
    /// A needed point whose state nothing can provide: no snapshot is allowed at or above it.
    #[error(
        "branch {branch}: the point at {lsn:#X} (segment {segment}) must stay readable, but no \
         point its state could be rebuilt from has a logical size"
    )]
    NeededWithoutSize {
        /// The branch.
        branch: String,
        /// The point.
        lsn: u64,
        /// Its segment index.
        segment: usize,
    },
    /// The total does not fit in 64 bits.
    #[error("the synthetic size does not fit in 64 bits")]
    TooLarge,
    /// A bug in this crate: the message says which invariant broke.
    #[error("internal error in the size model: {0}")]
    Internal(&'static str),
}

#[cfg(test)]
mod tests;
