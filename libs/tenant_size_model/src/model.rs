//! The inputs of the size calculation: a forest of points on branches.
//!
//! A [`Segment`] is a point (an LSN on one branch, optionally with the logical size there) plus
//! the stretch of WAL from its parent point to it. Invariants, checked by
//! [`StorageModel::validate`] and relied on by the calculation:
//! - a segment's parent comes earlier in `segments` than the segment itself, so one pass in
//!   reverse order visits every child before its parent (no recursion, any depth);
//! - a segment's LSN is never below its parent's;
//! - every segment names a branch in `branches`.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Everything the calculation needs, and everything the picture draws: a result is reproducible
/// from this value alone, so it is what the pageserver returns as `inputs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageModel {
    /// The branches, for labels and lanes; the arithmetic only uses `segments`.
    pub branches: Vec<Branch>,
    /// The points, parents before children.
    pub segments: Vec<Segment>,
}

/// One branch (a timeline): its name and the retention cutoff that made its later points needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// What a person calls it (the pageserver uses the timeline id).
    pub name: String,
    /// Points above this LSN must stay readable at every LSN (`needed`); `None` keeps nothing.
    pub retention_cutoff: Option<u64>,
}

/// A point on a branch and the WAL that leads to it from its parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The point this one continues from: the previous point on the same branch, or the branch
    /// point on the parent branch for a branch's first point. `None` for a root.
    pub parent: Option<usize>,
    /// The branch this point lies on (an index into [`StorageModel::branches`]).
    pub branch: usize,
    /// Where the point is.
    pub lsn: u64,
    /// The logical size of the database at `lsn`, when known: only a point with a size can be
    /// stored as a snapshot.
    pub size: Option<u64>,
    /// Every version in `(parent.lsn, lsn]` must stay readable (for a root: the state at `lsn`).
    pub needed: bool,
}

impl StorageModel {
    /// Checks the invariants in the module doc, so that a model read from JSON is refused with
    /// a clear error rather than miscounted.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.branch >= self.branches.len() {
                return Err(ModelError::UnknownBranch {
                    segment: index,
                    branch: segment.branch,
                });
            }
            let Some(parent) = segment.parent else {
                continue;
            };
            if parent >= index {
                return Err(ModelError::ParentNotBefore {
                    segment: index,
                    parent,
                });
            }
            let parent_lsn = self.segments[parent].lsn;
            if segment.lsn < parent_lsn {
                return Err(ModelError::LsnBackwards {
                    branch: self.branches[segment.branch].name.clone(),
                    lsn: segment.lsn,
                    previous: parent_lsn,
                });
            }
        }
        Ok(())
    }

    /// The indices of every segment's children, in index order.
    pub(crate) fn children(&self) -> Vec<Vec<usize>> {
        let mut children = vec![Vec::new(); self.segments.len()];
        for (index, segment) in self.segments.iter().enumerate() {
            if let Some(parent) = segment.parent {
                children[parent].push(index);
            }
        }
        children
    }
}
