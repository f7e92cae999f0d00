//! Loading a timeline from its directory, and creating one crash-safely.
//!
//! A timeline directory holds `metadata` and layer files. Loading:
//! 1. reads `metadata` (corrupt → the timeline is Broken, naming the file);
//! 2. removes temporary files (an interrupted write), ephemeral files (a crashed
//!    in-memory layer) and layer files above `disk_consistent_lsn` (a flush that crashed
//!    before its metadata update: ingest will receive that WAL again);
//! 3. opens and verifies every remaining layer file (a corrupt one → Broken, naming it);
//! 4. takes each evicted layer's stub (`<layer>.evicted`: the layer is in object storage
//!    only, downloaded on first read) unless its file is there too, when the stub is a
//!    leftover of a download and goes (an unreadable stub → Broken, naming it).
//!
//! Creation builds the directory under a temporary name (`<id>.___temp`) with its layers
//! and metadata fsynced, then renames it into place and fsyncs the parent: a timeline
//! either exists whole or not at all. Leftover temporary directories are removed when the
//! tenant loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TenantId, TimelineId};

use super::metadata::{MetadataError, TimelineMetadata};
use super::{Timeline, TimelineResources};
use crate::layer_map::LayerMap;
use crate::layers::LayerName;
use crate::layers::file_format::{LayerFile, LayerFileError};
use crate::layers::residence::{EVICTED_SUFFIX, EvictedStub, Layer};

/// Why a timeline could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The metadata file is missing or corrupt.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A layer file is corrupt or unreadable.
    #[error(transparent)]
    Layer(#[from] LayerFileError),
    /// The directory could not be listed or changed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files disagree with each other.
    #[error("{0}")]
    Inconsistent(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads `dir` (see the module docs); the timeline is returned in state Loading.
pub fn load_timeline(
    tenant_id: TenantId,
    timeline_id: TimelineId,
    dir: PathBuf,
    ancestor: Option<Arc<Timeline>>,
    res: TimelineResources,
) -> Result<Arc<Timeline>, LoadError> {
    let meta = TimelineMetadata::load(&dir)?;
    if meta.ancestor_timeline != ancestor.as_ref().map(|a| a.timeline_id) {
        return Err(LoadError::Inconsistent(format!(
            "{}: metadata names ancestor {:?}",
            dir.display(),
            meta.ancestor_timeline
        )));
    }
    let mut map = LayerMap::new();
    let mut removed = 0;
    let home = res.layer_home(tenant_id, timeline_id, &dir);
    // Stubs of evicted layers, taken after the files (a file wins over its stub).
    let mut stubs: Vec<(LayerName, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == super::metadata::METADATA_FILE {
            continue;
        }
        if crashsafe::is_temp_file(&path) || name.starts_with("ephemeral-") {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
            continue;
        }
        if let Some(layer) = name
            .strip_suffix(EVICTED_SUFFIX)
            .and_then(|n| LayerName::parse(n).ok())
        {
            stubs.push((layer, path));
            continue;
        }
        let Ok(layer) = LayerName::parse(&name) else {
            warn!("{}: not a layer file; left alone", path.display());
            continue;
        };
        if layer.lsn_range.end > Lsn(meta.disk_consistent_lsn.0 + 1) {
            info!(
                "{}: above disk_consistent_lsn {} (a flush that did not finish); removed",
                path.display(),
                meta.disk_consistent_lsn
            );
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
            continue;
        }
        let file = LayerFile::open(&path, res.cache.clone())?;
        let s = file.summary();
        if s.tenant_id != tenant_id || s.timeline_id != timeline_id {
            return Err(LoadError::Inconsistent(format!(
                "{}: belongs to {}/{}",
                path.display(),
                s.tenant_id,
                s.timeline_id
            )));
        }
        map.insert(
            layer.clone(),
            Layer::resident(layer, Arc::new(file), home.clone()),
        );
    }
    let resident: std::collections::HashSet<LayerName> =
        map.iter().map(|(n, _)| n.clone()).collect();
    for (layer, path) in stubs {
        let beyond = layer.lsn_range.end > Lsn(meta.disk_consistent_lsn.0 + 1);
        if beyond || resident.contains(&layer) {
            // Its file is here (a download finished, the stub's removal did not), or the
            // layer is above what the metadata covers.
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed += 1;
            continue;
        }
        let stub = EvictedStub::load(&path).map_err(|e| {
            LoadError::Inconsistent(format!(
                "{}: unreadable evicted-layer stub: {e}",
                path.display()
            ))
        })?;
        map.insert(layer.clone(), Layer::evicted(layer, stub, home.clone()));
    }
    if removed > 0 {
        crashsafe::fsync_dir(&dir, res.sync).map_err(io(&dir))?;
    }
    Ok(Timeline::new(
        tenant_id,
        timeline_id,
        dir,
        meta,
        ancestor,
        map,
        res,
    ))
}

/// The temporary directory a timeline is built in before [`install_timeline_dir`].
pub fn temp_timeline_dir(final_dir: &Path) -> PathBuf {
    crashsafe::temp_path_for(final_dir)
}

/// Writes the metadata into the temporary directory, then renames it into place.
pub fn install_timeline_dir(
    tmp: &Path,
    final_dir: &Path,
    meta: &TimelineMetadata,
    sync: Sync,
) -> Result<(), LoadError> {
    meta.persist(tmp, sync)?;
    crashsafe::fsync_dir(tmp, sync).map_err(io(tmp))?;
    crashsafe::durable_rename(tmp, final_dir, sync).map_err(io(final_dir))?;
    Ok(())
}
