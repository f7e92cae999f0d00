//! Where a tenant's objects live in remote storage: every name is built here.
//!
//! ```text
//! tenants/<tenant>/tenant-manifest-<gen>.json
//! tenants/<tenant>/timelines/<timeline>/index_part.json-<gen>
//! tenants/<tenant>/timelines/<timeline>/<layer name>-<gen>
//! ```
//! `<gen>` is the [`Generation`] of the attachment that wrote the object, as eight hex
//! digits. Objects are never overwritten by another generation: a newer attachment writes
//! new names, and a reader picks the index with the highest generation not above its own.

use pageserver_api::Generation;
use remote_storage::{RemotePath, RemotePathError};
use utils::{TenantId, TimelineId};

use crate::layers::LayerName;

/// The index's name before its generation suffix.
pub const INDEX_PART_NAME: &str = "index_part.json";

/// `tenants/<tenant>/`.
pub fn tenant_prefix(tenant: TenantId) -> Result<RemotePath, RemotePathError> {
    RemotePath::new(&format!("tenants/{tenant}/"))
}

/// `tenants/<tenant>/timelines/<timeline>/`: everything of one timeline.
pub fn timeline_prefix(
    tenant: TenantId,
    timeline: TimelineId,
) -> Result<RemotePath, RemotePathError> {
    RemotePath::new(&format!("tenants/{tenant}/timelines/{timeline}/"))
}

/// The tenant manifest written by generation `generation`.
pub fn tenant_manifest_path(
    tenant: TenantId,
    generation: Generation,
) -> Result<RemotePath, RemotePathError> {
    RemotePath::new(&format!(
        "tenants/{tenant}/tenant-manifest{}.json",
        generation.suffix()
    ))
}

/// The timeline's index written by generation `generation`.
pub fn index_path(
    tenant: TenantId,
    timeline: TimelineId,
    generation: Generation,
) -> Result<RemotePath, RemotePathError> {
    RemotePath::new(&format!(
        "tenants/{tenant}/timelines/{timeline}/{INDEX_PART_NAME}{}",
        generation.suffix()
    ))
}

/// A layer file uploaded by generation `generation`.
pub fn layer_path(
    tenant: TenantId,
    timeline: TimelineId,
    layer: &LayerName,
    generation: Generation,
) -> Result<RemotePath, RemotePathError> {
    RemotePath::new(&format!(
        "tenants/{tenant}/timelines/{timeline}/{layer}{}",
        generation.suffix()
    ))
}

/// The generation of an index object's key (`…/index_part.json-<gen>`), if it is one.
pub fn parse_index_generation(key: &str) -> Option<Generation> {
    let name = key.rsplit('/').next()?;
    match Generation::split_suffix(name)? {
        (INDEX_PART_NAME, g) => Some(g),
        _ => None,
    }
}

/// The index a reader of generation `mine` loads from those present: the highest
/// generation not above its own (a newer one belongs to a newer attachment).
pub fn pick_index_generation(
    present: impl IntoIterator<Item = Generation>,
    mine: Generation,
) -> Option<Generation> {
    present.into_iter().filter(|g| *g <= mine).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Key;
    use utils::Lsn;

    #[test]
    fn names() {
        let t = TenantId::from_bytes([1; 16]);
        let tl = TimelineId::from_bytes([2; 16]);
        let g = Generation(3);
        assert_eq!(
            index_path(t, tl, g).unwrap().as_str(),
            format!("tenants/{t}/timelines/{tl}/index_part.json-00000003")
        );
        let layer = LayerName::image(Key::MIN..Key::MAX, Lsn(0x10));
        let p = layer_path(t, tl, &layer, g).unwrap();
        assert!(p.as_str().ends_with(&format!("/{layer}-00000003")), "{p:?}");
        assert!(
            p.as_str()
                .starts_with(timeline_prefix(t, tl).unwrap().as_str())
        );
        assert_eq!(
            tenant_manifest_path(t, g).unwrap().as_str(),
            format!("tenants/{t}/tenant-manifest-00000003.json")
        );
        assert_eq!(
            parse_index_generation(index_path(t, tl, g).unwrap().as_str()),
            Some(g)
        );
        assert_eq!(parse_index_generation(p.as_str()), None);
    }

    #[test]
    fn a_reader_never_picks_a_newer_generation() {
        let present = [Generation(1), Generation(4), Generation(7)];
        assert_eq!(
            pick_index_generation(present, Generation(5)),
            Some(Generation(4))
        );
        assert_eq!(
            pick_index_generation(present, Generation(7)),
            Some(Generation(7))
        );
        assert_eq!(pick_index_generation(present, Generation(0)), None);
    }
}
