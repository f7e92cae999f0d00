//! The timeline's side of object storage: starting its upload queue from the remote index
//! and the local layers, and handing it every layer change.
//!
//! Invariants:
//! - the queue starts before the flush loop, so every layer change after start goes
//!   through it ([`Timeline::apply_layer_change`] schedules the uploads, deletions and the
//!   index);
//! - at start, a local layer the remote index lacks (flushed just before a crash, or
//!   written by a timeline creation) is scheduled for upload, then an index naming it: a
//!   restart loses nothing that was on the local disk, and the queue never uploads an
//!   index older than the remote one;
//! - a deletion marks the index deleted (uploaded) before any object goes, and removes the
//!   layer objects before the indexes: after a crash at any point, the timeline is either
//!   whole, or marked deleted (it starts Broken, saying so, and a repeated DELETE finishes
//!   the job; an attach skips it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remote_storage::ListingMode;
use tracing::{info, warn};
use utils::TenantTimelineId;

use super::Timeline;
use crate::layers::LayerName;
use crate::remote_timeline_client::{
    ClientOptions, RemoteError, RemoteSetup, RemoteTimelineClient, download_index_part, layout,
    retry_transient,
};

/// How long a deletion waits for its deletion mark to be uploaded.
const DELETION_MARK_TIMEOUT: Duration = Duration::from_secs(60);

impl Timeline {
    /// Starts the upload queue when remote storage is configured (see the module docs).
    /// `Err` names what failed (a corrupt or unreadable index): the caller makes the
    /// timeline Broken.
    pub async fn start_remote(self: &Arc<Self>) -> Result<(), String> {
        let Some(RemoteSetup {
            storage,
            generation,
            deletions,
        }) = self.remote_setup.clone()
        else {
            return Ok(());
        };
        if self.remote_client.get().is_some() {
            return Ok(());
        }
        let cancel = self.cancel.child_token();
        let (tenant, timeline) = (self.tenant_id, self.timeline_id);
        let remote = download_index_part(&storage, tenant, timeline, generation, &cancel)
            .await
            .map_err(|e| format!("loading the remote index: {e}"))?
            .map(|(index, _)| index);
        if let Some(at) = remote.as_ref().and_then(|i| i.deleted_at.as_ref()) {
            return Err(format!(
                "the timeline was marked deleted in remote storage at {at} and its deletion did not finish: delete it again"
            ));
        }
        let local = self.metadata.lock().clone();
        let client = RemoteTimelineClient::new(
            storage,
            deletions,
            TenantTimelineId::new(tenant, timeline),
            generation,
            remote.clone(),
            local.clone(),
            ClientOptions::default(),
            cancel,
        );
        let historic = self.layers.read().historic.clone();
        let mut missing: Vec<(LayerName, std::path::PathBuf)> = Vec::new();
        for (name, layer) in historic.iter() {
            if remote
                .as_ref()
                .is_some_and(|i| i.layer_metadata.contains_key(&name.to_string()))
            {
                continue;
            }
            if layer.is_resident() {
                missing.push((name.clone(), layer.local_path()));
            } else {
                // Evicted, so uploaded once (its stub names its object), though this
                // index does not name it: it stays readable; it is not uploaded again.
                warn!(%tenant, %timeline, layer = %name,
                    "an evicted layer is not in the remote index");
            }
        }
        if let Some(r) = &remote {
            let gone = r
                .layers()
                .filter(|(n, _)| !historic.iter().any(|(h, _)| h == n))
                .count();
            if gone > 0 {
                warn!(
                    %tenant, %timeline,
                    "{gone} layers of the remote index are not known locally (the remote index is ahead of the local metadata)"
                );
            }
        }
        let uploads = missing.len();
        let c = client.clone();
        tokio::task::spawn_blocking(move || {
            for (name, path) in missing {
                c.schedule_layer_upload(&name, &path)?;
            }
            Ok::<_, RemoteError>(())
        })
        .await
        .map_err(|e| format!("scheduling layer uploads: {e}"))?
        .map_err(|e| e.to_string())?;
        let remote_lsn = remote.as_ref().map(|i| i.metadata.disk_consistent_lsn);
        match remote_lsn {
            Some(r) if r > local.disk_consistent_lsn => warn!(
                %tenant, %timeline,
                "the remote index is ahead of the local disk ({r} > {}); keeping it",
                local.disk_consistent_lsn
            ),
            Some(r) if r == local.disk_consistent_lsn && uploads == 0 => {}
            _ => client
                .schedule_index_upload(local.clone())
                .map_err(|e| e.to_string())?,
        }
        info!(
            %tenant, %timeline, %generation,
            "remote storage: index at {remote_lsn:?}, local at {}, {uploads} layers to upload",
            local.disk_consistent_lsn
        );
        let _ = self.remote_client.set(client);
        Ok(())
    }

    /// The first step of deleting the timeline (see the module docs): an index marked
    /// deleted, uploaded before this returns. Run while the timeline still runs (its queue
    /// uploads the mark); a no-op without remote storage, or when the queue already stopped
    /// (a repeated deletion: the mark went up the first time).
    pub async fn mark_deleted_remote(self: &Arc<Self>) -> Result<(), String> {
        // Checked before anything changes: a refused deletion leaves the timeline running.
        if let Some(r) = &self.remote_setup {
            may_remove_remote(&r.deletions, self.tenant_id, r.generation).await?;
        }
        if self.remote_setup.is_none() || self.cancel.is_cancelled() {
            return Ok(());
        }
        if let Some(client) = self.remote_client() {
            let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            client
                .schedule_deletion_mark(at)
                .map_err(|e| format!("marking the timeline deleted: {e}"))?;
            tokio::time::timeout(DELETION_MARK_TIMEOUT, client.wait_completion())
                .await
                .map_err(|_| {
                    format!(
                        "the deletion mark was not uploaded within {DELETION_MARK_TIMEOUT:?} (is remote storage reachable?); nothing was deleted, try again"
                    )
                })?
                .map_err(|e| format!("marking the timeline deleted: {e}"))?;
        }
        Ok(())
    }

    /// The second step of deleting the timeline, once it is stopped (nothing uploads any
    /// more): every object of the timeline, layers first, indexes last.
    pub async fn remove_remote_objects(&self) -> Result<(), String> {
        let Some(RemoteSetup {
            storage,
            generation,
            deletions,
        }) = self.remote_setup.clone()
        else {
            return Ok(());
        };
        let (tenant, timeline) = (self.tenant_id, self.timeline_id);
        if let Some(action) = utils::failpoint::eval_async("timeline-delete-after-mark").await {
            return Err(format!(
                "failpoint timeline-delete-after-mark: {}",
                action.unwrap_or_default()
            ));
        }
        may_remove_remote(&deletions, tenant, generation).await?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let prefix = layout::timeline_prefix(tenant, timeline).map_err(|e| e.to_string())?;
        let listing = retry_transient("listing the timeline's objects", &cancel, || {
            storage.list(Some(&prefix), ListingMode::NoDelimiter, None, &cancel)
        })
        .await
        .map_err(|e| format!("listing the timeline's objects: {e}"))?;
        let (indexes, layers): (Vec<_>, Vec<_>) = listing
            .keys
            .into_iter()
            .map(|o| o.key)
            .partition(|k| layout::parse_index_generation(k.as_str()).is_some());
        for (what, keys) in [("layers", layers), ("indexes", indexes)] {
            if what == "indexes" {
                // Test hook: a crash with the layers gone and the (marked) index left.
                let _ = utils::failpoint::eval_async("timeline-delete-before-indexes").await;
            }
            retry_transient(
                &format!("deletion of the timeline's {what}"),
                &cancel,
                || storage.delete_objects(&keys, &cancel),
            )
            .await
            .map_err(|e| format!("deleting the timeline's {what}: {e}"))?;
        }
        info!(%tenant, %timeline, "the timeline's remote objects are deleted");
        Ok(())
    }
}

/// Whether this attachment may remove the timeline's remote objects wholesale: not while
/// AttachedStale, and only in the tenant's current generation (asked of the control plane,
/// when there is one). A stale attachment must not remove what the new owner reads.
async fn may_remove_remote(
    deletions: &crate::deletion_queue::DeletionQueue,
    tenant: utils::TenantId,
    generation: pageserver_api::Generation,
) -> Result<(), String> {
    if deletions.is_held(tenant) {
        return Err(
            "the tenant is AttachedStale: its remote objects are left to its new owner".into(),
        );
    }
    match deletions.validate_now(tenant, generation).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "generation {generation} is no longer the tenant's current one: its remote objects are left to the new owner"
        )),
        Err(e) => Err(format!(
            "validating generation {generation} before removing remote objects: {e}; try again"
        )),
    }
}
