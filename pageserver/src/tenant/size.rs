//! A tenant's synthetic size: the inputs gathered from its timelines, and the calculation of
//! `tenant_size_model` over them.
//!
//! Per active timeline (parents before children) the model gets these points:
//! - **BranchStart**: the initdb LSN for a root, the branch point for a child (whose state is
//!   the parent's there, so it gets the parent's logical size);
//! - **BranchPoint**: every child's branch LSN;
//! - **RetentionCutoff**: the later of `last_record_lsn − gc_horizon` and the PITR cutoff
//!   (the LSN at now − `pitr_interval`, the interval tightened by `?retention_period=`; an
//!   unknown time maps to "keep everything", see `timeline::commit_times`), never below the
//!   GC cutoff, clamped to the branch; everything above it is needed;
//! - **BranchEnd**: `last_record_lsn`, always needed (the latest state stays readable).
//!
//! Logical sizes (Σ relation forks × 8 KiB) are computed only at the root start, branch
//! points and retention cutoffs — the points where a snapshot may be chosen — and cached per
//! timeline and LSN. GC itself comes later: the model describes what it must keep.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenant_size_model::{ModelBuilder, ModelError, SegmentSize, StorageModel, calculate};
use utils::{Lsn, TenantId, TimelineId};

use super::Tenant;
use crate::timeline::read::ReadError;
use crate::timeline::{Timeline, TimelineState};

/// Why a point is in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PointKind {
    /// Where the timeline's own history starts.
    BranchStart,
    /// Where a child timeline branches off.
    BranchPoint,
    /// Everything above this point must stay readable.
    RetentionCutoff,
    /// The last record: the latest state.
    BranchEnd,
}

/// Which timeline a segment of the model belongs to, and why it is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointInfo {
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Why.
    pub kind: PointKind,
}

/// What one timeline contributed, so a reader can check every LSN in the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineInputs {
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Its parent, for a branch.
    pub ancestor_id: Option<TimelineId>,
    /// The branch point, for a branch.
    pub ancestor_lsn: Option<Lsn>,
    /// Where its own history starts (the model's BranchStart).
    pub start_lsn: Lsn,
    /// Its last record (the model's BranchEnd).
    pub last_record_lsn: Lsn,
    /// Reads below this are refused (history there may be gone).
    pub latest_gc_cutoff: Lsn,
    /// `last_record_lsn − gc_horizon`.
    pub horizon_cutoff: Lsn,
    /// The LSN at now − the PITR interval; `None` when no commit that old is known.
    pub pitr_cutoff: Option<Lsn>,
    /// The PITR interval used (the tenant's, or a shorter `retention_period`).
    #[serde(with = "humantime_serde")]
    pub pitr_interval: Duration,
    /// Where "needed" starts on this timeline.
    pub retention_cutoff: Lsn,
}

/// The inputs of the calculation: the model (from which the result follows alone), what each
/// segment is, and what each timeline contributed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeInputs {
    /// The model given to `tenant_size_model::calculate`.
    pub model: StorageModel,
    /// Per segment of the model (same index): its timeline and kind.
    pub points: Vec<PointInfo>,
    /// Per timeline, parents first.
    pub timelines: Vec<TimelineInputs>,
}

/// The answer of `GET /v1/tenant/{id}/synthetic_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticSize {
    /// The tenant.
    pub id: TenantId,
    /// The synthetic size in bytes (absent with `inputs_only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Per segment of the model: the method chosen and its subtree's cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_sizes: Option<Vec<SegmentSize>>,
    /// Everything the result follows from.
    pub inputs: SizeInputs,
}

/// How to calculate.
#[derive(Clone, Copy, Debug, Default)]
pub struct SizeOptions {
    /// Use this PITR interval when it is shorter than the tenant's.
    pub retention_period: Option<Duration>,
    /// Gather the inputs (sizes included) but do not calculate.
    pub inputs_only: bool,
}

/// Why the size could not be calculated.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// A timeline is still loading.
    #[error("timeline {0} is {1}")]
    NotActive(TimelineId, &'static str),
    /// A timeline is broken: its sizes cannot be read.
    #[error("timeline {0} is broken: {1}")]
    Broken(TimelineId, String),
    /// A logical size could not be read.
    #[error("logical size of timeline {timeline} at {lsn}: {source}")]
    Read {
        /// The timeline.
        timeline: TimelineId,
        /// The LSN.
        lsn: Lsn,
        /// Why.
        source: ReadError,
    },
    /// The model refused the inputs (a bug: the inputs come from the timelines).
    #[error("size model: {0}")]
    Model(#[from] ModelError),
    /// A bug: the message names the broken invariant.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The blocking task computing sizes failed.
    #[error("logical size task: {0}")]
    Task(String),
}

/// Recalculates every active tenant's synthetic size each `interval` (after a first wait of
/// one interval, so a starting pageserver serves before it counts), for the
/// `pageserver_tenant_synthetic_size_bytes` metric. A failure is a warning; the next round
/// tries again. `interval` zero: never.
pub async fn refresh_in_background(
    tenants: Arc<crate::tenant_manager::TenantManager>,
    interval: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        for tenant in tenants.list() {
            if tenant.state() != super::TenantState::Active {
                continue;
            }
            match synthetic_size(&tenant, SizeOptions::default()).await {
                // A tenant deleted meanwhile has had its metric removed: do not bring it back.
                Ok(size) if tenants.get(tenant.tenant_id).is_ok() => {
                    crate::metrics::set_synthetic_size(tenant.tenant_id, size.size);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    tenant_id = %tenant.tenant_id,
                    "synthetic size calculation failed: {e}"
                ),
            }
        }
    }
}

/// Gathers the inputs from `tenant`'s timelines and calculates its synthetic size.
pub async fn synthetic_size(
    tenant: &Tenant,
    options: SizeOptions,
) -> Result<SyntheticSize, SizeError> {
    let timelines = parents_first(usable_timelines(tenant)?);
    let now = utils::pg_time::now_pg_timestamp();
    let mut children: HashMap<TimelineId, Vec<Lsn>> = HashMap::new();
    for tl in &timelines {
        if let Some(ancestor) = &tl.ancestor {
            children
                .entry(ancestor.timeline_id)
                .or_default()
                .push(tl.ancestor_lsn);
        }
    }

    // The points of every timeline, and the logical sizes they need.
    let mut plans = Vec::with_capacity(timelines.len());
    let mut wanted: Vec<(Arc<Timeline>, Lsn)> = Vec::new();
    for tl in &timelines {
        let inputs = timeline_inputs(tl, options.retention_period, now);
        let mut points: BTreeMap<Lsn, PointKind> = BTreeMap::new();
        points.insert(inputs.start_lsn, PointKind::BranchStart);
        for &lsn in children.get(&tl.timeline_id).into_iter().flatten() {
            points.entry(lsn).or_insert(PointKind::BranchPoint);
        }
        if inputs.retention_cutoff > inputs.start_lsn {
            points
                .entry(inputs.retention_cutoff)
                .or_insert(PointKind::RetentionCutoff);
        }
        for (&lsn, &kind) in &points {
            let is_root_start = kind == PointKind::BranchStart && tl.ancestor.is_none();
            if kind != PointKind::BranchStart || is_root_start {
                wanted.push((tl.clone(), lsn));
            }
        }
        plans.push((tl.clone(), inputs, points));
    }
    let sizes = logical_sizes(wanted).await?;

    let mut builder = ModelBuilder::new();
    let mut branch_of = HashMap::new();
    let mut info: HashMap<usize, PointInfo> = HashMap::new();
    let mut timeline_inputs = Vec::with_capacity(plans.len());
    for (tl, inputs, points) in plans {
        let id = tl.timeline_id;
        let point = |kind| PointInfo {
            timeline_id: id,
            kind,
        };
        let parent = tl
            .ancestor
            .as_ref()
            .and_then(|a| branch_of.get(&a.timeline_id).copied());
        let branch = match (parent, &tl.ancestor) {
            (Some(parent), Some(ancestor)) => {
                let branch = builder.add_child(id.to_string(), parent, tl.ancestor_lsn.0)?;
                let size = sizes.get(&(ancestor.timeline_id, tl.ancestor_lsn)).copied();
                let start = builder.insert_point(branch, tl.ancestor_lsn.0, size)?;
                info.insert(start, point(PointKind::BranchStart));
                branch
            }
            _ => {
                let size = sizes.get(&(id, inputs.start_lsn)).copied();
                let branch = builder.add_root(id.to_string(), inputs.start_lsn.0, size);
                let start = builder.insert_point(branch, inputs.start_lsn.0, None)?;
                info.insert(start, point(PointKind::BranchStart));
                branch
            }
        };
        branch_of.insert(id, branch);
        for (&lsn, &kind) in points.range(inputs.start_lsn.saturating_add(1)..) {
            let segment = builder.insert_point(branch, lsn.0, sizes.get(&(id, lsn)).copied())?;
            info.entry(segment).or_insert(point(kind));
        }
        builder.retain_after(branch, inputs.retention_cutoff.0)?;
        let end = builder.end_branch(branch, inputs.last_record_lsn.0, None)?;
        info.insert(end, point(PointKind::BranchEnd));
        timeline_inputs.push(inputs);
    }
    let model = builder.build()?;
    let points = (0..model.segments.len())
        .map(|index| {
            info.remove(&index).ok_or(SizeError::Internal(
                "a segment of the model without its point",
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (size, segment_sizes) = if options.inputs_only {
        (None, None)
    } else {
        let result = calculate(&model)?;
        (Some(result.total_size), Some(result.segments))
    };
    Ok(SyntheticSize {
        id: tenant.tenant_id,
        size,
        segment_sizes,
        inputs: SizeInputs {
            model,
            points,
            timelines: timeline_inputs,
        },
    })
}

/// The timelines that count: Active ones; Stopping ones (being deleted) are left out; a
/// Loading or Broken one makes the size unknowable for now.
fn usable_timelines(tenant: &Tenant) -> Result<Vec<Arc<Timeline>>, SizeError> {
    let mut usable = Vec::new();
    for tl in tenant.timelines() {
        match tl.state() {
            TimelineState::Active => usable.push(tl),
            TimelineState::Stopping => {}
            TimelineState::Broken(reason) => return Err(SizeError::Broken(tl.timeline_id, reason)),
            other => return Err(SizeError::NotActive(tl.timeline_id, other.name())),
        }
    }
    Ok(usable)
}

/// `timelines` ordered so that every ancestor comes before its children (a timeline whose
/// ancestor is not in the list is treated as a root).
fn parents_first(mut timelines: Vec<Arc<Timeline>>) -> Vec<Arc<Timeline>> {
    let ids: std::collections::HashSet<TimelineId> =
        timelines.iter().map(|t| t.timeline_id).collect();
    let depth = |tl: &Timeline| {
        let mut depth = 0usize;
        let mut current = tl.ancestor.clone();
        while let Some(a) = current {
            if !ids.contains(&a.timeline_id) {
                break;
            }
            depth += 1;
            current = a.ancestor.clone();
        }
        depth
    };
    timelines.sort_by_cached_key(|tl| (depth(tl), tl.ancestor_lsn, tl.timeline_id));
    timelines
}

fn timeline_inputs(
    tl: &Timeline,
    retention_period: Option<Duration>,
    now: postgres_ffi::TimestampTz,
) -> TimelineInputs {
    let (gc_horizon, pitr_interval) = {
        let conf = tl.tenant_conf.read();
        (conf.gc_horizon, conf.pitr_interval)
    };
    let pitr_interval = retention_period.map_or(pitr_interval, |r| r.min(pitr_interval));
    let last = tl.last_record_lsn();
    // A branch's own history starts at its branch point (never below the initdb LSN, which
    // timeline creation checks); a root's at initdb.
    let start = if tl.ancestor.is_some() {
        tl.ancestor_lsn
    } else {
        tl.initdb_lsn
    };
    let horizon_cutoff = Lsn(last.0.saturating_sub(gc_horizon));
    let pitr_cutoff = if pitr_interval.is_zero() {
        Some(last)
    } else {
        let micros = i64::try_from(pitr_interval.as_micros()).unwrap_or(i64::MAX);
        tl.commit_times.cutoff_for(now.saturating_sub(micros))
    };
    let gc_cutoff = tl.gc_cutoff_lsn();
    let retention_cutoff = horizon_cutoff
        .max(pitr_cutoff.unwrap_or(Lsn(0)))
        .max(gc_cutoff)
        .max(start)
        .min(last);
    TimelineInputs {
        timeline_id: tl.timeline_id,
        ancestor_id: tl.ancestor.as_ref().map(|a| a.timeline_id),
        ancestor_lsn: tl.ancestor.as_ref().map(|_| tl.ancestor_lsn),
        start_lsn: start,
        last_record_lsn: last,
        latest_gc_cutoff: gc_cutoff,
        horizon_cutoff,
        pitr_cutoff,
        pitr_interval,
        retention_cutoff,
    }
}

/// The logical size at each `(timeline, lsn)`, through each timeline's cache, computed off the
/// async threads (it reads layer files).
async fn logical_sizes(
    wanted: Vec<(Arc<Timeline>, Lsn)>,
) -> Result<HashMap<(TimelineId, Lsn), u64>, SizeError> {
    tokio::task::spawn_blocking(move || {
        let mut sizes = HashMap::new();
        for (tl, lsn) in wanted {
            let size = tl
                .logical_size_cached(lsn)
                .map_err(|source| SizeError::Read {
                    timeline: tl.timeline_id,
                    lsn,
                    source,
                })?;
            sizes.insert((tl.timeline_id, lsn), size);
        }
        Ok(sizes)
    })
    .await
    .map_err(|e| SizeError::Task(e.to_string()))?
}
