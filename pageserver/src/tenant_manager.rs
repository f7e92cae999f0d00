//! The set of tenants on this pageserver: loaded at start-up from `<workdir>/tenants`,
//! created and deleted through the HTTP API.
//!
//! Invariants:
//! - one in-memory `Tenant` per tenant directory; creation and deletion of a tenant are
//!   serialized, and a tenant directory is created and removed under a temporary name,
//!   so a crash leaves it whole or absent (leftovers are removed at start-up);
//! - a broken tenant stays listed (with its reason) so an operator can see it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pageserver_api::Generation;
use tokio_util::sync::CancellationToken;

use parking_lot::RwLock;
use tracing::{info, warn};
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use crate::config::TenantConfigOverrides;
use crate::tenant::{Location, Tenant, TenantError, TenantResources, attach, io, manifest};

/// Why a tenant-level operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No such tenant.
    #[error("tenant {0} not found")]
    NotFound(TenantId),
    /// The tenant exists already.
    #[error("tenant {0} already exists")]
    Exists(TenantId),
    /// A tenant-level failure.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// An attach in a generation older than the one held.
    #[error("tenant {tenant} is attached in generation {current}; {requested} is older")]
    StaleGeneration {
        /// The tenant.
        tenant: TenantId,
        /// The generation held.
        current: Generation,
        /// The one asked for.
        requested: Generation,
    },
}

/// How long a detach or re-attach waits for a timeline's upload queue to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// All tenants.
pub struct TenantManager {
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    res: TenantResources,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TenantManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantManager").finish()
    }
}

impl TenantManager {
    fn tenants_dir(res: &TenantResources) -> PathBuf {
        res.workdir.join("tenants")
    }

    /// Loads every tenant directory and starts the healthy timelines.
    ///
    /// `attached` is the control plane's re-attach answer, when there is a control plane:
    /// a listed tenant is loaded in its new generation (written to `location.json` first);
    /// a local tenant not listed is not this node's any more, and its directory is removed
    /// (object storage holds everything; the owner uploads there). Listed tenants with no
    /// local directory are returned, to be attached from object storage.
    pub fn load(
        res: TenantResources,
        attached: Option<&HashMap<TenantId, Generation>>,
    ) -> Result<(TenantManager, Vec<(TenantId, Generation)>), TenantError> {
        let dir = Self::tenants_dir(&res);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut tenants = HashMap::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let path = e.path();
            if crashsafe::is_temp_file(&path) {
                info!(
                    "{}: an unfinished tenant creation or deletion; removed",
                    path.display()
                );
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
                continue;
            }
            let Ok(id) = e.file_name().to_string_lossy().parse::<TenantId>() else {
                warn!("{}: not a tenant directory; left alone", path.display());
                continue;
            };
            if let Some(attached) = attached {
                let sync = Sync::from_no_sync(res.conf.no_sync);
                match attached.get(&id) {
                    Some(&generation) => {
                        info!(tenant_id = %id, %generation, "re-attached by the control plane");
                        Location::attached(generation).persist(&path, sync)?;
                    }
                    None => {
                        info!(tenant_id = %id,
                            "not attached here according to the control plane; local state removed");
                        let tmp = crashsafe::temp_path_for(&path);
                        crashsafe::durable_rename(&path, &tmp, sync).map_err(io(&path))?;
                        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
                        continue;
                    }
                }
            }
            // An AttachedStale tenant stays so across a restart (without a control plane
            // nothing else would tell it).
            if let (Ok(loc), Some(d)) = (Location::load(&path), &res.deletions)
                && loc.stale
            {
                d.hold(id, true);
            }
            let t = Tenant::load(id, path, res.clone());
            tenants.insert(id, t);
        }
        info!("loaded {} tenants", tenants.len());
        let mut missing: Vec<(TenantId, Generation)> = attached
            .into_iter()
            .flatten()
            .filter(|(id, _)| !tenants.contains_key(id))
            .map(|(&id, &g)| (id, g))
            .collect();
        missing.sort();
        Ok((
            TenantManager {
                tenants: RwLock::new(tenants),
                res,
                lock: tokio::sync::Mutex::new(()),
            },
            missing,
        ))
    }

    /// The deletion queue, with remote storage.
    pub fn deletions(&self) -> Option<&crate::deletion_queue::DeletionQueue> {
        self.res.deletions.as_ref()
    }

    /// Starts every loaded tenant's timelines (inside the runtime).
    pub fn activate_all(&self) {
        for t in self.tenants.read().values() {
            t.activate();
        }
    }

    /// A tenant by id.
    pub fn get(&self, id: TenantId) -> Result<Arc<Tenant>, ManagerError> {
        self.tenants
            .read()
            .get(&id)
            .cloned()
            .ok_or(ManagerError::NotFound(id))
    }

    /// Every tenant, by id.
    pub fn list(&self) -> Vec<Arc<Tenant>> {
        let mut v: Vec<_> = self.tenants.read().values().cloned().collect();
        v.sort_by_key(|t| t.tenant_id);
        v
    }

    /// Creates a tenant with config overrides.
    pub async fn create(
        &self,
        id: TenantId,
        overrides: crate::config::TenantConfigOverrides,
    ) -> Result<Arc<Tenant>, ManagerError> {
        let _g = self.lock.lock().await;
        if self.tenants.read().contains_key(&id) {
            return Err(ManagerError::Exists(id));
        }
        // With a control plane, a new tenant starts in generation 1 only if the control
        // plane placed it so: otherwise its deletions and remote_consistent_lsn would never
        // validate, and the next re-attach would not list it.
        if let Some(d) = &self.res.deletions {
            let first = Generation(1);
            match d.validate_now(id, first).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(TenantError::Conflict(format!(
                        "tenant {id}: the control plane has not placed it on this node in generation {first}; attach it there first (storage_controller: POST /control/v1/attach-hook)"
                    ))
                    .into());
                }
                Err(e) => {
                    return Err(TenantError::Conflict(format!(
                        "tenant {id}: asking the control plane for its generation: {e}; try again"
                    ))
                    .into());
                }
            }
        }
        let dir = Self::tenants_dir(&self.res).join(id.to_string());
        let t = Tenant::create(id, dir, overrides, self.res.clone())?;
        self.tenants.write().insert(id, t.clone());
        t.schedule_manifest_upload();
        info!(tenant_id = %id, "tenant created");
        Ok(t)
    }

    /// Deletes a tenant: every timeline's objects in remote storage (each marked deleted
    /// first), then the tenant stops and its directory goes.
    pub async fn delete(&self, id: TenantId) -> Result<(), ManagerError> {
        let _g = self.lock.lock().await;
        let t = self.get(id)?;
        let failed = |tl: TimelineId, e: String| {
            TenantError::Conflict(format!("deleting timeline {tl} of tenant {id}: {e}"))
        };
        for tl in t.timelines() {
            tl.mark_deleted_remote()
                .await
                .map_err(|e| failed(tl.timeline_id, e))?;
        }
        t.shutdown();
        for tl in t.timelines() {
            tl.remove_remote_objects()
                .await
                .map_err(|e| failed(tl.timeline_id, e))?;
        }
        if let Some(storage) = &self.res.remote {
            let _no_upload = t.manifest_lock.lock().await;
            manifest::delete_manifests(storage, id, &CancellationToken::new())
                .await
                .map_err(|e| TenantError::Conflict(format!("deleting tenant {id}: {e}")))?;
        }
        self.remove_local(&t)
    }

    /// Stops a tenant and removes its directory (renamed first, so a crash leaves it whole
    /// or a temporary name removed at start-up).
    fn remove_local(&self, t: &Arc<Tenant>) -> Result<(), ManagerError> {
        let id = t.tenant_id;
        t.shutdown();
        let sync = Sync::from_no_sync(self.res.conf.no_sync);
        let tmp = crashsafe::temp_path_for(&t.dir);
        crashsafe::durable_rename(&t.dir, &tmp, sync).map_err(|e| TenantError::Io {
            path: t.dir.clone(),
            source: e,
        })?;
        std::fs::remove_dir_all(&tmp).map_err(|e| TenantError::Io {
            path: tmp.clone(),
            source: e,
        })?;
        self.tenants.write().remove(&id);
        crate::metrics::remove_synthetic_size(id);
        info!(tenant_id = %id, "the tenant's local state is removed");
        Ok(())
    }

    /// `location_config` AttachedStale: the tenant, held here in `generation`, keeps serving
    /// and uploading, but its deletions and `remote_consistent_lsn` wait until it is
    /// AttachedSingle again, or are dropped when it is detached. Remembered in
    /// `location.json`.
    pub async fn set_stale(
        &self,
        id: TenantId,
        generation: Generation,
    ) -> Result<Arc<Tenant>, ManagerError> {
        let _g = self.lock.lock().await;
        let t = self.get(id)?;
        let current = t.generation();
        if generation != current {
            return Err(TenantError::Conflict(format!(
                "tenant {id} is attached in generation {current}, not {generation}: AttachedStale keeps the generation held"
            ))
            .into());
        }
        if self.res.deletions.is_none() {
            return Err(TenantError::Conflict(
                "AttachedStale needs remote_storage: there is nothing to hold back".into(),
            )
            .into());
        }
        self.set_stale_locked(&t, true)?;
        Ok(t)
    }

    /// Records and applies the stale flag (the manager lock held).
    fn set_stale_locked(&self, t: &Arc<Tenant>, stale: bool) -> Result<(), ManagerError> {
        let Some(d) = &self.res.deletions else {
            return Ok(());
        };
        if d.is_held(t.tenant_id) == stale {
            return Ok(());
        }
        let sync = Sync::from_no_sync(self.res.conf.no_sync);
        Location {
            generation: t.generation(),
            stale,
        }
        .persist(&t.dir, sync)?;
        d.hold(t.tenant_id, stale);
        info!(tenant_id = %t.tenant_id, stale, "attachment mode changed");
        Ok(())
    }

    /// Attaches `id` in `generation` (`location_config` AttachedSingle): a tenant held
    /// in this generation gets `overrides` as its config; in a newer one it is stopped
    /// (its upload queues drained first) and loaded again as a new object; an older one is
    /// refused. A tenant not held is rebuilt from object storage ([`attach`]). Returns it
    /// and whether it was attached from the bucket.
    pub async fn attach(
        &self,
        id: TenantId,
        generation: Generation,
        overrides: Option<TenantConfigOverrides>,
    ) -> Result<(Arc<Tenant>, bool), ManagerError> {
        let _g = self.lock.lock().await;
        let sync = Sync::from_no_sync(self.res.conf.no_sync);
        let existing = self.tenants.read().get(&id).cloned();
        if let Some(t) = existing {
            let current = t.generation();
            if generation < current {
                return Err(ManagerError::StaleGeneration {
                    tenant: id,
                    current,
                    requested: generation,
                });
            }
            if generation == current {
                if let Some(o) = overrides {
                    t.set_overrides(o)?;
                    t.schedule_manifest_upload();
                }
                self.set_stale_locked(&t, false)?;
                return Ok((t, false));
            }
            let overrides = overrides.unwrap_or_else(|| t.overrides());
            drain(&t).await;
            t.shutdown();
            Location::attached(generation).persist(&t.dir, sync)?;
            if let Some(d) = &self.res.deletions {
                d.hold(id, false);
            }
            let dir = t.dir.clone();
            let res = self.res.clone();
            let nt = tokio::task::spawn_blocking(move || Tenant::load(id, dir, res))
                .await
                .map_err(|e| TenantError::Create(format!("loading tenant {id}: {e}")))?;
            nt.set_overrides(overrides)?;
            nt.activate();
            self.tenants.write().insert(id, nt.clone());
            nt.schedule_manifest_upload();
            info!(tenant_id = %id, %generation, "tenant re-attached in a newer generation");
            return Ok((nt, false));
        }
        let Some(storage) = self.res.remote.clone() else {
            return Err(TenantError::Invalid(format!(
                "tenant {id} is not on this pageserver, and there is no remote_storage to attach it from"
            ))
            .into());
        };
        let cancel = CancellationToken::new();
        // The request's config, else the one the tenant's manifest records.
        let overrides = match overrides {
            Some(o) => o,
            None => manifest::download_manifest(&storage, id, generation, &cancel)
                .await
                .map_err(|e| TenantError::Create(format!("attach: {e}")))?
                .map(|m| m.tenant_conf)
                .unwrap_or_default(),
        };
        overrides
            .apply(&self.res.conf.tenant_config)
            .map_err(TenantError::Invalid)?;
        let dir = Self::tenants_dir(&self.res).join(id.to_string());
        let tmp = crashsafe::temp_path_for(&dir);
        let built =
            attach::download_tenant(&storage, id, generation, &overrides, &tmp, sync, &cancel)
                .await;
        let timelines = match built {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        };
        // Test hook: a crash with every download done, before the tenant is in place.
        let _ = utils::failpoint::eval_async("attach-before-rename").await;
        crashsafe::durable_rename(&tmp, &dir, sync).map_err(io(&dir))?;
        let res = self.res.clone();
        let d = dir.clone();
        let t = tokio::task::spawn_blocking(move || Tenant::load(id, d, res))
            .await
            .map_err(|e| TenantError::Create(format!("loading tenant {id}: {e}")))?;
        t.activate();
        self.tenants.write().insert(id, t.clone());
        t.schedule_manifest_upload();
        info!(tenant_id = %id, %generation, "tenant attached from remote storage with {} timelines", timelines.len());
        Ok((t, true))
    }

    /// Detaches `id` (`location_config` Detached): its upload queues drain (bounded by
    /// [`DRAIN_TIMEOUT`]), it stops, and its local directory goes; the bucket keeps
    /// everything. Detaching a tenant not held is a no-op.
    pub async fn detach(&self, id: TenantId) -> Result<(), ManagerError> {
        let t = self.tenants.read().get(&id).cloned();
        let Some(t) = t else {
            return Ok(());
        };
        drain(&t).await;
        // Test hook: a crash with the queues drained, before the local state goes.
        let _ = utils::failpoint::eval_async("detach-before-remove").await;
        let _g = self.lock.lock().await;
        self.remove_local(&t)?;
        // What a stale attachment held back must not run: the tenant is another node's.
        if let Some(d) = &self.res.deletions
            && d.is_held(id)
        {
            d.forget_tenant(id);
        }
        info!(tenant_id = %id, "tenant detached");
        Ok(())
    }

    /// Lets every timeline's upload queue finish what it holds, all within `timeout` (a
    /// clean stop then leaves nothing for the next start to upload); then the caller stops
    /// the tenants.
    pub async fn drain_uploads(&self, timeout: Duration) {
        let clients: Vec<_> = self
            .list()
            .iter()
            .flat_map(|t| t.timelines())
            .filter_map(|tl| tl.remote_client().cloned())
            .collect();
        if clients.is_empty() {
            return;
        }
        let all = futures::future::join_all(clients.iter().map(|c| c.wait_completion()));
        if tokio::time::timeout(timeout, all).await.is_err() {
            warn!(
                "the upload queues did not drain within {timeout:?}; the next start uploads what is left"
            );
        }
    }

    /// Stops every tenant.
    pub fn shutdown(&self) {
        for t in self.tenants.read().values() {
            t.shutdown();
        }
    }
}

/// Waits (bounded) for every timeline's upload queue to finish what it holds.
async fn drain(t: &Tenant) {
    for tl in t.timelines() {
        if let Some(c) = tl.remote_client()
            && tokio::time::timeout(DRAIN_TIMEOUT, c.wait_completion())
                .await
                .is_err()
        {
            warn!(
                tenant_id = %t.tenant_id,
                timeline_id = %tl.timeline_id,
                "the upload queue did not drain in {DRAIN_TIMEOUT:?}; the next attachment ingests what is missing from the safekeepers again"
            );
        }
    }
}
