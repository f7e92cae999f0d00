//! The map of every timeline this safekeeper holds: the served ones, and the broken ones
//! with the error that stopped them from loading.
//!
//! # Invariants
//! * A timeline id is in at most one of the two maps.
//! * Creation and deletion are serialized by one lock (they do blocking disk I/O: call them
//!   from a blocking thread), so a timeline is never created twice, and a deletion never
//!   races a creation of the same id. Lookups take only the map lock, briefly.
//! * A broken timeline is never served: lookups fail with its load error. Deleting it
//!   removes its directory like any other.
//! * A deleted timeline is removed from the map after it is marked deleted under its
//!   acceptor lock (so no acceptor call runs on it afterwards) and before its directory is
//!   removed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use safekeeper_api::ServerInfo;
use safekeeper_api::membership::Configuration;
use safekeeper_api::term::{TermHistory, TermLsn};
use tokio_util::sync::CancellationToken;
use tracing::info;
use utils::{Lsn, TenantId, TenantTimelineId};

use crate::SafeKeeperConf;
use crate::control_file::TimelinePersistentState;
use crate::metrics;
use crate::shared_timeline::{SharedTimeline, TimelineGone};
use crate::timeline::{self, Timeline, TimelineError};

/// Why a timeline could not be found, created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum GlobalTimelinesError {
    /// No such timeline.
    #[error("timeline {0} not found")]
    NotFound(TenantTimelineId),
    /// The timeline exists but failed to load; it is not served.
    #[error("timeline {ttid} is broken and not served: {msg}")]
    Broken {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Its load error.
        msg: String,
    },
    /// Creation of a timeline that exists (or is broken).
    #[error("timeline {0} already exists")]
    AlreadyExists(TenantTimelineId),
    /// A creation request that cannot describe a timeline.
    #[error("invalid timeline creation request for {ttid}: {msg}")]
    InvalidRequest {
        /// The timeline.
        ttid: TenantTimelineId,
        /// What is wrong.
        msg: String,
    },
    /// Creating, loading or deleting on disk failed.
    #[error(transparent)]
    Timeline(#[from] TimelineError),
}

#[derive(Default)]
struct Maps {
    timelines: BTreeMap<TenantTimelineId, Arc<SharedTimeline>>,
    broken: BTreeMap<TenantTimelineId, String>,
}

impl Maps {
    fn update_metrics(&self) {
        metrics::TIMELINES.set(self.timelines.len() as i64);
        metrics::BROKEN_TIMELINES.set(self.broken.len() as i64);
    }
}

/// Every timeline of this safekeeper.
pub struct GlobalTimelines {
    conf: SafeKeeperConf,
    cancel: CancellationToken,
    maps: Mutex<Maps>,
    lifecycle: Mutex<()>,
}

impl std::fmt::Debug for GlobalTimelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let maps = lock(&self.maps);
        f.debug_struct("GlobalTimelines")
            .field("timelines", &maps.timelines.len())
            .field("broken", &maps.broken.len())
            .finish()
    }
}

use crate::lock_ignoring_poison as lock;

pub use crate::wal_storage::is_possible_start_lsn;

/// The initial state of a timeline created with a known WAL start (`POST
/// /v1/tenant/timeline`): its history is `[(0, start_lsn)]` and every position starts
/// there, so the first proposer's election finds the common point `(0, start_lsn)`.
pub fn initial_state(
    ttid: TenantTimelineId,
    mconf: Configuration,
    server: ServerInfo,
    start_lsn: Lsn,
) -> Result<TimelinePersistentState, GlobalTimelinesError> {
    let invalid = |msg: String| GlobalTimelinesError::InvalidRequest { ttid, msg };
    if !postgres_ffi::is_valid_wal_segment_size(u64::from(server.wal_seg_size)) {
        return Err(invalid(format!(
            "wal_seg_size {} is not a power of two between 1 MiB and 1 GiB",
            server.wal_seg_size
        )));
    }
    if postgres_ffi::PgMajorVersion::from_number(server.pg_version / 10000).is_none() {
        return Err(invalid(format!(
            "pg_version {} is not a supported PostgreSQL version (15)",
            server.pg_version
        )));
    }
    let mut s = TimelinePersistentState::new(ttid, mconf, server, SystemTime::now());
    if start_lsn.is_valid() {
        if !is_possible_start_lsn(start_lsn, u64::from(server.wal_seg_size)) {
            return Err(invalid(format!(
                "start_lsn {start_lsn} is not a possible record start (a page boundary, or 8-byte aligned after the page header)"
            )));
        }
        s.acceptor_state.term_history = TermHistory(vec![TermLsn::new(0, start_lsn)]);
        s.timeline_start_lsn = start_lsn;
        s.local_start_lsn = start_lsn;
        s.commit_lsn = start_lsn;
        s.backup_lsn = start_lsn;
        s.peer_horizon_lsn = start_lsn;
        s.remote_consistent_lsn = start_lsn;
    }
    Ok(s)
}

impl GlobalTimelines {
    /// Loads every timeline of the data directory (blocking). Broken ones are recorded, not
    /// fatal; only an unreadable data directory is.
    pub fn load(
        conf: SafeKeeperConf,
        cancel: CancellationToken,
    ) -> Result<GlobalTimelines, TimelineError> {
        let loaded = timeline::load_all_timelines(&conf)?;
        let mut maps = Maps::default();
        for (ttid, t) in loaded.timelines {
            maps.timelines.insert(
                ttid,
                Arc::new(SharedTimeline::new(ttid, t.dir, t.acceptor, &cancel)),
            );
        }
        for (ttid, e) in loaded.broken {
            maps.broken.insert(ttid, e.to_string());
        }
        maps.update_metrics();
        Ok(GlobalTimelines {
            conf,
            cancel,
            maps: Mutex::new(maps),
            lifecycle: Mutex::new(()),
        })
    }

    /// The safekeeper's settings.
    pub fn conf(&self) -> &SafeKeeperConf {
        &self.conf
    }

    /// A served timeline.
    pub fn get(
        &self,
        ttid: &TenantTimelineId,
    ) -> Result<Arc<SharedTimeline>, GlobalTimelinesError> {
        let maps = lock(&self.maps);
        if let Some(t) = maps.timelines.get(ttid) {
            if t.is_broken() {
                return Err(GlobalTimelinesError::Broken {
                    ttid: *ttid,
                    msg: TimelineGone::Broken(*ttid).to_string(),
                });
            }
            return Ok(Arc::clone(t));
        }
        match maps.broken.get(ttid) {
            Some(msg) => Err(GlobalTimelinesError::Broken {
                ttid: *ttid,
                msg: msg.clone(),
            }),
            None => Err(GlobalTimelinesError::NotFound(*ttid)),
        }
    }

    /// Every served timeline.
    pub fn all(&self) -> Vec<Arc<SharedTimeline>> {
        lock(&self.maps).timelines.values().cloned().collect()
    }

    /// The ids of served timelines (not those a panic made Broken).
    pub fn list(&self) -> Vec<TenantTimelineId> {
        lock(&self.maps)
            .timelines
            .iter()
            .filter(|(_, t)| !t.is_broken())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The broken timelines with their errors: those that failed to load, and those a panic
    /// under the acceptor lock made Broken.
    pub fn broken(&self) -> Vec<(TenantTimelineId, String)> {
        let maps = lock(&self.maps);
        let mut out: Vec<_> = maps.broken.iter().map(|(t, m)| (*t, m.clone())).collect();
        for (ttid, t) in &maps.timelines {
            if t.is_broken() {
                out.push((*ttid, TimelineGone::Broken(*ttid).to_string()));
            }
        }
        out
    }

    /// Creates a timeline from its initial state (blocking).
    pub fn create(
        &self,
        state: TimelinePersistentState,
    ) -> Result<Arc<SharedTimeline>, GlobalTimelinesError> {
        let _guard = lock(&self.lifecycle);
        let ttid = state.ttid();
        if lock(&self.maps).timelines.contains_key(&ttid)
            || lock(&self.maps).broken.contains_key(&ttid)
        {
            return Err(GlobalTimelinesError::AlreadyExists(ttid));
        }
        self.create_locked(state)
    }

    fn create_locked(
        &self,
        state: TimelinePersistentState,
    ) -> Result<Arc<SharedTimeline>, GlobalTimelinesError> {
        let ttid = state.ttid();
        let Timeline { dir, acceptor, .. } = timeline::create_timeline(&self.conf, state)?;
        let shared = Arc::new(SharedTimeline::new(ttid, dir, acceptor, &self.cancel));
        let mut maps = lock(&self.maps);
        maps.timelines.insert(ttid, Arc::clone(&shared));
        maps.update_metrics();
        Ok(shared)
    }

    /// The served timeline, or (when `allow_creation`) a new one for a proposer's greeting
    /// (blocking). Returns whether it was created.
    pub fn get_or_create(
        &self,
        ttid: TenantTimelineId,
        mconf: &Configuration,
        server: ServerInfo,
        allow_creation: bool,
    ) -> Result<(Arc<SharedTimeline>, bool), GlobalTimelinesError> {
        match self.get(&ttid) {
            Ok(t) => return Ok((t, false)),
            Err(GlobalTimelinesError::NotFound(_)) if allow_creation => {}
            Err(e) => return Err(e),
        }
        let _guard = lock(&self.lifecycle);
        match self.get(&ttid) {
            Ok(t) => return Ok((t, false)),
            Err(GlobalTimelinesError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let state = initial_state(ttid, mconf.clone(), server, Lsn::INVALID)?;
        info!(%ttid, "creating timeline on proposer greeting");
        Ok((self.create_locked(state)?, true))
    }

    /// Deletes a timeline, served or broken (blocking). Returns whether it existed.
    pub fn delete(&self, ttid: &TenantTimelineId) -> Result<bool, GlobalTimelinesError> {
        let _guard = lock(&self.lifecycle);
        self.delete_locked(ttid)
    }

    fn delete_locked(&self, ttid: &TenantTimelineId) -> Result<bool, GlobalTimelinesError> {
        let served = lock(&self.maps).timelines.get(ttid).cloned();
        if let Some(t) = &served {
            t.mark_deleted();
        }
        {
            let mut maps = lock(&self.maps);
            maps.timelines.remove(ttid);
            maps.broken.remove(ttid);
            maps.update_metrics();
        }
        let existed = timeline::delete_timeline(&self.conf, ttid)?;
        Ok(existed || served.is_some())
    }

    /// Deletes every timeline of a tenant, and the tenant directory (blocking). Returns the
    /// deleted timelines.
    pub fn delete_tenant(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<TenantTimelineId>, GlobalTimelinesError> {
        let _guard = lock(&self.lifecycle);
        let mut ids: Vec<TenantTimelineId> = {
            let maps = lock(&self.maps);
            maps.timelines
                .keys()
                .chain(maps.broken.keys())
                .filter(|t| t.tenant_id == tenant_id)
                .copied()
                .collect()
        };
        // Directories the maps do not know (e.g. created by hand) go too.
        let tenant_dir = self.conf.datadir.join(tenant_id.to_string());
        if let Ok(entries) = std::fs::read_dir(&tenant_dir) {
            for entry in entries.flatten() {
                if let Some(Ok(timeline_id)) = entry.file_name().to_str().map(str::parse) {
                    let ttid = TenantTimelineId::new(tenant_id, timeline_id);
                    if !ids.contains(&ttid) {
                        ids.push(ttid);
                    }
                }
            }
        }
        let mut deleted = Vec::new();
        for ttid in ids {
            if self.delete_locked(&ttid)? {
                deleted.push(ttid);
            }
        }
        match std::fs::remove_dir(&tenant_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TimelineError::Io {
                    op: "remove",
                    path: tenant_dir,
                    source: e,
                }
                .into());
            }
        }
        info!(%tenant_id, timelines = deleted.len(), "deleted tenant");
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use utils::NodeId;

    use super::*;

    const SEG: u32 = 16 * 1024 * 1024;

    fn server() -> ServerInfo {
        ServerInfo {
            pg_version: 150007,
            system_id: 7,
            wal_seg_size: SEG,
        }
    }

    fn load(dir: &std::path::Path) -> GlobalTimelines {
        let conf = SafeKeeperConf {
            datadir: dir.to_path_buf(),
            my_id: NodeId(1),
            no_sync: true,
            max_peer_lag: crate::DEFAULT_MAX_PEER_LAG,
        };
        GlobalTimelines::load(conf, CancellationToken::new()).unwrap()
    }

    #[test]
    fn possible_start_lsns() {
        let seg = u64::from(SEG);
        assert!(is_possible_start_lsn(Lsn(seg), seg), "segment start");
        assert!(
            is_possible_start_lsn(Lsn(seg + 40), seg),
            "after the long header"
        );
        assert!(
            !is_possible_start_lsn(Lsn(seg + 8), seg),
            "inside the long header"
        );
        assert!(is_possible_start_lsn(Lsn(seg + 8192), seg), "page start");
        assert!(
            is_possible_start_lsn(Lsn(seg + 8192 + 24), seg),
            "after a short header"
        );
        assert!(!is_possible_start_lsn(Lsn(seg + 8192 + 16), seg));
        assert!(
            !is_possible_start_lsn(Lsn(seg + 8192 + 25), seg),
            "unaligned"
        );
        assert!(!is_possible_start_lsn(Lsn::INVALID, seg));
    }

    #[test]
    fn initial_state_starts_history_at_term_zero() {
        let ttid = TenantTimelineId::generate();
        let start = Lsn(u64::from(SEG) + 40);
        let s = initial_state(ttid, Configuration::empty(), server(), start).unwrap();
        assert_eq!(
            s.acceptor_state.term_history,
            TermHistory(vec![TermLsn::new(0, start)])
        );
        assert_eq!(
            (s.commit_lsn, s.local_start_lsn, s.timeline_start_lsn),
            (start, start, start)
        );
        let none = initial_state(ttid, Configuration::empty(), server(), Lsn::INVALID).unwrap();
        assert!(none.acceptor_state.term_history.is_empty());
        let mut bad = server();
        bad.wal_seg_size = 12345;
        let e = initial_state(ttid, Configuration::empty(), bad, start).unwrap_err();
        assert!(e.to_string().contains("wal_seg_size 12345"), "{e}");
        let mut old = server();
        old.pg_version = 140010;
        let e = initial_state(ttid, Configuration::empty(), old, start).unwrap_err();
        assert!(e.to_string().contains("pg_version 140010"), "{e}");
    }

    /// The creation schema's `start_lsn` pattern admits only LSNs the server accepts for
    /// every segment size, and refuses exactly the ones inside some page header: checked
    /// on every aligned position of the first 4 MiB (every spelling) and on random ones.
    #[test]
    fn start_lsn_pattern_is_the_servers_rule() {
        let pattern = regex::Regex::new(&safekeeper_api::models::start_lsn_pattern()).unwrap();
        let seg_sizes: Vec<u64> = safekeeper_api::models::wal_seg_sizes()
            .map(u64::from)
            .collect();
        let conservative = |v: u64| {
            let page_offset = v % 8192;
            v.is_multiple_of(8)
                && (page_offset == 0 || page_offset >= 24)
                && !matches!(v % (1 << 20), 0x18 | 0x20)
        };
        let check = |v: u64, text: &str| {
            let admitted = pattern.is_match(text);
            assert_eq!(admitted, conservative(v), "{text}");
            if admitted && v != 0 {
                let lsn = Lsn((1 << 32) | v);
                for &seg in &seg_sizes {
                    assert!(is_possible_start_lsn(lsn, seg), "{text} with {seg}");
                }
            }
        };
        // Every aligned position of the first 2 MiB (two 1 MiB boundaries, both header
        // kinds), short and zero-padded.
        for v in (0..2u64 << 20).step_by(8) {
            check(v, &format!("1/{v:x}"));
            check(v, &format!("1/{v:08X}"));
        }
        // Random positions, unaligned included, in every spelling.
        let mut rng = rand::rng();
        for _ in 0..5_000 {
            let v = u64::from(rand::Rng::random::<u32>(&mut rng) & !3);
            for width in 1..=8 {
                let text = format!("1/{v:0width$x}");
                if text.len() <= 10 {
                    check(v, &text);
                    check(v, &text.to_uppercase());
                }
            }
        }
        for bad in [
            "",
            "0",
            "0/",
            "/0",
            "0/7",
            "123456789/0",
            "0/123456789",
            "0/8",
            "0/x",
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn concurrent_get_or_create_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Arc::new(load(dir.path()));
        let ttid = TenantTimelineId::generate();
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (tls, barrier) = (Arc::clone(&tls), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    tls.get_or_create(ttid, &Configuration::empty(), server(), true)
                        .unwrap()
                        .1
                })
            })
            .collect();
        let created: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        assert_eq!(tls.list(), vec![ttid]);
        // Without creation, an unknown timeline is not found.
        let other = TenantTimelineId::generate();
        let e = tls
            .get_or_create(other, &Configuration::empty(), server(), false)
            .unwrap_err();
        assert!(matches!(e, GlobalTimelinesError::NotFound(_)), "{e}");
    }

    #[test]
    fn delete_marks_the_shared_timeline_gone() {
        let dir = tempfile::tempdir().unwrap();
        let tls = load(dir.path());
        let ttid = TenantTimelineId::generate();
        let start = Lsn(u64::from(SEG));
        let tl = tls
            .create(initial_state(ttid, Configuration::empty(), server(), start).unwrap())
            .unwrap();
        assert!(matches!(
            tls.create(initial_state(ttid, Configuration::empty(), server(), start).unwrap()),
            Err(GlobalTimelinesError::AlreadyExists(_))
        ));
        assert!(tls.delete(&ttid).unwrap());
        assert!(tl.cancel_token().is_cancelled());
        assert!(
            tl.with_acceptor(|_| ()).is_err(),
            "no acceptor call after deletion"
        );
        assert!(matches!(
            tls.get(&ttid),
            Err(GlobalTimelinesError::NotFound(_))
        ));
        assert!(!tls.delete(&ttid).unwrap());
        // Reloading finds nothing.
        drop(tls);
        assert!(load(dir.path()).list().is_empty());
    }
}
