//! The cheapest storage that keeps every needed version: per segment, WAL or a snapshot.
//!
//! Each segment is stored by one [`Method`]:
//! - **Wal**: the WAL from the parent point (cost `lsn − parent.lsn`); needs the parent's state;
//! - **SnapshotHere**: a copy of the database at this point (cost: its logical size); only for a
//!   point with a known size that is not needed, or a root (a snapshot cannot replace the WAL
//!   that leads to a needed point, but a root has no WAL before it);
//! - **Skipped**: nothing; only for a point that is not needed.
//!
//! A point's state is available to its children when it is stored as Wal or SnapshotHere.
//! For every segment, bottom-up, the calculation keeps two costs of its subtree: `incremental`
//! (its parent's state is available) and `non_incremental` (it is not); a root takes its
//! `non_incremental`, then the choices are read top-down. Ties prefer Skipped over a snapshot
//! and a snapshot over WAL, so the answer is deterministic. Parents come before children in
//! the model, so both passes are loops over the indices: O(segments), any depth, no recursion.
//! Sums are kept in `u128`, so no realistic model overflows; a total above `u64::MAX` is an
//! error.

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::model::StorageModel;

/// How one segment is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// The WAL from the parent point.
    Wal,
    /// A snapshot (the logical size) at this point.
    SnapshotHere,
    /// Nothing: no version here is needed, and no child reads this point's state.
    Skipped,
}

/// The choice for one segment and what its subtree costs with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSize {
    /// How the segment is stored.
    pub method: Method,
    /// The segment's own cost plus everything stored below it, in bytes.
    pub accum_size: u64,
}

/// The answer: the total and, per segment (same indices as the model), the choice made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeResult {
    /// The synthetic size in bytes; at least 1, so that "nothing to keep" is not confused with
    /// "not calculated".
    pub total_size: u64,
    /// One entry per segment of the model.
    pub segments: Vec<SegmentSize>,
}

/// One option: its cost and the method that achieves it (`None` cost: not possible).
#[derive(Clone, Copy, Debug)]
struct Choice {
    cost: Option<u128>,
    method: Method,
}

impl Choice {
    const IMPOSSIBLE: Choice = Choice {
        cost: None,
        method: Method::Skipped,
    };

    /// `self` unless `other` is strictly cheaper.
    fn or_cheaper(self, other: Choice) -> Choice {
        match (self.cost, other.cost) {
            (None, Some(_)) => other,
            (Some(a), Some(b)) if b < a => other,
            _ => self,
        }
    }
}

/// Computes the synthetic size of `model`: validates it, then runs the two passes described in
/// the module doc. Refuses a model in which some needed point cannot be kept (no size on any
/// point its state could come from), naming the point.
pub fn calculate(model: &StorageModel) -> Result<SizeResult, ModelError> {
    model.validate()?;
    let segments = &model.segments;
    let children = model.children();
    let mut incremental = vec![Choice::IMPOSSIBLE; segments.len()];
    let mut non_incremental = vec![Choice::IMPOSSIBLE; segments.len()];

    for index in (0..segments.len()).rev() {
        let segment = &segments[index];
        let mut sum_incremental = Some(0u128);
        let mut sum_non_incremental = Some(0u128);
        for &child in &children[index] {
            sum_incremental = add(sum_incremental, incremental[child].cost);
            sum_non_incremental = add(sum_non_incremental, non_incremental[child].cost);
        }
        let is_root = segment.parent.is_none();
        let skipped = Choice {
            cost: if segment.needed {
                None
            } else {
                sum_non_incremental
            },
            method: Method::Skipped,
        };
        let snapshot = Choice {
            cost: match segment.size {
                Some(size) if !segment.needed || is_root => {
                    add(Some(u128::from(size)), sum_incremental)
                }
                _ => None,
            },
            method: Method::SnapshotHere,
        };
        let wal = Choice {
            cost: segment.parent.and_then(|parent| {
                add(
                    Some(u128::from(segment.lsn - segments[parent].lsn)),
                    sum_incremental,
                )
            }),
            method: Method::Wal,
        };
        non_incremental[index] = skipped.or_cheaper(snapshot);
        incremental[index] = non_incremental[index].or_cheaper(wal);
    }

    let mut chosen: Vec<(Method, u128)> = Vec::with_capacity(segments.len());
    let mut total = 0u128;
    for (index, segment) in segments.iter().enumerate() {
        // Parents come first, so `chosen[parent]` is already filled.
        let choice = match segment.parent.map(|parent| chosen[parent].0) {
            Some(Method::Wal | Method::SnapshotHere) => incremental[index],
            None | Some(Method::Skipped) => non_incremental[index],
        };
        let Some(cost) = choice.cost else {
            return Err(unkeepable(model));
        };
        if segment.parent.is_none() {
            total += cost;
        }
        chosen.push((choice.method, cost));
    }

    let to_u64 = |bytes: u128| u64::try_from(bytes).map_err(|_| ModelError::TooLarge);
    let sizes = chosen
        .into_iter()
        .map(|(method, cost)| {
            Ok(SegmentSize {
                method,
                accum_size: to_u64(cost)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(SizeResult {
        total_size: to_u64(total.max(1))?,
        segments: sizes,
    })
}

fn add(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    Some(a? + b?)
}

/// The error for a model with no feasible storage: the first needed point whose state cannot
/// be rebuilt. A point's state can be provided when it has a size and may be a snapshot, or
/// when its parent's can (WAL is always allowed below a point whose state is available).
fn unkeepable(model: &StorageModel) -> ModelError {
    let segments = &model.segments;
    let mut providable = vec![false; segments.len()];
    for (index, segment) in segments.iter().enumerate() {
        let is_root = segment.parent.is_none();
        let snapshot_here = segment.size.is_some() && (!segment.needed || is_root);
        let from_parent = segment.parent.is_some_and(|parent| providable[parent]);
        providable[index] = snapshot_here || from_parent;
        let keepable = if is_root {
            snapshot_here || !segment.needed
        } else {
            from_parent || !segment.needed
        };
        if !keepable {
            return ModelError::NeededWithoutSize {
                branch: model.branches[segment.branch].name.clone(),
                lsn: segment.lsn,
                segment: index,
            };
        }
    }
    ModelError::Internal("a model with no feasible storage has every needed point keepable")
}
