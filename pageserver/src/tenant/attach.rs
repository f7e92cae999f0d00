//! Attach: a tenant's local directory rebuilt from object storage alone.
//!
//! Every timeline of the tenant found in the bucket (`tenants/<t>/timelines/<tl>/`) is
//! rebuilt from its index (the highest generation not above the attachment's): each layer
//! the index names is downloaded, checked against the size and crc32c the index records,
//! fsynced and renamed into place; then the timeline's metadata is written from the index.
//! The whole tenant directory is built under a temporary name and renamed into place only
//! when complete, so a crash leaves no half-attached tenant (the leftover is removed at
//! start-up and the attach can simply be asked again: it is idempotent).
//!
//! Download on demand is not built yet: an attach downloads every layer.

use std::path::Path;

use futures::StreamExt;
use pageserver_api::Generation;
use remote_storage::{DownloadOpts, GenericRemoteStorage, ListingMode};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::info;
use utils::backoff::{self, RetryPolicy};
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use super::{Location, TENANT_CONFIG_FILE, TenantError, io};
use crate::config::TenantConfigOverrides;
use crate::layers::LayerName;
use crate::remote_timeline_client::index::LayerFileMeta;
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
        let mut bytes = 0;
        for (name, meta) in index.layers() {
            download_layer(storage, tenant, id, &name, meta, &dir, sync, cancel).await?;
            bytes += meta.file_size;
        }
        index.metadata.persist(&dir, sync).map_err(remote_err)?;
        crashsafe::fsync_dir(&dir, sync).map_err(io(&dir))?;
        info!(
            %tenant, timeline = %id, index_generation = %found,
            "attached at {} ({} layers, {bytes} bytes)",
            index.metadata.disk_consistent_lsn,
            index.layer_metadata.len()
        );
        attached.push(id);
    }
    crashsafe::fsync_dir(&timelines_dir, sync).map_err(io(&timelines_dir))?;
    Ok(attached)
}

/// Downloads one layer into `dir` (temp file, size and checksum checked, fsync, rename),
/// retrying transient failures and mismatches.
#[allow(clippy::too_many_arguments)]
async fn download_layer(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    name: &LayerName,
    meta: &LayerFileMeta,
    dir: &Path,
    sync: Sync,
    cancel: &CancellationToken,
) -> Result<(), TenantError> {
    let from = layout::layer_path(tenant, timeline, name, meta.generation).map_err(remote_err)?;
    let path = dir.join(name.to_string());
    let temp = crashsafe::temp_path_for(&path);
    let what = format!("download of {}", from.as_str());
    // Every failure is retried (the default bounded policy), a mismatch with the index too
    // (a read corrupted on the way).
    backoff::retry(
        &what,
        RetryPolicy::default(),
        cancel,
        |_: &String| false,
        || async {
            let dl = storage
                .download(&from, &DownloadOpts::default(), cancel)
                .await
                .map_err(|e| e.to_string())?;
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| format!("{}: {e}", temp.display()))?;
            let (mut size, mut crc) = (0u64, 0u32);
            let mut stream = dl.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                crc = crc32c::crc32c_append(crc, &chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| format!("{}: {e}", temp.display()))?;
            }
            if size != meta.file_size || crc != meta.checksum {
                return Err(format!(
                    "{} has {size} bytes with crc32c {crc:08x}; the index says {} bytes, {:08x}",
                    from.as_str(),
                    meta.file_size,
                    meta.checksum
                ));
            }
            if sync == Sync::Yes {
                file.sync_all()
                    .await
                    .map_err(|e| format!("{}: {e}", temp.display()))?;
            }
            Ok(())
        },
    )
    .await
    .map_err(remote_err)?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    Ok(())
}
