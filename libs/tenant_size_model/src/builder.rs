//! Building a [`StorageModel`] branch by branch, with absolute LSNs.
//!
//! The builder owns the bookkeeping a caller would otherwise get wrong: which segment is a
//! branch's last point (the parent of the next one), where a child hangs from its parent, and
//! which points the retention cutoff makes needed. Points on a branch are added in LSN order;
//! a point at the LSN of the branch's last point is the same point (its size is filled in if it
//! was unknown). Anything else — an LSN going backwards, a child before its parent's start, a
//! point after a branch's end — is refused with an error, never a panic.

use crate::ModelError;
use crate::model::{Branch, Segment, StorageModel};

/// A branch of the model being built (an index into [`StorageModel::branches`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BranchId(pub usize);

/// Builds a [`StorageModel`]; see the module doc for the rules.
#[derive(Debug, Default)]
pub struct ModelBuilder {
    model: StorageModel,
    /// Per branch: its points (segment indices) in LSN order.
    points: Vec<Vec<usize>>,
    /// Per branch: whether `end_branch` was called.
    ended: Vec<bool>,
    /// The branch ends' segments (always needed).
    ends: Vec<usize>,
}

impl ModelBuilder {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// A branch with no parent (a tenant's first timeline), starting at `start_lsn` with the
    /// logical size there when known.
    pub fn add_root(
        &mut self,
        name: impl Into<String>,
        start_lsn: u64,
        size: Option<u64>,
    ) -> BranchId {
        let branch = self.new_branch(name.into());
        self.push_segment(branch, None, start_lsn, size);
        branch
    }

    /// A branch created from `parent` at `branch_lsn`. The parent gets a point there (appended
    /// when it is past the parent's last point); the child's first point hangs from it.
    pub fn add_child(
        &mut self,
        name: impl Into<String>,
        parent: BranchId,
        branch_lsn: u64,
    ) -> Result<BranchId, ModelError> {
        let segments = &self.model.segments;
        let parent_points = self.branch_points(parent)?;
        let first = parent_points
            .first()
            .ok_or(ModelError::Internal("a branch without points"))?;
        let start = segments[*first].lsn;
        if branch_lsn < start {
            return Err(ModelError::ChildBeforeParentStart {
                parent: self.model.branches[parent.0].name.clone(),
                branch_lsn,
                parent_start: start,
            });
        }
        let found = parent_points
            .binary_search_by_key(&branch_lsn, |&segment| segments[segment].lsn)
            .ok()
            .map(|position| parent_points[position]);
        let branch_point = match found {
            Some(segment) => segment,
            None => self.insert_point(parent, branch_lsn, None)?,
        };
        let child = self.new_branch(name.into());
        self.push_segment(child, Some(branch_point), branch_lsn, None);
        Ok(child)
    }

    /// A point at `lsn` on `branch` (an absolute LSN, not a distance), with the logical size
    /// there when known. Returns the point's segment index.
    pub fn insert_point(
        &mut self,
        branch: BranchId,
        lsn: u64,
        size: Option<u64>,
    ) -> Result<usize, ModelError> {
        let last = self.last_point(branch)?;
        let last_lsn = self.model.segments[last].lsn;
        let name = &self.model.branches[branch.0].name;
        if lsn < last_lsn {
            return Err(ModelError::LsnBackwards {
                branch: name.clone(),
                lsn,
                previous: last_lsn,
            });
        }
        if lsn == last_lsn {
            let segment = &mut self.model.segments[last];
            return match (segment.size, size) {
                (Some(old), Some(new)) if old != new => Err(ModelError::ConflictingSize {
                    branch: name.clone(),
                    lsn,
                    first: old,
                    second: new,
                }),
                (None, Some(new)) => {
                    segment.size = Some(new);
                    Ok(last)
                }
                _ => Ok(last),
            };
        }
        if self.ended[branch.0] {
            return Err(ModelError::PointAfterEnd {
                branch: name.clone(),
                lsn,
                end: last_lsn,
            });
        }
        Ok(self.push_segment(branch, Some(last), lsn, size))
    }

    /// Everything on `branch` above `cutoff` must stay readable at every LSN. Insert a point at
    /// the cutoff (with its size) as well: without one, the WAL from the previous point up to
    /// the cutoff is counted as needed too.
    pub fn retain_after(&mut self, branch: BranchId, cutoff: u64) -> Result<(), ModelError> {
        self.branch_points(branch)?;
        self.model.branches[branch.0].retention_cutoff = Some(cutoff);
        Ok(())
    }

    /// The branch's end (its last record LSN): no point may follow it, and its state is always
    /// needed — whatever the retention, the latest version of a branch stays readable. At the
    /// LSN of the branch's last point (a cutoff at the very end) the end is a separate,
    /// zero-length point, so that it is needed while the point under it may still be a snapshot.
    pub fn end_branch(
        &mut self,
        branch: BranchId,
        lsn: u64,
        size: Option<u64>,
    ) -> Result<usize, ModelError> {
        let last = self.last_point(branch)?;
        let segment = if self.model.segments[last].lsn == lsn && !self.ended[branch.0] {
            self.push_segment(branch, Some(last), lsn, size)
        } else {
            self.insert_point(branch, lsn, size)?
        };
        self.ended[branch.0] = true;
        self.ends.push(segment);
        Ok(segment)
    }

    /// The finished model: `needed` is set from each branch's retention cutoff, and on every
    /// branch end.
    pub fn build(mut self) -> Result<StorageModel, ModelError> {
        for segment in &mut self.model.segments {
            let cutoff = self.model.branches[segment.branch].retention_cutoff;
            segment.needed = cutoff.is_some_and(|cutoff| segment.lsn > cutoff);
        }
        for &end in &self.ends {
            self.model.segments[end].needed = true;
        }
        self.model.validate()?;
        Ok(self.model)
    }

    fn new_branch(&mut self, name: String) -> BranchId {
        self.model.branches.push(Branch {
            name,
            retention_cutoff: None,
        });
        self.points.push(Vec::new());
        self.ended.push(false);
        BranchId(self.model.branches.len() - 1)
    }

    fn push_segment(
        &mut self,
        branch: BranchId,
        parent: Option<usize>,
        lsn: u64,
        size: Option<u64>,
    ) -> usize {
        self.model.segments.push(Segment {
            parent,
            branch: branch.0,
            lsn,
            size,
            needed: false,
        });
        let index = self.model.segments.len() - 1;
        self.points[branch.0].push(index);
        index
    }

    /// The branch's newest point (every branch has its first point from the moment it exists).
    fn last_point(&self, branch: BranchId) -> Result<usize, ModelError> {
        self.branch_points(branch)?
            .last()
            .copied()
            .ok_or(ModelError::Internal("a branch without points"))
    }

    fn branch_points(&self, branch: BranchId) -> Result<&[usize], ModelError> {
        self.points
            .get(branch.0)
            .map(Vec::as_slice)
            .ok_or(ModelError::UnknownBranch {
                segment: self.model.segments.len(),
                branch: branch.0,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_hang_in_order_and_children_from_their_branch_point() {
        let mut builder = ModelBuilder::new();
        let main = builder.add_root("main", 100, Some(10));
        builder.insert_point(main, 500, Some(30)).unwrap();
        let child = builder.add_child("child", main, 500).unwrap();
        builder.end_branch(main, 1000, None).unwrap();
        builder.end_branch(child, 600, None).unwrap();
        builder.retain_after(child, 0).unwrap();
        let model = builder.build().unwrap();
        let parents: Vec<_> = model.segments.iter().map(|s| s.parent).collect();
        assert_eq!(parents, vec![None, Some(0), Some(1), Some(1), Some(2)]);
        let needed: Vec<_> = model.segments.iter().map(|s| s.needed).collect();
        assert_eq!(needed, vec![false, false, true, true, true]);
    }

    #[test]
    fn an_end_at_the_last_point_is_its_own_needed_point() {
        let mut builder = ModelBuilder::new();
        let main = builder.add_root("main", 100, Some(10));
        builder.insert_point(main, 500, Some(30)).unwrap();
        builder.retain_after(main, 500).unwrap();
        assert_eq!(builder.end_branch(main, 500, None), Ok(2));
        let model = builder.build().unwrap();
        assert_eq!(model.segments[2].parent, Some(1));
        assert!(model.segments[2].needed && !model.segments[1].needed);
        let result = crate::calculate(&model).unwrap();
        assert_eq!(result.total_size, 30);
    }

    #[test]
    fn a_branch_point_past_the_parents_last_point_is_appended() {
        let mut builder = ModelBuilder::new();
        let main = builder.add_root("main", 100, None);
        let child = builder.add_child("child", main, 700).unwrap();
        let model = builder.build().unwrap();
        assert_eq!(model.segments[1].lsn, 700);
        assert_eq!(model.segments[1].branch, main.0);
        assert_eq!(model.segments[2].parent, Some(1));
        assert_eq!(model.segments[2].branch, child.0);
    }

    #[test]
    fn malformed_input_is_refused() {
        let mut builder = ModelBuilder::new();
        let main = builder.add_root("main", 100, Some(5));
        builder.insert_point(main, 300, None).unwrap();
        assert!(matches!(
            builder.insert_point(main, 200, None),
            Err(ModelError::LsnBackwards {
                lsn: 200,
                previous: 300,
                ..
            })
        ));
        assert!(matches!(
            builder.add_child("early", main, 50),
            Err(ModelError::ChildBeforeParentStart { branch_lsn: 50, .. })
        ));
        assert!(matches!(
            builder.add_child("between", main, 200),
            Err(ModelError::LsnBackwards { .. })
        ));
        assert!(matches!(
            builder.insert_point(main, 100, Some(6)),
            Err(ModelError::LsnBackwards { .. })
        ));
        builder.insert_point(main, 300, Some(7)).unwrap();
        assert!(matches!(
            builder.insert_point(main, 300, Some(8)),
            Err(ModelError::ConflictingSize {
                first: 7,
                second: 8,
                ..
            })
        ));
        builder.end_branch(main, 400, None).unwrap();
        assert_eq!(builder.insert_point(main, 400, None), Ok(2));
        assert!(matches!(
            builder.insert_point(main, 500, None),
            Err(ModelError::PointAfterEnd { end: 400, .. })
        ));
        assert!(matches!(
            builder.insert_point(BranchId(9), 500, None),
            Err(ModelError::UnknownBranch { branch: 9, .. })
        ));
    }
}
