//! Writing frozen in-memory layers out, and the one function that changes a timeline's
//! layers and durable metadata.
//!
//! Order of a flush (each step durable before the next):
//! 1. the frozen layer is written as a delta layer file: temp file, fsync, rename,
//!    directory fsync (`LayerWriter::finish`);
//! 2. [`Timeline::apply_layer_change`]: the file joins the layer map and the frozen layer
//!    leaves (one swap under the layers lock, so a reader sees one or the other), then the
//!    metadata with the new `disk_consistent_lsn` is persisted crash-safely.
//!
//! A crash between 1 and 2 leaves a layer file above `disk_consistent_lsn`; loading
//! removes it ([`super::load`]) and ingest re-receives that WAL. Failpoint
//! `flush-after-layer-write` sits exactly there.

use std::sync::Arc;

use tracing::{error, info};
use utils::Lsn;

use super::metadata::{MetadataError, TimelineMetadata};
use super::{LastRecord, Timeline, TimelineState};
use crate::layer_map::LayerMap;
use crate::layers::LayerName;
use crate::layers::file_format::{LayerFile, LayerFileError};
use crate::layers::in_memory::InMemoryLayer;
use crate::layers::residence::Layer;
use crate::metrics;
use crate::remote_timeline_client::RemoteError;

/// Why a flush failed (the timeline is then Broken).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Writing or reopening the layer file failed.
    #[error(transparent)]
    Layer(#[from] LayerFileError),
    /// Persisting the metadata failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A failpoint stopped it (tests).
    #[error("failpoint {0}")]
    Failpoint(String),
    /// The timeline is broken.
    #[error("timeline is broken: {0}")]
    Broken(String),
    /// The timeline is shutting down.
    #[error("timeline is shutting down")]
    Cancelled,
    /// The upload queue refused the change (an index that would go back).
    #[error("remote storage: {0}")]
    Remote(String),
}

/// A change to a timeline's layers and metadata, applied atomically for readers.
#[derive(Debug, Default)]
pub struct LayerChange {
    /// Layer files to add (written, fsynced and renamed into place already).
    pub added: Vec<(LayerName, Arc<LayerFile>)>,
    /// Layers to remove from the map (their files are deleted by the caller, later).
    pub removed: Vec<LayerName>,
    /// A frozen in-memory layer that the added files replace.
    pub flushed: Option<Arc<InMemoryLayer>>,
    /// The new durable position, with the last record at it.
    pub disk_consistent: Option<LastRecord>,
}

impl Timeline {
    /// The only way layers and durable metadata change (see the module docs). The upload
    /// queue hooks here: after this returns, the change is durable locally.
    pub fn apply_layer_change(&self, change: LayerChange) -> Result<(), FlushError> {
        {
            let mut layers = self.layers.write();
            if !change.added.is_empty() || !change.removed.is_empty() {
                let mut map: LayerMap<Arc<Layer>> = (*layers.historic).clone();
                for name in &change.removed {
                    map.remove(name);
                }
                for (name, file) in change.added.iter().cloned() {
                    let layer = Layer::resident(name.clone(), file, self.layer_home.clone());
                    map.insert(name, layer);
                }
                layers.historic = Arc::new(map);
            }
            if let Some(flushed) = &change.flushed {
                layers.frozen.retain(|(l, _)| !Arc::ptr_eq(l, flushed));
            }
        }
        for (name, file) in &change.added {
            metrics::LAYERS.with_label_values(&[kind_label(name)]).inc();
            metrics::LAYER_BYTES
                .with_label_values(&[kind_label(name)])
                .add(file.file_size() as i64);
        }
        if let Some(rec) = change.disk_consistent {
            let meta = {
                let mut m = self.metadata.lock();
                m.disk_consistent_lsn = rec.last;
                m.prev_record_lsn = rec.prev;
                m.clone()
            };
            persist(&meta, self)?;
            self.set_disk_consistent_lsn(rec.last);
        }
        self.schedule_remote(&change)
    }

    /// Hands a change, durable locally, to the upload queue: the added layers' uploads,
    /// the removed ones' deletions, then an index with the new metadata.
    fn schedule_remote(&self, change: &LayerChange) -> Result<(), FlushError> {
        let Some(client) = self.remote_client.get() else {
            return Ok(());
        };
        let remote = |e: RemoteError| match e {
            RemoteError::Stopped { .. } => FlushError::Cancelled,
            e => FlushError::Remote(e.to_string()),
        };
        for (name, file) in &change.added {
            client
                .schedule_layer_upload(name, file.path())
                .map_err(remote)?;
        }
        if !change.removed.is_empty() {
            client
                .schedule_layer_deletions(&change.removed)
                .map_err(remote)?;
        }
        if change.disk_consistent.is_some() || !change.added.is_empty() {
            let meta = self.metadata.lock().clone();
            client.schedule_index_upload(meta).map_err(remote)?;
        }
        Ok(())
    }

    /// Writes the oldest frozen layer out. `Ok(false)` when there was none.
    pub async fn flush_one(self: &Arc<Self>) -> Result<bool, FlushError> {
        let next = self.layers.read().frozen.first().cloned();
        let Some((layer, last)) = next else {
            return Ok(false);
        };
        let tl = self.clone();
        let l = layer.clone();
        let started = std::time::Instant::now();
        let (name, file) = tokio::task::spawn_blocking(move || {
            let (name, path, _size) =
                l.write_delta(&tl.dir, tl.tenant_id, tl.timeline_id, tl.sync)?;
            let file = LayerFile::open(&path, tl.cache.clone())?;
            Ok::<_, FlushError>((name, Arc::new(file)))
        })
        .await
        .map_err(|e| FlushError::Broken(format!("flush task failed: {e}")))??;
        if let Some(action) = utils::failpoint::eval_async("flush-after-layer-write").await {
            return Err(FlushError::Failpoint(format!(
                "flush-after-layer-write: {}",
                action.unwrap_or_default()
            )));
        }
        let end = name.lsn_range.end;
        // Blocking: the metadata's fsync, and the upload queue reads the file's checksum.
        let tl = self.clone();
        let added = name.clone();
        tokio::task::spawn_blocking(move || {
            tl.apply_layer_change(LayerChange {
                added: vec![(added, file)],
                removed: Vec::new(),
                flushed: Some(layer),
                disk_consistent: Some(last),
            })
        })
        .await
        .map_err(|e| FlushError::Broken(format!("flush task failed: {e}")))??;
        metrics::FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
        info!(
            tenant_id = %self.tenant_id,
            timeline_id = %self.timeline_id,
            "flushed {name} in {:?}; disk_consistent_lsn {}",
            started.elapsed(),
            Lsn(end.0 - 1)
        );
        Ok(true)
    }

    /// The flush task: writes frozen layers as they appear, freezes the open layer when
    /// `checkpoint_timeout` passes. A failure makes the timeline Broken.
    pub async fn flush_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.flush_requested.notified() => {}
                _ = tick.tick() => self.freeze_if_old().await,
            }
            loop {
                match self.flush_one().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(FlushError::Cancelled) => return,
                    Err(e) => {
                        error!(
                            tenant_id = %self.tenant_id,
                            timeline_id = %self.timeline_id,
                            "flush failed: {e}"
                        );
                        self.set_state(TimelineState::Broken(format!("flush failed: {e}")));
                        self.flush_done.send_modify(|_| {});
                        return;
                    }
                }
            }
        }
    }
}

fn persist(meta: &TimelineMetadata, tl: &Timeline) -> Result<(), FlushError> {
    meta.persist(&tl.dir, tl.sync)?;
    Ok(())
}

fn kind_label(name: &LayerName) -> &'static str {
    match name.kind {
        crate::layers::LayerKind::Delta => "delta",
        crate::layers::LayerKind::Image => "image",
    }
}
