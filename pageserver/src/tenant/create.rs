//! Creating timelines: bootstrap with `initdb`, import of a stopped data directory, and
//! copy-free branches.
//!
//! Branch points: `ancestor_start_lsn` defaults to the ancestor's last record LSN. It is
//! refused when below the ancestor's start (its initdb LSN, or its own branch point) or
//! GC cutoff, above its last record LSN, or not 8-byte aligned. Alignment is what the
//! pageserver can check: records start and end on 8-byte boundaries; that an aligned LSN
//! is a record end needs the WAL, which the safekeepers hold. Use an LSN PostgreSQL
//! reported (`pg_current_wal_insert_lsn()`, a commit's LSN) or the timeline's
//! `last_record_lsn`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tracing::info;
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TimelineId};

use super::{Tenant, TenantError, io};
use crate::import::{ImportError, import_datadir};
use crate::timeline::load::{install_timeline_dir, load_timeline, temp_timeline_dir};
use crate::timeline::metadata::TimelineMetadata;
use crate::timeline::{Timeline, TimelineState};
use crate::walredo::scratch::RunAs;

/// How to create a timeline.
#[derive(Debug, Clone)]
pub enum CreateTimeline {
    /// Run `initdb` and import the result.
    Bootstrap,
    /// Import a cleanly stopped PostgreSQL 15 data directory.
    Import(PathBuf),
    /// Branch from an ancestor at an LSN (default: its last record LSN).
    Branch {
        /// The parent.
        ancestor: TimelineId,
        /// The branch point.
        lsn: Option<Lsn>,
    },
}

impl Tenant {
    /// Creates timeline `id` and starts it.
    pub async fn create_timeline(
        self: &Arc<Self>,
        id: TimelineId,
        how: CreateTimeline,
    ) -> Result<Arc<Timeline>, TenantError> {
        if self.state() != super::TenantState::Active {
            return Err(TenantError::NotActive(self.state().name()));
        }
        let _guard = self.create_lock.lock().await;
        if self.timeline(id).is_ok() {
            return Err(TenantError::TimelineExists(id));
        }
        let final_dir = self.dir.join("timelines").join(id.to_string());
        if final_dir.exists() {
            return Err(TenantError::TimelineExists(id));
        }
        let tmp = temp_timeline_dir(&final_dir);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let result = self.build(id, &tmp, &final_dir, how).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        let (meta, ancestor) = result?;
        let tl = load_timeline(
            self.tenant_id,
            id,
            final_dir,
            ancestor,
            self.timeline_resources(),
        )?;
        debug_assert_eq!(*tl.metadata.lock(), meta);
        self.insert_timeline(tl.clone());
        self.start_timeline(&tl);
        self.schedule_manifest_upload();
        info!(
            tenant_id = %self.tenant_id,
            timeline_id = %id,
            "timeline created at {}",
            tl.last_record_lsn()
        );
        Ok(tl)
    }

    async fn build(
        self: &Arc<Self>,
        id: TimelineId,
        tmp: &Path,
        final_dir: &Path,
        how: CreateTimeline,
    ) -> Result<(TimelineMetadata, Option<Arc<Timeline>>), TenantError> {
        let sync = Sync::from_no_sync(self.res.conf.no_sync);
        match how {
            CreateTimeline::Branch { ancestor, lsn } => {
                let anc = self
                    .timeline(ancestor)
                    .map_err(|_| TenantError::TimelineNotFound(ancestor))?;
                if anc.state() != TimelineState::Active {
                    return Err(TenantError::Conflict(format!(
                        "ancestor timeline {ancestor} is {}",
                        anc.state().name()
                    )));
                }
                let last = anc.last_record();
                let lsn = lsn.unwrap_or(last.last);
                check_branch_point(&anc, lsn)?;
                let meta = TimelineMetadata {
                    disk_consistent_lsn: lsn,
                    prev_record_lsn: if lsn == last.last { last.prev } else { None },
                    ancestor_timeline: Some(ancestor),
                    ancestor_lsn: lsn,
                    latest_gc_cutoff_lsn: Lsn(0),
                    initdb_lsn: lsn,
                    pg_version: anc.pg_version,
                };
                install_timeline_dir(tmp, final_dir, &meta, sync)?;
                Ok((meta, Some(anc)))
            }
            CreateTimeline::Bootstrap => {
                let work = self.res.workdir.join("tmp").join(format!("initdb-{id}"));
                let _ = std::fs::remove_dir_all(&work);
                let data = run_initdb(&self.res.conf, &work).await?;
                let meta = self.import(id, &data, tmp, final_dir, sync).await;
                let _ = std::fs::remove_dir_all(&work);
                Ok((meta?, None))
            }
            CreateTimeline::Import(path) => {
                if !path.is_absolute() {
                    return Err(TenantError::Invalid(format!(
                        "import_pgdata: {} is not an absolute path",
                        path.display()
                    )));
                }
                if !path.is_dir() {
                    return Err(TenantError::NoSuchDirectory(format!(
                        "import_pgdata: no directory at {}",
                        path.display()
                    )));
                }
                Ok((self.import(id, &path, tmp, final_dir, sync).await?, None))
            }
        }
    }

    async fn import(
        &self,
        id: TimelineId,
        data: &Path,
        tmp: &Path,
        final_dir: &Path,
        sync: Sync,
    ) -> Result<TimelineMetadata, TenantError> {
        let (data, tmp_owned, tenant_id) = (data.to_path_buf(), tmp.to_path_buf(), self.tenant_id);
        let r = tokio::task::spawn_blocking(move || {
            import_datadir(&data, &tmp_owned, tenant_id, id, sync)
        })
        .await
        .map_err(|e| TenantError::Create(format!("import task failed: {e}")))?
        .map_err(|e| match &e {
            // What was given is not an importable cluster: the caller's mistake.
            ImportError::Invalid(_) => TenantError::Unimportable(format!("import: {e}")),
            ImportError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                TenantError::NoSuchDirectory(format!(
                    "import: not a PostgreSQL 15 data directory: {e}"
                ))
            }
            _ => TenantError::Create(format!("import: {e}")),
        })?;
        info!(
            tenant_id = %self.tenant_id,
            timeline_id = %id,
            "imported {} relation forks, {} pages at {}",
            r.relations,
            r.pages,
            r.lsn
        );
        let meta = TimelineMetadata {
            disk_consistent_lsn: r.lsn,
            prev_record_lsn: Some(r.prev_record_lsn),
            ancestor_timeline: None,
            ancestor_lsn: Lsn(0),
            latest_gc_cutoff_lsn: Lsn(0),
            initdb_lsn: r.lsn,
            pg_version: 15,
        };
        install_timeline_dir(tmp, final_dir, &meta, sync)?;
        Ok(meta)
    }
}

fn check_branch_point(anc: &Timeline, lsn: Lsn) -> Result<(), TenantError> {
    let start = if anc.ancestor.is_some() {
        anc.ancestor_lsn
    } else {
        anc.initdb_lsn
    };
    let last = anc.last_record_lsn();
    if lsn < start {
        return Err(TenantError::Invalid(format!(
            "invalid branch point {lsn}: below the start of ancestor timeline {} ({start})",
            anc.timeline_id
        )));
    }
    let cutoff = anc.gc_cutoff_lsn();
    if lsn < cutoff {
        return Err(TenantError::Invalid(format!(
            "invalid branch point {lsn}: below the GC cutoff of ancestor timeline {} ({cutoff})",
            anc.timeline_id
        )));
    }
    if lsn > last {
        return Err(TenantError::Invalid(format!(
            "invalid branch point {lsn}: above the last record LSN of ancestor timeline {} ({last})",
            anc.timeline_id
        )));
    }
    if !lsn.is_aligned() {
        return Err(TenantError::Invalid(format!(
            "invalid branch point {lsn}: not on a record boundary (WAL records are 8-byte aligned)"
        )));
    }
    Ok(())
}

/// Runs `initdb` (as the unprivileged user when root) into `work/data`.
async fn run_initdb(
    conf: &crate::config::PageserverConfig,
    work: &Path,
) -> Result<PathBuf, TenantError> {
    let run_as = RunAs::for_current_process(&conf.pg_user)
        .map_err(|e| TenantError::Create(e.to_string()))?;
    std::fs::create_dir_all(work).map_err(io(work))?;
    if let Some(r) = &run_as {
        std::os::unix::fs::chown(work, Some(r.uid), Some(r.gid)).map_err(io(work))?;
    }
    let data = work.join("data");
    let initdb = conf.pg_bin_dir().join("initdb");
    let mut cmd = Command::new(&initdb);
    cmd.arg("-D")
        .arg(&data)
        .args(["--no-instructions", "-A", "trust", "-E", "UTF8", "-U"])
        .arg(&conf.superuser)
        .env_clear()
        .env("LC_ALL", "C");
    if conf.no_sync {
        cmd.arg("--no-sync");
    }
    if let Some(r) = &run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(r.uid).gid(r.gid);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| TenantError::Create(format!("initdb task failed: {e}")))?
        .map_err(|e| TenantError::Create(format!("running {}: {e}", initdb.display())))?;
    if !out.status.success() {
        return Err(TenantError::Create(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let _ = crashsafe::fsync_dir(work, Sync::No);
    Ok(data)
}
