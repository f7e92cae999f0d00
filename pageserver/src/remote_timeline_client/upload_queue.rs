//! The order of a timeline's remote operations: a pure state machine (no I/O) that says
//! which queued operations may start now. The client ([`super::RemoteTimelineClient`])
//! runs what it is given and reports completions.
//!
//! Operations are queued in the order the timeline decides them. One may start ahead of
//! operations queued before it (or still running) unless it must wait for one of them:
//! - a **barrier** or **shutdown** waits for everything before it, and everything after it
//!   waits for it;
//! - a layer upload and an upload or deletion of the **same object** never reorder;
//! - an **index** waits for the uploads of the layers it names (so an uploaded index
//!   never names a layer that is not uploaded) and for every index before it; when several
//!   queued indexes could go, only the newest is uploaded (**coalescing**: each is the
//!   whole projected state, so the newest one supersedes the others);
//! - a **deletion** waits until none of its layers is named by the last uploaded index,
//!   an index being uploaded, or an index queued before it (so a layer named by the latest
//!   uploaded index is never deleted);
//! - at most `limit` operations run at once.
//!
//! Independent operations (layer uploads, deletions of unrelated layers) run in parallel.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use pageserver_api::Generation;

use super::index::{IndexPart, LayerFileMeta};
use crate::layers::LayerName;

/// An operation's id (increasing in queue order).
pub type OpId = u64;

/// One remote operation.
#[derive(Debug, Clone)]
pub enum UploadOp {
    /// Upload a local layer file as `<name>-<generation>`.
    UploadLayer {
        /// The layer.
        name: LayerName,
        /// What the index will say of it (its generation is part of the object name).
        meta: LayerFileMeta,
        /// The local file.
        local: PathBuf,
    },
    /// Upload an index (serialized when it was queued).
    UploadIndex {
        /// The index.
        index: Arc<IndexPart>,
        /// Its bytes.
        bytes: Bytes,
    },
    /// Delete layer objects (which no index names any more).
    Delete {
        /// The layers and the generations that uploaded them.
        layers: Vec<(LayerName, Generation)>,
    },
    /// Completes when everything queued before it has.
    Barrier,
    /// Like a barrier, and then the queue accepts nothing more.
    Shutdown,
}

/// Kinds, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// [`UploadOp::UploadLayer`].
    UploadLayer,
    /// [`UploadOp::UploadIndex`].
    UploadIndex,
    /// [`UploadOp::Delete`].
    Delete,
    /// [`UploadOp::Barrier`] and [`UploadOp::Shutdown`].
    Barrier,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 4] = [
        OpKind::UploadLayer,
        OpKind::UploadIndex,
        OpKind::Delete,
        OpKind::Barrier,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            OpKind::UploadLayer => "upload_layer",
            OpKind::UploadIndex => "upload_index",
            OpKind::Delete => "delete",
            OpKind::Barrier => "barrier",
        }
    }
}

impl UploadOp {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            UploadOp::UploadLayer { .. } => OpKind::UploadLayer,
            UploadOp::UploadIndex { .. } => OpKind::UploadIndex,
            UploadOp::Delete { .. } => OpKind::Delete,
            UploadOp::Barrier | UploadOp::Shutdown => OpKind::Barrier,
        }
    }

    fn is_fence(&self) -> bool {
        matches!(self, UploadOp::Barrier | UploadOp::Shutdown)
    }

    fn touches(&self, name: &LayerName, generation: Generation) -> bool {
        match self {
            UploadOp::UploadLayer { name: n, meta, .. } => {
                n == name && meta.generation == generation
            }
            UploadOp::Delete { layers } => {
                layers.iter().any(|(n, g)| n == name && *g == generation)
            }
            _ => false,
        }
    }

    /// Whether `self` must wait for `earlier` (queued before it, or running).
    fn must_wait_for(&self, earlier: &UploadOp) -> bool {
        if self.is_fence() || earlier.is_fence() {
            return true;
        }
        match (self, earlier) {
            (UploadOp::UploadLayer { name, meta, .. }, e) => e.touches(name, meta.generation),
            (UploadOp::UploadIndex { index, .. }, UploadOp::UploadLayer { name, meta, .. }) => {
                index.names(name, meta.generation)
            }
            (UploadOp::UploadIndex { .. }, UploadOp::UploadIndex { .. }) => true,
            (UploadOp::UploadIndex { .. }, _) => false,
            (UploadOp::Delete { layers }, UploadOp::UploadIndex { index, .. }) => {
                layers.iter().any(|(n, g)| index.names(n, *g))
            }
            (UploadOp::Delete { layers }, e) => layers.iter().any(|(n, g)| e.touches(n, *g)),
            _ => false,
        }
    }
}

/// The queue was shut down: nothing more is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upload queue is shut down")]
pub struct QueueStopped;

/// See the module docs.
#[derive(Debug)]
pub struct UploadQueue {
    next_id: OpId,
    queued: VecDeque<(OpId, UploadOp)>,
    in_progress: BTreeMap<OpId, UploadOp>,
    limit: usize,
    /// The last uploaded index (the one found remotely at start, if any).
    clean: Option<Arc<IndexPart>>,
    /// A shutdown was queued.
    closing: bool,
    /// Index uploads dropped because a newer one superseded them.
    pub coalesced: u64,
}

impl UploadQueue {
    /// A queue running at most `limit` operations at once (at least 1), starting from the
    /// remote index `clean` if there is one.
    pub fn new(limit: usize, clean: Option<IndexPart>) -> UploadQueue {
        UploadQueue {
            next_id: 0,
            queued: VecDeque::new(),
            in_progress: BTreeMap::new(),
            limit: limit.max(1),
            clean: clean.map(Arc::new),
            closing: false,
            coalesced: 0,
        }
    }

    /// Queues `op`.
    pub fn push(&mut self, op: UploadOp) -> Result<OpId, QueueStopped> {
        if self.closing {
            return Err(QueueStopped);
        }
        if matches!(op, UploadOp::Shutdown) {
            self.closing = true;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queued.push_back((id, op));
        Ok(id)
    }

    /// The last uploaded index.
    pub fn clean(&self) -> Option<&Arc<IndexPart>> {
        self.clean.as_ref()
    }

    /// Whether nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.in_progress.is_empty()
    }

    /// Whether a shutdown was queued and everything, it included, has completed.
    pub fn is_stopped(&self) -> bool {
        self.closing && self.is_idle()
    }

    /// Operations queued or running, by kind.
    pub fn depth(&self, kind: OpKind) -> usize {
        self.queued
            .iter()
            .map(|(_, op)| op)
            .chain(self.in_progress.values())
            .filter(|op| op.kind() == kind)
            .count()
    }

    /// The id of the newest operation queued so far (`None`: none ever).
    pub fn last_id(&self) -> Option<OpId> {
        self.next_id.checked_sub(1)
    }

    /// Whether every operation up to `id` has completed.
    pub fn completed_through(&self, id: OpId) -> bool {
        self.queued
            .iter()
            .map(|(i, _)| *i)
            .chain(self.in_progress.keys().copied())
            .all(|i| i > id)
    }

    /// Whether the queued operation at `pos` may start, ignoring queued indexes before it
    /// when `coalescing`.
    fn ready(&self, pos: usize, coalescing: bool) -> bool {
        let op = &self.queued[pos].1;
        if let UploadOp::Delete { layers } = op
            && let Some(clean) = &self.clean
            && layers.iter().any(|(n, g)| clean.names(n, *g))
        {
            return false;
        }
        let earlier_queued = self
            .queued
            .iter()
            .take(pos)
            .map(|(_, e)| e)
            .filter(|e| !(coalescing && matches!(e, UploadOp::UploadIndex { .. })));
        !self
            .in_progress
            .values()
            .chain(earlier_queued)
            .any(|e| op.must_wait_for(e))
    }

    /// Moves every operation that may start now to "running" and returns them.
    pub fn take_ready(&mut self) -> Vec<(OpId, UploadOp)> {
        let mut started = Vec::new();
        let mut pos = 0;
        while pos < self.queued.len() && self.in_progress.len() < self.limit {
            if !self.ready(pos, false) {
                pos += 1;
                continue;
            }
            if matches!(self.queued[pos].1, UploadOp::UploadIndex { .. })
                && let Some(newest) = self.newest_coalescable_index(pos)
            {
                // Drop the queued indexes before the newest one that could go instead.
                let mut i = 0;
                let mut target = newest;
                while i < target {
                    if matches!(self.queued[i].1, UploadOp::UploadIndex { .. }) {
                        self.queued.remove(i);
                        self.coalesced += 1;
                        target -= 1;
                    } else {
                        i += 1;
                    }
                }
                pos = target;
            }
            if let Some((id, op)) = self.queued.remove(pos) {
                self.in_progress.insert(id, op.clone());
                started.push((id, op));
            }
            // Starting an op can only block later ones; earlier ones stay as they were.
        }
        started
    }

    /// The position of the newest queued index after `pos` that may start if the queued
    /// indexes before it are dropped.
    fn newest_coalescable_index(&self, pos: usize) -> Option<usize> {
        (pos + 1..self.queued.len()).rev().find(|&k| {
            matches!(self.queued[k].1, UploadOp::UploadIndex { .. }) && self.ready(k, true)
        })
    }

    /// Records that a running operation finished. Returns it (`None` for an unknown id).
    pub fn complete(&mut self, id: OpId) -> Option<UploadOp> {
        let op = self.in_progress.remove(&id)?;
        if let UploadOp::UploadIndex { index, .. } = &op {
            self.clean = Some(Arc::clone(index));
        }
        Some(op)
    }
}

#[cfg(test)]
mod tests;
