//! One tenant: its configuration, its timelines, their tasks.
//!
//! On disk: `tenants/<tenant>/config.toml` (the tenant's config overrides, written
//! crash-safely) and `tenants/<tenant>/timelines/<timeline>/`.
//!
//! Invariants:
//! - a timeline's ancestor is loaded (and stays) before it; a timeline with children is
//!   never deleted;
//! - a failure to load one timeline makes that timeline Broken, not the tenant; a tenant
//!   is Broken only when its own config cannot be read;
//! - Stopping is final: a stopped tenant object never serves again.

pub mod attach;
pub mod create;
pub mod manifest;
pub mod size;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pageserver_api::Generation;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tracing::{error, info};
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use crate::config::{ConfigError, TenantConfig, TenantConfigOverrides};
use crate::page_cache::PageCache;
use crate::timeline::load::{LoadError, load_timeline};
use crate::timeline::metadata::TimelineMetadata;
use crate::timeline::{Timeline, TimelineResources, TimelineState};
use crate::walredo::WalRedoManager;

/// The tenant's config file (overrides of `[tenant_config]`).
pub const TENANT_CONFIG_FILE: &str = "config.toml";
/// The tenant's attachment (its generation), written crash-safely.
pub const LOCATION_FILE: &str = "location.json";

/// `location.json`: how this pageserver holds the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The attachment generation its remote objects carry.
    pub generation: Generation,
    /// AttachedStale: serving and uploading, but its deletions and `remote_consistent_lsn`
    /// wait (another node is taking the tenant over).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

impl Location {
    /// Attached, the only attachment, in `generation`.
    pub fn attached(generation: Generation) -> Location {
        Location {
            generation,
            stale: false,
        }
    }

    /// Reads `dir/location.json`; a tenant without one predates generations: 1.
    pub fn load(dir: &Path) -> Result<Location, TenantError> {
        let path = dir.join(LOCATION_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                TenantError::Config(ConfigError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                })
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Location::attached(Generation(1)))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes `dir/location.json` crash-safely.
    pub fn persist(&self, dir: &Path, sync: Sync) -> Result<(), TenantError> {
        let path = dir.join(LOCATION_FILE);
        let bytes = serde_json::to_vec(self).map_err(|e| TenantError::Create(e.to_string()))?;
        crashsafe::overwrite(&path, &bytes, sync).map_err(io(&path))
    }
}

/// A tenant's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", content = "reason")]
pub enum TenantState {
    /// Its timelines are being loaded.
    Loading,
    /// Serving.
    Active,
    /// Shutting down or being deleted (final).
    Stopping,
    /// Cannot serve; the reason names the cause.
    Broken(String),
}

impl TenantState {
    /// The name alone.
    pub fn name(&self) -> &'static str {
        match self {
            TenantState::Loading => "Loading",
            TenantState::Active => "Active",
            TenantState::Stopping => "Stopping",
            TenantState::Broken(_) => "Broken",
        }
    }
}

/// Why a tenant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// No such timeline.
    #[error("timeline {0} not found")]
    TimelineNotFound(TimelineId),
    /// The timeline exists already.
    #[error("timeline {0} already exists")]
    TimelineExists(TimelineId),
    /// The request cannot be carried out as asked (a bad branch point, children).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the state (children, a broken ancestor).
    #[error("{0}")]
    Conflict(String),
    /// The tenant is not Active.
    #[error("tenant is {0}")]
    NotActive(&'static str),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Loading or creating a timeline failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The config could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `import_pgdata` names no PostgreSQL data directory.
    #[error("{0}")]
    NoSuchDirectory(String),
    /// The data directory cannot be imported as it is (running, another version).
    #[error("{0}")]
    Unimportable(String),
    /// Creating a timeline failed (initdb, import).
    #[error("{0}")]
    Create(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TenantError + '_ {
    move |source| TenantError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What every tenant shares with the process.
#[derive(Clone)]
pub struct TenantResources {
    /// The redo pool.
    pub walredo: Arc<WalRedoManager>,
    /// The page cache.
    pub cache: Arc<PageCache>,
    /// The process config.
    pub conf: Arc<crate::config::PageserverConfig>,
    /// The workdir.
    pub workdir: PathBuf,
    /// The broker client, when configured.
    pub broker: Option<crate::walreceiver::Broker>,
    /// The JWT sent to safekeepers.
    pub safekeeper_token: Option<String>,
    /// This pageserver's node id.
    pub node_id: utils::NodeId,
    /// Object storage, when configured (`remote_storage` in pageserver.toml).
    pub remote: Option<remote_storage::GenericRemoteStorage>,
    /// The deletion queue (with remote storage).
    pub deletions: Option<crate::deletion_queue::DeletionQueue>,
}

impl std::fmt::Debug for TenantResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantResources")
            .field("workdir", &self.workdir)
            .finish()
    }
}

/// One tenant.
pub struct Tenant {
    /// Its id.
    pub tenant_id: TenantId,
    /// `tenants/<id>`.
    pub dir: PathBuf,
    state: Mutex<TenantState>,
    /// Overrides only (what `config.toml` holds).
    overrides: Mutex<TenantConfigOverrides>,
    /// The effective config, shared with the timelines.
    pub conf: Arc<RwLock<TenantConfig>>,
    timelines: Mutex<HashMap<TimelineId, Arc<Timeline>>>,
    generation: Mutex<Generation>,
    pub(crate) res: TenantResources,
    /// Serializes timeline creation and deletion.
    pub(crate) create_lock: tokio::sync::Mutex<()>,
    /// One manifest upload at a time ([`manifest`]).
    pub(crate) manifest_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

impl Tenant {
    fn new(tenant_id: TenantId, dir: PathBuf, res: TenantResources) -> Arc<Tenant> {
        Arc::new(Tenant {
            tenant_id,
            dir,
            state: Mutex::new(TenantState::Loading),
            overrides: Mutex::new(TenantConfigOverrides::default()),
            conf: Arc::new(RwLock::new(res.conf.tenant_config.clone())),
            timelines: Mutex::new(HashMap::new()),
            generation: Mutex::new(Generation(1)),
            res,
            create_lock: tokio::sync::Mutex::new(()),
            manifest_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Creates a tenant directory (crash-safely: built under a temporary name) with its
    /// config overrides, and the tenant object, Active.
    pub fn create(
        tenant_id: TenantId,
        dir: PathBuf,
        overrides: TenantConfigOverrides,
        res: TenantResources,
    ) -> Result<Arc<Tenant>, TenantError> {
        let effective = overrides
            .apply(&res.conf.tenant_config)
            .map_err(TenantError::Invalid)?;
        let sync = Sync::from_no_sync(res.conf.no_sync);
        let tmp = crashsafe::temp_path_for(&dir);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("timelines")).map_err(io(&tmp))?;
        let text = overrides.to_toml();
        crashsafe::overwrite(&tmp.join(TENANT_CONFIG_FILE), text.as_bytes(), sync)
            .map_err(io(&tmp))?;
        Location::attached(Generation(1)).persist(&tmp, sync)?;
        crashsafe::fsync_dir(&tmp.join("timelines"), sync).map_err(io(&tmp))?;
        crashsafe::durable_rename(&tmp, &dir, sync).map_err(io(&dir))?;
        let t = Tenant::new(tenant_id, dir, res);
        *t.overrides.lock() = overrides;
        *t.conf.write() = effective;
        t.set_state(TenantState::Active);
        Ok(t)
    }

    /// Loads a tenant directory. The tenant is Broken if its config cannot be read; a
    /// timeline that cannot be loaded is Broken on its own.
    pub fn load(tenant_id: TenantId, dir: PathBuf, res: TenantResources) -> Arc<Tenant> {
        let t = Tenant::new(tenant_id, dir, res);
        if let Err(e) = t.load_inner() {
            error!(%tenant_id, "tenant is broken: {e}");
            t.set_state(TenantState::Broken(e.to_string()));
        } else {
            t.set_state(TenantState::Active);
        }
        t
    }

    fn load_inner(self: &Arc<Self>) -> Result<(), TenantError> {
        let conf_path = self.dir.join(TENANT_CONFIG_FILE);
        let overrides = TenantConfigOverrides::load(&conf_path)?;
        let effective = overrides
            .apply(&self.res.conf.tenant_config)
            .map_err(|message| {
                TenantError::Config(ConfigError::Invalid {
                    path: conf_path.clone(),
                    message,
                })
            })?;
        *self.overrides.lock() = overrides;
        *self.conf.write() = effective;
        *self.generation.lock() = Location::load(&self.dir)?.generation;

        let tl_dir = self.dir.join("timelines");
        let mut found: Vec<(TimelineId, PathBuf, Result<TimelineMetadata, LoadError>)> = Vec::new();
        for e in std::fs::read_dir(&tl_dir).map_err(io(&tl_dir))? {
            let e = e.map_err(io(&tl_dir))?;
            let path = e.path();
            if crashsafe::is_temp_file(&path) {
                info!(
                    "{}: an unfinished timeline creation; removed",
                    path.display()
                );
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
                continue;
            }
            let Ok(id) = e.file_name().to_string_lossy().parse::<TimelineId>() else {
                continue;
            };
            let meta = TimelineMetadata::load(&path).map_err(LoadError::from);
            found.push((id, path, meta));
        }
        // Ancestors first: repeatedly load timelines whose ancestor is loaded.
        let mut pending = found;
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for (id, path, meta) in pending {
                let ancestor_id = meta.as_ref().ok().and_then(|m| m.ancestor_timeline);
                let ancestor = match ancestor_id {
                    None => None,
                    Some(a) => match self.timelines.lock().get(&a).cloned() {
                        Some(t) => Some(t),
                        None => {
                            rest.push((id, path, meta));
                            continue;
                        }
                    },
                };
                let tl = match meta {
                    Err(e) => Err(e),
                    Ok(_) => load_timeline(
                        self.tenant_id,
                        id,
                        path.clone(),
                        ancestor,
                        self.timeline_resources(),
                    ),
                };
                let tl = match tl {
                    Ok(tl) => {
                        if let Some(a) = &tl.ancestor
                            && let TimelineState::Broken(r) = a.state()
                        {
                            tl.set_state(TimelineState::Broken(format!(
                                "ancestor {} is broken: {r}",
                                a.timeline_id
                            )));
                        }
                        tl
                    }
                    Err(e) => self.broken_timeline(id, path, e.to_string()),
                };
                self.timelines.lock().insert(id, tl);
            }
            if rest.len() == before {
                for (id, path, _) in rest {
                    let tl = self.broken_timeline(
                        id,
                        path,
                        "its ancestor timeline does not exist".into(),
                    );
                    self.timelines.lock().insert(id, tl);
                }
                break;
            }
            pending = rest;
        }
        Ok(())
    }

    /// A placeholder for a timeline that could not be loaded: Broken with the reason.
    fn broken_timeline(&self, id: TimelineId, dir: PathBuf, reason: String) -> Arc<Timeline> {
        error!(tenant_id = %self.tenant_id, timeline_id = %id, "timeline is broken: {reason}");
        let meta = TimelineMetadata {
            disk_consistent_lsn: utils::Lsn(0),
            prev_record_lsn: None,
            ancestor_timeline: None,
            ancestor_lsn: utils::Lsn(0),
            latest_gc_cutoff_lsn: utils::Lsn(0),
            initdb_lsn: utils::Lsn(0),
            pg_version: 15,
        };
        let tl = Timeline::new(
            self.tenant_id,
            id,
            dir,
            meta,
            None,
            Default::default(),
            self.timeline_resources(),
        );
        tl.set_state(TimelineState::Broken(reason));
        tl
    }

    pub(crate) fn timeline_resources(&self) -> TimelineResources {
        TimelineResources {
            walredo: self.res.walredo.clone(),
            cache: self.res.cache.clone(),
            tenant_conf: self.conf.clone(),
            sync: Sync::from_no_sync(self.res.conf.no_sync),
            remote: self.res.remote.clone().zip(self.res.deletions.clone()).map(
                |(storage, deletions)| crate::remote_timeline_client::RemoteSetup {
                    storage,
                    generation: self.generation(),
                    deletions,
                },
            ),
        }
    }

    /// The attachment generation its remote objects carry (`location.json`; 1 for a
    /// tenant created before generations were recorded).
    pub fn generation(&self) -> Generation {
        *self.generation.lock()
    }

    /// The state.
    pub fn state(&self) -> TenantState {
        self.state.lock().clone()
    }

    fn set_state(&self, s: TenantState) {
        let mut cur = self.state.lock();
        if matches!(*cur, TenantState::Stopping) {
            return;
        }
        *cur = s;
    }

    /// Starts every healthy timeline's tasks.
    pub fn activate(self: &Arc<Self>) {
        if self.state() != TenantState::Active {
            return;
        }
        for tl in self.timelines.lock().values() {
            if tl.state() == TimelineState::Loading {
                self.start_timeline(tl);
            }
        }
    }

    /// Makes a loaded timeline Active and spawns its flush task and walreceiver.
    pub(crate) fn start_timeline(&self, tl: &Arc<Timeline>) {
        tl.set_state(TimelineState::Active);
        if tl.state() != TimelineState::Active {
            return;
        }
        // The upload queue starts before the flush loop (every flush goes through it) and
        // the walreceiver (a timeline whose queue cannot start ingests nothing).
        let flushing = tl.clone();
        let res = self.res.clone();
        tokio::spawn(async move {
            if let Err(reason) = flushing.start_remote().await {
                flushing.set_state(TimelineState::Broken(reason));
                return;
            }
            crate::walreceiver::spawn(flushing.clone(), res);
            flushing.flush_loop().await;
        });
    }

    /// A timeline by id.
    pub fn timeline(&self, id: TimelineId) -> Result<Arc<Timeline>, TenantError> {
        self.timelines
            .lock()
            .get(&id)
            .cloned()
            .ok_or(TenantError::TimelineNotFound(id))
    }

    /// Every timeline.
    pub fn timelines(&self) -> Vec<Arc<Timeline>> {
        let mut v: Vec<_> = self.timelines.lock().values().cloned().collect();
        v.sort_by_key(|t| t.timeline_id);
        v
    }

    pub(crate) fn insert_timeline(&self, tl: Arc<Timeline>) {
        self.timelines.lock().insert(tl.timeline_id, tl);
    }

    /// The config overrides.
    pub fn overrides(&self) -> TenantConfigOverrides {
        self.overrides.lock().clone()
    }

    /// Replaces the config overrides (persisted crash-safely first).
    pub fn set_overrides(
        &self,
        overrides: TenantConfigOverrides,
    ) -> Result<TenantConfig, TenantError> {
        let effective = overrides
            .apply(&self.res.conf.tenant_config)
            .map_err(TenantError::Invalid)?;
        let path = self.dir.join(TENANT_CONFIG_FILE);
        let text = overrides.to_toml();
        crashsafe::overwrite(
            &path,
            text.as_bytes(),
            Sync::from_no_sync(self.res.conf.no_sync),
        )
        .map_err(io(&path))?;
        *self.overrides.lock() = overrides;
        *self.conf.write() = effective.clone();
        Ok(effective)
    }

    /// Deletes a timeline without children: stops it, then removes its directory.
    pub async fn delete_timeline(self: &Arc<Self>, id: TimelineId) -> Result<(), TenantError> {
        let _guard = self.create_lock.lock().await;
        let tl = self.timeline(id)?;
        let children: Vec<TimelineId> = self
            .timelines
            .lock()
            .values()
            .filter(|t| t.ancestor.as_ref().is_some_and(|a| a.timeline_id == id))
            .map(|t| t.timeline_id)
            .collect();
        if !children.is_empty() {
            return Err(TenantError::Conflict(format!(
                "timeline {id} has child timelines {children:?}; delete them first"
            )));
        }
        // The deletion mark first (uploaded by the running timeline), then the timeline
        // stops, then its remote objects go, local files last: a crash between leaves a
        // timeline that starts Broken saying it was being deleted.
        let failed = |e: String| TenantError::Conflict(format!("deleting timeline {id}: {e}"));
        tl.mark_deleted_remote().await.map_err(failed)?;
        tl.shutdown();
        let _write = tl.write_lock.lock().await;
        tl.remove_remote_objects().await.map_err(failed)?;
        // Rename first: a crash mid-delete leaves a temporary directory, removed on load.
        let tmp = crashsafe::temp_path_for(&tl.dir);
        let sync = Sync::from_no_sync(self.res.conf.no_sync);
        crashsafe::durable_rename(&tl.dir, &tmp, sync).map_err(io(&tl.dir))?;
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        self.timelines.lock().remove(&id);
        self.schedule_manifest_upload();
        info!(tenant_id = %self.tenant_id, timeline_id = %id, "timeline deleted");
        Ok(())
    }

    /// Stops every timeline (final).
    pub fn shutdown(&self) {
        *self.state.lock() = TenantState::Stopping;
        for tl in self.timelines.lock().values() {
            tl.shutdown();
        }
    }
}
