//! Timeline directories: durable creation, loading at start, deletion.
//!
//! Layout: `<datadir>/<tenant_id>/<timeline_id>/` holds `safekeeper.control` and the WAL
//! segments; `<datadir>/tmp/` holds staging directories and is emptied at start.
//!
//! Invariants:
//! * A timeline directory exists only complete: it is built in `tmp/` (control file written
//!   and fsynced, directory fsynced) and durably renamed into place, so a crash leaves either
//!   no timeline or a loadable one. Creating over an existing timeline is an error.
//! * Deletion first durably renames the directory into `tmp/`, then removes it: a crash never
//!   leaves a half-deleted timeline that would fail to load.
//! * Loading never lets one timeline stop the others: each failure (a corrupt control file,
//!   committed WAL missing, …) is recorded with its error next to the timelines that loaded.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{error, info};
use utils::crashsafe;
use utils::{TenantId, TenantTimelineId, TimelineId};

use crate::SafeKeeperConf;
use crate::acceptor::{Acceptor, AcceptorError, wal_storage_config};
use crate::control_file::{ControlFileStore, TimelinePersistentState};
use crate::metrics;

/// The staging directory's name under the data directory.
pub const TMP_DIR_NAME: &str = "tmp";

/// Why a timeline could not be created, loaded or deleted.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// Creation of a timeline that exists.
    #[error("timeline {ttid} already exists in {}", dir.display())]
    AlreadyExists {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Its directory.
        dir: PathBuf,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The control file names another timeline than its directory.
    #[error("timeline directory {} holds the control file of timeline {found}", dir.display())]
    Misplaced {
        /// The directory.
        dir: PathBuf,
        /// What the control file says.
        found: TenantTimelineId,
    },
    /// The state given for creation is not valid.
    #[error("cannot create timeline {ttid}: {msg}")]
    InvalidState {
        /// The timeline.
        ttid: TenantTimelineId,
        /// What is wrong.
        msg: String,
    },
    /// The control file or the WAL could not be opened.
    #[error("timeline {ttid}: {source}")]
    Open {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Why.
        #[source]
        source: AcceptorError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TimelineError + 'a {
    move |source| TimelineError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `<datadir>/<tenant>/<timeline>`.
pub fn timeline_dir(datadir: &Path, ttid: &TenantTimelineId) -> PathBuf {
    datadir
        .join(ttid.tenant_id.to_string())
        .join(ttid.timeline_id.to_string())
}

/// `<datadir>/tmp`.
pub fn tmp_dir(datadir: &Path) -> PathBuf {
    datadir.join(TMP_DIR_NAME)
}

/// A unique directory name in `tmp/` for work on `ttid`.
fn staging_name(ttid: &TenantTimelineId, what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}_{}_{}_{n}_{what}",
        ttid.tenant_id,
        ttid.timeline_id,
        std::process::id()
    )
}

/// A loaded timeline: its directory and its acceptor.
#[derive(Debug)]
pub struct Timeline {
    /// Which timeline.
    pub ttid: TenantTimelineId,
    /// Its directory.
    pub dir: PathBuf,
    /// The acceptor over its control file and WAL.
    pub acceptor: Acceptor,
}

impl Timeline {
    /// Loads the timeline `ttid` from its directory.
    pub fn load(conf: &SafeKeeperConf, ttid: TenantTimelineId) -> Result<Timeline, TimelineError> {
        let dir = timeline_dir(&conf.datadir, &ttid);
        let open_err = |source: AcceptorError| TimelineError::Open { ttid, source };
        let control = ControlFileStore::load(&dir, conf.sync()).map_err(|e| open_err(e.into()))?;
        // Check before the WAL is opened (and possibly truncated) on the file's word.
        let found = control.state().ttid();
        if found != ttid {
            return Err(TimelineError::Misplaced { dir, found });
        }
        let acceptor = Acceptor::with_control_file(&dir, control, conf.my_id, conf.sync())
            .map_err(open_err)?;
        Ok(Timeline {
            ttid,
            dir,
            acceptor,
        })
    }

    /// Deletes the WAL segments below the removal horizon (see
    /// [`Acceptor::wal_removal_horizon`]); returns their numbers.
    pub fn remove_old_wal(
        &self,
        backup_enabled: bool,
        max_peer_lag: u64,
    ) -> Result<Vec<u64>, crate::wal_storage::StorageError> {
        self.acceptor.remove_old_wal(backup_enabled, max_peer_lag)
    }
}

/// Creates a timeline durably from its initial `state` (see the module docs) and loads it.
pub fn create_timeline(
    conf: &SafeKeeperConf,
    state: TimelinePersistentState,
) -> Result<Timeline, TimelineError> {
    let ttid = state.ttid();
    let sync = conf.sync();
    let invalid = |msg: String| TimelineError::InvalidState { ttid, msg };
    state.validate().map_err(invalid)?;
    let target = timeline_dir(&conf.datadir, &ttid);
    // The WAL settings must be usable before anything is written.
    wal_storage_config(utils::vfs::os(), &target, &state, sync)
        .map_err(|e| invalid(e.to_string()))?;
    if target.exists() {
        return Err(TimelineError::AlreadyExists { ttid, dir: target });
    }
    let tmp = tmp_dir(&conf.datadir);
    crashsafe::create_dir_all(&tmp, sync).map_err(io_err("create", &tmp))?;
    let staging = tmp.join(staging_name(&ttid, "create"));
    crashsafe::create_dir(&staging, sync).map_err(io_err("create", &staging))?;
    let result = (|| {
        ControlFileStore::create(&staging, state, sync).map_err(|e| TimelineError::Open {
            ttid,
            source: e.into(),
        })?;
        let tenant_dir = conf.datadir.join(ttid.tenant_id.to_string());
        crashsafe::create_dir_all(&tenant_dir, sync).map_err(io_err("create", &tenant_dir))?;
        if target.exists() {
            return Err(TimelineError::AlreadyExists {
                ttid,
                dir: target.clone(),
            });
        }
        crashsafe::durable_rename(&staging, &target, sync).map_err(io_err("install", &target))
    })();
    if let Err(e) = result {
        // Best effort: whatever is left in tmp/ is removed at the next start anyway.
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    info!(%ttid, dir = %target.display(), "created timeline");
    Timeline::load(conf, ttid)
}

/// Deletes timeline `ttid`'s directory (the caller has stopped using it). Returns whether it
/// existed.
pub fn delete_timeline(
    conf: &SafeKeeperConf,
    ttid: &TenantTimelineId,
) -> Result<bool, TimelineError> {
    let sync = conf.sync();
    let dir = timeline_dir(&conf.datadir, ttid);
    if !dir.exists() {
        return Ok(false);
    }
    let tmp = tmp_dir(&conf.datadir);
    crashsafe::create_dir_all(&tmp, sync).map_err(io_err("create", &tmp))?;
    let doomed = tmp.join(staging_name(ttid, "delete"));
    crashsafe::durable_rename(&dir, &doomed, sync).map_err(io_err("move away", &dir))?;
    fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed))?;
    metrics::remove_timeline_metrics(ttid);
    info!(%ttid, "deleted timeline");
    Ok(true)
}

/// The result of loading every timeline at start.
#[derive(Debug, Default)]
pub struct LoadedTimelines {
    /// The timelines that loaded.
    pub timelines: BTreeMap<TenantTimelineId, Timeline>,
    /// The ones that did not, with why. They are not served; the others are.
    pub broken: BTreeMap<TenantTimelineId, TimelineError>,
}

/// Empties `tmp/`, then loads every `<tenant>/<timeline>` directory of the data directory.
/// Fails only if the data directory itself cannot be read.
pub fn load_all_timelines(conf: &SafeKeeperConf) -> Result<LoadedTimelines, TimelineError> {
    let datadir = &conf.datadir;
    let tmp = tmp_dir(datadir);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("clean up", &tmp))?;
        crashsafe::fsync_dir(datadir, conf.sync()).map_err(io_err("fsync", datadir))?;
    }
    let mut loaded = LoadedTimelines::default();
    for tenant_id in subdirs::<TenantId>(datadir)? {
        let tenant_dir = datadir.join(tenant_id.to_string());
        for timeline_id in subdirs::<TimelineId>(&tenant_dir)? {
            let ttid = TenantTimelineId::new(tenant_id, timeline_id);
            match Timeline::load(conf, ttid) {
                Ok(t) => {
                    loaded.timelines.insert(ttid, t);
                }
                Err(e) => {
                    error!(%ttid, "timeline failed to load and will not be served: {e}");
                    loaded.broken.insert(ttid, e);
                }
            }
        }
    }
    info!(
        loaded = loaded.timelines.len(),
        broken = loaded.broken.len(),
        "loaded timelines"
    );
    Ok(loaded)
}

/// The subdirectories of `dir` whose names parse as `T` (others are ignored).
fn subdirs<T: std::str::FromStr + Ord>(dir: &Path) -> Result<Vec<T>, TimelineError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(io_err("stat", &entry.path()))?
            .is_dir();
        if let (true, Some(id)) = (
            is_dir,
            entry.file_name().to_str().and_then(|n| n.parse::<T>().ok()),
        ) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use safekeeper_api::ServerInfo;
    use safekeeper_api::membership::Configuration;
    use utils::NodeId;

    use super::*;
    use crate::control_file::CONTROL_FILE_NAME;

    fn conf(dir: &Path) -> SafeKeeperConf {
        SafeKeeperConf {
            datadir: dir.to_path_buf(),
            my_id: NodeId(1),
            no_sync: false,
            max_peer_lag: crate::DEFAULT_MAX_PEER_LAG,
        }
    }

    fn state(ttid: TenantTimelineId) -> TimelinePersistentState {
        TimelinePersistentState::new(
            ttid,
            Configuration::empty(),
            ServerInfo {
                pg_version: 150007,
                system_id: 1,
                wal_seg_size: 16 * 1024 * 1024,
            },
            SystemTime::now(),
        )
    }

    #[test]
    fn create_load_delete() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let ttid = TenantTimelineId::generate();
        let t = create_timeline(&conf, state(ttid)).unwrap();
        assert_eq!(t.dir, timeline_dir(dir.path(), &ttid));
        assert!(t.dir.join(CONTROL_FILE_NAME).is_file());
        assert_eq!(t.acceptor.persisted_state(), &state_like(&t));
        let e = create_timeline(&conf, state(ttid)).unwrap_err();
        assert!(matches!(e, TimelineError::AlreadyExists { .. }), "{e}");
        assert!(e.to_string().contains("already exists"), "{e}");
        // Nothing left in staging.
        assert_eq!(fs::read_dir(tmp_dir(dir.path())).unwrap().count(), 0);
        drop(t);

        let loaded = load_all_timelines(&conf).unwrap();
        assert_eq!(loaded.timelines.len(), 1);
        assert!(loaded.broken.is_empty());
        assert!(delete_timeline(&conf, &ttid).unwrap());
        assert!(!delete_timeline(&conf, &ttid).unwrap());
        assert!(!timeline_dir(dir.path(), &ttid).exists());
        assert!(load_all_timelines(&conf).unwrap().timelines.is_empty());
        // It can be created again.
        create_timeline(&conf, state(ttid)).unwrap();
    }

    fn state_like(t: &Timeline) -> TimelinePersistentState {
        let mut s = state(t.ttid);
        s.creation_ts = t.acceptor.persisted_state().creation_ts;
        s
    }

    #[test]
    fn invalid_creation_state_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let ttid = TenantTimelineId::generate();
        let mut s = state(ttid);
        s.server.wal_seg_size = 1000;
        let e = create_timeline(&conf, s).unwrap_err();
        assert!(e.to_string().contains("wal_seg_size 1000"), "{e}");
        let mut s = state(ttid);
        s.server.pg_version = 140010;
        let e = create_timeline(&conf, s).unwrap_err();
        assert!(e.to_string().contains("PostgreSQL version 140010"), "{e}");
        assert!(!timeline_dir(dir.path(), &ttid).exists());
    }

    #[test]
    fn leftovers_are_cleaned_and_strangers_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let ttid = TenantTimelineId::generate();
        create_timeline(&conf, state(ttid)).unwrap();
        // A crash mid-creation and mid-deletion leave directories in tmp/.
        let stale = tmp_dir(dir.path()).join("x_y_1_0_create");
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join(CONTROL_FILE_NAME), b"half").unwrap();
        // Files and directories that are not timelines.
        fs::write(dir.path().join("safekeeper.id"), b"1").unwrap();
        fs::create_dir(dir.path().join("not-a-tenant")).unwrap();
        fs::create_dir(dir.path().join(ttid.tenant_id.to_string()).join("junk")).unwrap();
        let loaded = load_all_timelines(&conf).unwrap();
        assert_eq!(
            loaded.timelines.keys().copied().collect::<Vec<_>>(),
            vec![ttid]
        );
        assert!(loaded.broken.is_empty());
        assert!(!stale.exists());
    }

    #[test]
    fn misplaced_control_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let a = TenantTimelineId::generate();
        let b = TenantTimelineId::generate();
        create_timeline(&conf, state(a)).unwrap();
        let b_dir = timeline_dir(dir.path(), &b);
        fs::create_dir_all(&b_dir).unwrap();
        fs::copy(
            timeline_dir(dir.path(), &a).join(CONTROL_FILE_NAME),
            b_dir.join(CONTROL_FILE_NAME),
        )
        .unwrap();
        let loaded = load_all_timelines(&conf).unwrap();
        assert!(loaded.timelines.contains_key(&a));
        let e = &loaded.broken[&b];
        assert!(matches!(e, TimelineError::Misplaced { .. }), "{e}");
    }
}
