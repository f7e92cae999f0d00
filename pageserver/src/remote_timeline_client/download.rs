//! Downloading one layer file: the only way a layer comes from object storage to the local
//! disk (on-demand reads and explicit downloads alike).
//!
//! Invariant: a file appears under a layer's name only complete and verified — streamed to
//! a temporary file, its size and crc32c checked against the index, fsynced, renamed, and
//! its directory fsynced. A mismatch (a read corrupted on the way, a wrong object) is
//! retried like any failure, and never renamed into place.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use remote_storage::{DownloadOpts, GenericRemoteStorage};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use utils::backoff::{self, RetryPolicy};
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use super::index::LayerFileMeta;
use super::layout;
use crate::layers::LayerName;

/// Downloads `name` (as `meta` describes it) into `dir`, retrying every failure with the
/// default bounded policy. Returns the local path. `Err` says what failed last.
#[allow(clippy::too_many_arguments)]
pub async fn download_layer_file(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    name: &LayerName,
    meta: &LayerFileMeta,
    dir: &Path,
    sync: Sync,
    cancel: &CancellationToken,
) -> Result<PathBuf, String> {
    let from =
        layout::layer_path(tenant, timeline, name, meta.generation).map_err(|e| e.to_string())?;
    let path = dir.join(name.to_string());
    let temp = crashsafe::temp_path_for(&path);
    let what = format!("download of {}", from.as_str());
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
            // tokio's File writes in the background: without a flush the last chunk may
            // not be in the file yet when it is renamed and opened.
            file.flush()
                .await
                .map_err(|e| format!("{}: {e}", temp.display()))?;
            if sync == Sync::Yes {
                file.sync_all()
                    .await
                    .map_err(|e| format!("{}: {e}", temp.display()))?;
            }
            Ok(())
        },
    )
    .await
    .map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.to_string()
    })?;
    crashsafe::durable_rename(&temp, &path, sync)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
