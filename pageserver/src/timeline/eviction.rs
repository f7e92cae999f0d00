//! Evicting a timeline's layers from the local disk, and bringing them back.
//!
//! Invariant: **only a layer the uploaded index names is evicted** (its object is in the
//! bucket, with the size and checksum the stub copies from the index); a layer flushed but
//! not uploaded yet stays. Reads download an evicted layer on demand
//! ([`crate::layers::residence`]); [`Timeline::download_layer`] does it ahead of a read.

use std::sync::Arc;

use super::Timeline;
use crate::layers::LayerName;
use crate::layers::residence::{Layer, ResidenceError};
use crate::remote_timeline_client::index::LayerFileMeta;

/// Why an eviction or download was refused.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    /// The timeline has no such layer.
    #[error("timeline has no layer {0}")]
    NotFound(String),
    /// The layer is not in the uploaded index yet: evicting it would lose it.
    #[error("layer {0} is not in the uploaded index yet; wait for the upload queue")]
    NotUploaded(LayerName),
    /// No object storage: nothing can be evicted.
    #[error("the pageserver has no remote_storage: layers cannot be evicted")]
    NoRemoteStorage,
    /// The stub, the file or the download failed.
    #[error(transparent)]
    Residence(#[from] ResidenceError),
}

impl Timeline {
    fn historic_layer(&self, name: &str) -> Result<Arc<Layer>, EvictionError> {
        let parsed =
            LayerName::parse(name).map_err(|_| EvictionError::NotFound(name.to_string()))?;
        self.layers
            .read()
            .historic
            .iter()
            .find(|(n, _)| **n == parsed)
            .map(|(_, l)| l.clone())
            .ok_or_else(|| EvictionError::NotFound(name.to_string()))
    }

    /// Evicts the layer `name` (a file name). `Ok(false)`: it was evicted already.
    /// Blocking file I/O (the stub's fsync).
    pub fn evict_layer(&self, name: &str) -> Result<bool, EvictionError> {
        let layer = self.historic_layer(name)?;
        let Some(client) = self.remote_client() else {
            return Err(EvictionError::NoRemoteStorage);
        };
        let meta = client
            .uploaded_index()
            .and_then(|i| i.layer_metadata.get(name).copied())
            .ok_or_else(|| EvictionError::NotUploaded(layer.name().clone()))?;
        Ok(layer.evict(meta)?)
    }

    /// The resident layers the uploaded index names, with what it says of each: the ones
    /// that may be evicted (empty without remote storage or before the first upload).
    pub fn evictable_layers(&self) -> Vec<(Arc<Layer>, LayerFileMeta)> {
        let Some(index) = self.remote_client().and_then(|c| c.uploaded_index()) else {
            return Vec::new();
        };
        self.layers
            .read()
            .historic
            .iter()
            .filter(|(_, l)| l.is_resident())
            .filter_map(|(name, l)| {
                let meta = index.layer_metadata.get(&name.to_string())?;
                Some((l.clone(), *meta))
            })
            .collect()
    }

    /// Evicts every resident layer the uploaded index names; returns how many.
    pub fn evict_all_layers(&self) -> Result<usize, EvictionError> {
        if self.remote_client().is_none() {
            return Err(EvictionError::NoRemoteStorage);
        }
        let mut evicted = 0;
        for (layer, meta) in self.evictable_layers() {
            if layer.evict(meta)? {
                evicted += 1;
            }
        }
        Ok(evicted)
    }

    /// Downloads the layer `name` if it is evicted. `Ok(false)`: it was resident.
    pub async fn download_layer(&self, name: &str) -> Result<bool, EvictionError> {
        let layer = self.historic_layer(name)?;
        if layer.is_resident() {
            return Ok(false);
        }
        layer.get_or_download().await?;
        Ok(true)
    }
}
