//! Attach: a tenant's local directory rebuilt from object storage alone.
//!
//! Every timeline of the tenant found in the bucket (`tenants/<t>/timelines/<tl>/`) is
//! rebuilt from its index (the highest generation not above the attachment's): the
//! timeline's metadata is written from the index, with a stub for every layer it names.
//! The whole tenant directory is built under a temporary name and renamed into place only
//! when complete, so a crash leaves no half-attached tenant (the leftover is removed at
//! start-up and the attach can simply be asked again: it is idempotent).
//!
//! Layers are not downloaded here: each is written as an evicted layer's stub (what the
//! index says of it), and the first read that needs it downloads it
//! ([`crate::layers::residence`]), verified against the same size and crc32c.

use std::path::Path;

use pageserver_api::Generation;
use remote_storage::{GenericRemoteStorage, ListingMode};
use tokio_util::sync::CancellationToken;
use tracing::info;
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use super::{Location, TENANT_CONFIG_FILE, TenantError, io};
use crate::config::TenantConfigOverrides;
use crate::layers::residence::EvictedStub;
use crate::remote_timeline_client::{download_index_part, layout, retry_transient};

fn remote_err(e: impl std::fmt::Display) -> TenantError {
    TenantError::Create(format!("attach: {e}"))
}

/// Builds the directory of `tenant` in `tmp` from the bucket (see the module docs):
/// `config.toml` with `overrides`, `location.json` with `generation`, and every timeline.
/// Returns the timelines attached.
pub async fn download_tenant(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    generation: Generation,
    overrides: &TenantConfigOverrides,
    tmp: &Path,
    sync: Sync,
    cancel: &CancellationToken,
) -> Result<Vec<TimelineId>, TenantError> {
    let _ = std::fs::remove_dir_all(tmp);
    let timelines_dir = tmp.join("timelines");
    std::fs::create_dir_all(&timelines_dir).map_err(io(&timelines_dir))?;
    crashsafe::overwrite(
        &tmp.join(TENANT_CONFIG_FILE),
        overrides.to_toml().as_bytes(),
        sync,
    )
    .map_err(io(tmp))?;
    Location::attached(generation).persist(tmp, sync)?;

    let prefix = layout::tenant_prefix(tenant)
        .and_then(|p| p.join("timelines/"))
        .map_err(remote_err)?;
    let listing = retry_transient("listing the tenant's timelines", cancel, || {
        storage.list(Some(&prefix), ListingMode::WithDelimiter, None, cancel)
    })
    .await
    .map_err(remote_err)?;
    let mut attached = Vec::new();
    for p in &listing.prefixes {
        let Some(id) = p
            .as_str()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<TimelineId>().ok())
        else {
            continue;
        };
        let index = download_index_part(storage, tenant, id, generation, cancel)
            .await
            .map_err(remote_err)?;
        let Some((index, found)) = index else {
            continue;
        };
        if index.deleted_at.is_some() {
            info!(%tenant, timeline = %id, "timeline is marked deleted in the bucket; not attached");
            continue;
        }
        let dir = timelines_dir.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Layers come on demand: each is a stub now, downloaded by the first read.
        let mut bytes = 0;
        for (name, meta) in index.layers() {
            EvictedStub::new(*meta)
                .persist(&EvictedStub::path(&dir, &name), sync)
                .map_err(remote_err)?;
            bytes += meta.file_size;
        }
        index.metadata.persist(&dir, sync).map_err(remote_err)?;
        crashsafe::fsync_dir(&dir, sync).map_err(io(&dir))?;
        info!(
            %tenant, timeline = %id, index_generation = %found,
            "attached at {} ({} layers, {bytes} bytes, downloaded on demand)",
            index.metadata.disk_consistent_lsn,
            index.layer_metadata.len()
        );
        attached.push(id);
    }
    crashsafe::fsync_dir(&timelines_dir, sync).map_err(io(&timelines_dir))?;
    Ok(attached)
}
