//! The tenant manifest in object storage, `tenants/<t>/tenant-manifest-<gen>.json`: what an
//! attach needs beyond the timelines' indexes — the tenant's config overrides, and the list
//! of its timelines.
//!
//! It is rewritten (in the tenant's generation) whenever the config or the set of timelines
//! changes. Each upload takes the tenant's state at the time it runs, under one lock per
//! tenant, so uploads never go back even when changes come quickly. An attach reads the
//! manifest with the highest generation not above its own; one without a manifest (or
//! without remote storage) keeps working from the indexes alone, with the config the attach
//! request gives.

use std::sync::Arc;

use pageserver_api::Generation;
use remote_storage::{DownloadOpts, GenericRemoteStorage, ListingMode, RemotePath, UploadSource};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use utils::{TenantId, TimelineId};

use super::Tenant;
use crate::config::TenantConfigOverrides;
use crate::remote_timeline_client::{layout, retry_transient};

/// The version this build writes.
pub const MANIFEST_VERSION: u32 = 1;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantManifest {
    /// Format version.
    pub version: u32,
    /// The tenant's config overrides.
    #[serde(default)]
    pub tenant_conf: TenantConfigOverrides,
    /// Its timelines.
    #[serde(default)]
    pub timelines: Vec<TimelineId>,
}

/// The generation of a manifest object's key (`…/tenant-manifest-<gen>.json`).
pub fn parse_manifest_generation(key: &str) -> Option<Generation> {
    let name = key.rsplit('/').next()?;
    let stem = name.strip_suffix(".json")?;
    match Generation::split_suffix(stem)? {
        ("tenant-manifest", g) => Some(g),
        _ => None,
    }
}

/// The manifest objects of `tenant`, with their generations.
async fn list_manifests(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    cancel: &CancellationToken,
) -> Result<Vec<(RemotePath, Generation)>, String> {
    let prefix = layout::tenant_prefix(tenant).map_err(|e| e.to_string())?;
    let listing = retry_transient("listing the tenant manifests", cancel, || {
        storage.list(Some(&prefix), ListingMode::WithDelimiter, None, cancel)
    })
    .await
    .map_err(|e| format!("listing the tenant manifests: {e}"))?;
    Ok(listing
        .keys
        .into_iter()
        .filter_map(|o| parse_manifest_generation(o.key.as_str()).map(|g| (o.key, g)))
        .collect())
}

/// Reads the manifest with the highest generation not above `mine`; `Ok(None)` when there
/// is none.
pub async fn download_manifest(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    mine: Generation,
    cancel: &CancellationToken,
) -> Result<Option<TenantManifest>, String> {
    let present = list_manifests(storage, tenant, cancel).await?;
    let Some(generation) = layout::pick_index_generation(present.iter().map(|(_, g)| *g), mine)
    else {
        return Ok(None);
    };
    let path = layout::tenant_manifest_path(tenant, generation).map_err(|e| e.to_string())?;
    let bytes = retry_transient("download of the tenant manifest", cancel, || async {
        storage
            .download(&path, &DownloadOpts::default(), cancel)
            .await?
            .read_all()
            .await
    })
    .await
    .map_err(|e| format!("{}: {e}", path.as_str()))?;
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: corrupt tenant manifest: {e}", path.as_str()))?;
    if v.version > MANIFEST_VERSION {
        return Err(format!(
            "{}: tenant manifest version {} is newer than this build understands ({MANIFEST_VERSION})",
            path.as_str(),
            v.version
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: corrupt tenant manifest: {e}", path.as_str()))
}

/// Deletes every manifest of `tenant` (its deletion's last step, with no upload running:
/// the caller holds the tenant's manifest lock and the tenant is stopped).
pub async fn delete_manifests(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let keys: Vec<RemotePath> = list_manifests(storage, tenant, cancel)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    retry_transient("deletion of the tenant manifests", cancel, || {
        storage.delete_objects(&keys, cancel)
    })
    .await
    .map_err(|e| format!("deleting the tenant manifests: {e}"))
}

impl Tenant {
    /// The manifest of the tenant as it is now.
    pub fn manifest(&self) -> TenantManifest {
        TenantManifest {
            version: MANIFEST_VERSION,
            tenant_conf: self.overrides(),
            timelines: self.timelines().iter().map(|t| t.timeline_id).collect(),
        }
    }

    /// Uploads the manifest in the background (a no-op without remote storage); failures
    /// are retried, then logged: the indexes alone still restore the timelines.
    pub fn schedule_manifest_upload(self: &Arc<Self>) {
        let Some(storage) = self.res.remote.clone() else {
            return;
        };
        let t = Arc::clone(self);
        tokio::spawn(async move {
            let _one_at_a_time = t.manifest_lock.lock().await;
            // A stopped tenant (detached, deleted, replaced) writes nothing more.
            if t.state() == super::TenantState::Stopping {
                return;
            }
            let manifest = t.manifest();
            let generation = t.generation();
            let cancel = CancellationToken::new();
            let result = async {
                let path = layout::tenant_manifest_path(t.tenant_id, generation)
                    .map_err(|e| e.to_string())?;
                let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
                retry_transient("upload of the tenant manifest", &cancel, || {
                    storage.upload(
                        UploadSource::from_bytes(bytes.clone()),
                        bytes.len() as u64,
                        &path,
                        None,
                        &cancel,
                    )
                })
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = result {
                warn!(tenant_id = %t.tenant_id, "the tenant manifest was not uploaded: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        let t = TenantId::from_bytes([1; 16]);
        let p = layout::tenant_manifest_path(t, Generation(7)).unwrap();
        assert_eq!(parse_manifest_generation(p.as_str()), Some(Generation(7)));
        assert_eq!(
            parse_manifest_generation("tenants/x/index_part.json-00000007"),
            None
        );
        let m = TenantManifest {
            version: MANIFEST_VERSION,
            tenant_conf: TenantConfigOverrides::default(),
            timelines: vec![TimelineId::from_bytes([2; 16])],
        };
        let back: TenantManifest =
            serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
