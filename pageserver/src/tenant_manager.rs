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

use parking_lot::RwLock;
use tracing::{info, warn};
use utils::TenantId;
use utils::crashsafe::{self, Sync};

use crate::tenant::{Tenant, TenantError, TenantResources, io};

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
}

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
    pub fn load(res: TenantResources) -> Result<TenantManager, TenantError> {
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
            let t = Tenant::load(id, path, res.clone());
            tenants.insert(id, t);
        }
        info!("loaded {} tenants", tenants.len());
        Ok(TenantManager {
            tenants: RwLock::new(tenants),
            res,
            lock: tokio::sync::Mutex::new(()),
        })
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
        let dir = Self::tenants_dir(&self.res).join(id.to_string());
        let t = Tenant::create(id, dir, overrides, self.res.clone())?;
        self.tenants.write().insert(id, t.clone());
        info!(tenant_id = %id, "tenant created");
        Ok(t)
    }

    /// Stops a tenant and removes its directory.
    pub async fn delete(&self, id: TenantId) -> Result<(), ManagerError> {
        let _g = self.lock.lock().await;
        let t = self.get(id)?;
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
        info!(tenant_id = %id, "tenant deleted");
        Ok(())
    }

    /// Stops every tenant.
    pub fn shutdown(&self) {
        for t in self.tenants.read().values() {
            t.shutdown();
        }
    }
}
