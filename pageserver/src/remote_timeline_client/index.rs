//! `index_part.json`: a timeline's state in remote storage — which layer objects make it
//! up, and its metadata.
//!
//! Invariants (kept by the upload queue, [`super::upload_queue`]):
//! - **an uploaded index never names a layer that is not already uploaded**;
//! - **a layer named by the latest uploaded index is never deleted**;
//! - what is uploaded only moves forward: `disk_consistent_lsn` and the GC cutoff never go
//!   backwards, and an index marked deleted is never followed by one that is not.
//!
//! The JSON carries a `version`. A reader accepts every version up to
//! [`LATEST_VERSION`] and refuses a newer one with an error naming it, rather than guess
//! at fields it does not know; within a version, fields are only ever added with defaults.

use std::collections::BTreeMap;

use pageserver_api::Generation;
use serde::{Deserialize, Serialize};
use utils::Lsn;

use crate::layers::LayerName;
use crate::timeline::metadata::TimelineMetadata;

/// The version this build writes.
pub const LATEST_VERSION: u32 = 1;

/// What the index says of one layer object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFileMeta {
    /// Bytes of the file.
    pub file_size: u64,
    /// The generation that uploaded it (part of its object name).
    pub generation: Generation,
    /// crc32c of the whole file, checked on download.
    pub checksum: u32,
}

/// The index of one timeline (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPart {
    /// Format version ([`LATEST_VERSION`] when written by this build).
    pub version: u32,
    /// Every layer of the timeline, by name.
    pub layer_metadata: BTreeMap<String, LayerFileMeta>,
    /// The timeline's metadata as of the layers listed (its `disk_consistent_lsn` is what
    /// the layers hold).
    pub metadata: TimelineMetadata,
    /// When the timeline was marked deleted (RFC 3339); its objects are being removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// When the timeline was archived (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

/// Why bytes are not a usable index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Not JSON, or not an index of a known version.
    #[error("corrupt index_part.json: {0}")]
    Corrupt(String),
    /// Written by a newer build.
    #[error(
        "index_part.json version {found} is newer than this build understands ({LATEST_VERSION})"
    )]
    UnsupportedVersion {
        /// The file's version.
        found: u64,
    },
}

/// Why a new index may not follow the previous one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonotonicityError {
    /// `disk_consistent_lsn` would go back.
    #[error("disk_consistent_lsn would go back from {from} to {to}")]
    DiskConsistentLsn {
        /// The previous one.
        from: Lsn,
        /// The new one.
        to: Lsn,
    },
    /// The GC cutoff would go back.
    #[error("latest_gc_cutoff_lsn would go back from {from} to {to}")]
    GcCutoff {
        /// The previous one.
        from: Lsn,
        /// The new one.
        to: Lsn,
    },
    /// A deleted timeline would come back.
    #[error("the timeline is marked deleted; an index without the mark would resurrect it")]
    Undeleted,
}

impl IndexPart {
    /// An index with no layers.
    pub fn empty(metadata: TimelineMetadata) -> IndexPart {
        IndexPart {
            version: LATEST_VERSION,
            layer_metadata: BTreeMap::new(),
            metadata,
            deleted_at: None,
            archived_at: None,
        }
    }

    /// The layers, parsed (names that do not parse were refused by [`IndexPart::parse`]).
    pub fn layers(&self) -> impl Iterator<Item = (LayerName, &LayerFileMeta)> {
        self.layer_metadata
            .iter()
            .filter_map(|(n, m)| LayerName::parse(n).ok().map(|n| (n, m)))
    }

    /// Whether the index names `layer` (uploaded by `generation`).
    pub fn names(&self, layer: &LayerName, generation: Generation) -> bool {
        self.layer_metadata
            .get(&layer.to_string())
            .is_some_and(|m| m.generation == generation)
    }

    /// The index's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, IndexError> {
        serde_json::to_vec(self).map_err(|e| IndexError::Corrupt(e.to_string()))
    }

    /// Parses an index of any version this build knows, and checks that every layer name
    /// is one.
    pub fn parse(bytes: &[u8]) -> Result<IndexPart, IndexError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u64,
        }
        let v: Versioned =
            serde_json::from_slice(bytes).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        if v.version > u64::from(LATEST_VERSION) {
            return Err(IndexError::UnsupportedVersion { found: v.version });
        }
        if v.version == 0 {
            return Err(IndexError::Corrupt("version 0".to_string()));
        }
        let index: IndexPart =
            serde_json::from_slice(bytes).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        for name in index.layer_metadata.keys() {
            LayerName::parse(name).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        }
        Ok(index)
    }

    /// Checks that `self` may be uploaded after `prev` (see the module docs).
    pub fn check_follows(&self, prev: &IndexPart) -> Result<(), MonotonicityError> {
        let (a, b) = (&prev.metadata, &self.metadata);
        if b.disk_consistent_lsn < a.disk_consistent_lsn {
            return Err(MonotonicityError::DiskConsistentLsn {
                from: a.disk_consistent_lsn,
                to: b.disk_consistent_lsn,
            });
        }
        if b.latest_gc_cutoff_lsn < a.latest_gc_cutoff_lsn {
            return Err(MonotonicityError::GcCutoff {
                from: a.latest_gc_cutoff_lsn,
                to: b.latest_gc_cutoff_lsn,
            });
        }
        if prev.deleted_at.is_some() && self.deleted_at.is_none() {
            return Err(MonotonicityError::Undeleted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Key;
    use utils::TimelineId;

    fn metadata(lsn: u64) -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: Lsn(lsn),
            prev_record_lsn: None,
            ancestor_timeline: Some(TimelineId::from_bytes([7; 16])),
            ancestor_lsn: Lsn(0x100),
            latest_gc_cutoff_lsn: Lsn(0),
            initdb_lsn: Lsn(0x100),
            pg_version: 15,
        }
    }

    fn sample() -> IndexPart {
        let mut i = IndexPart::empty(metadata(0x2000));
        let l = LayerName::delta(Key::MIN..Key::MAX, Lsn(0x100)..Lsn(0x2000));
        i.layer_metadata.insert(
            l.to_string(),
            LayerFileMeta {
                file_size: 8192,
                generation: Generation(2),
                checksum: 0xdead_beef,
            },
        );
        i
    }

    #[test]
    fn round_trips() {
        let i = sample();
        let back = IndexPart::parse(&i.to_json().unwrap()).unwrap();
        assert_eq!(back, i);
        let (name, meta) = back.layers().next().unwrap();
        assert!(back.names(&name, Generation(2)));
        assert!(!back.names(&name, Generation(3)));
        assert_eq!(meta.file_size, 8192);
    }

    #[test]
    fn refuses_newer_versions_and_garbage() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = 99.into();
        let e = IndexPart::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(e, IndexError::UnsupportedVersion { found: 99 }),
            "{e}"
        );
        assert!(e.to_string().contains("99"), "{e}");
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"version\":1}",
            b"",
            b"{\"version\":0}",
        ] {
            assert!(
                matches!(IndexPart::parse(bad), Err(IndexError::Corrupt(_))),
                "{bad:?}"
            );
        }
        let json = String::from_utf8(sample().to_json().unwrap()).unwrap();
        let truncated = &json.as_bytes()[..json.len() / 2];
        assert!(IndexPart::parse(truncated).is_err());
        let mut v = serde_json::to_value(sample()).unwrap();
        let layers = v["layer_metadata"].as_object_mut().unwrap();
        let meta = layers.values().next().unwrap().clone();
        layers.insert("not-a-layer".into(), meta);
        let e = IndexPart::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not-a-layer"), "{e}");
    }

    #[test]
    fn what_is_uploaded_only_moves_forward() {
        let a = sample();
        let mut b = a.clone();
        b.metadata.disk_consistent_lsn = Lsn(0x1000);
        assert!(matches!(
            b.check_follows(&a),
            Err(MonotonicityError::DiskConsistentLsn { .. })
        ));
        let mut c = a.clone();
        c.metadata.disk_consistent_lsn = Lsn(0x3000);
        assert_eq!(c.check_follows(&a), Ok(()));
        let mut gc = a.clone();
        gc.metadata.latest_gc_cutoff_lsn = Lsn(0x500);
        let mut back = gc.clone();
        back.metadata.latest_gc_cutoff_lsn = Lsn(0x400);
        assert!(back.check_follows(&gc).is_err());
        let mut deleted = a.clone();
        deleted.deleted_at = Some("2026-12-04T00:00:00Z".into());
        assert_eq!(a.check_follows(&deleted), Err(MonotonicityError::Undeleted));
        assert_eq!(deleted.check_follows(&a), Ok(()));
    }
}
