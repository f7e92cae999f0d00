//! A timeline's durable metadata: `tenants/<t>/timelines/<tl>/metadata`.
//!
//! ```text
//! magic "STMD" u32 BE | format version u16 BE | body length u32 BE | body (JSON) | crc32c u32 BE
//! ```
//! The checksum covers everything before it. The body is JSON so a person can read it and
//! fields can be added with defaults; the version changes when a field's meaning does.
//!
//! Invariants:
//! - written only with `utils::crashsafe` (temp file, fsync, rename, directory fsync), so
//!   after any crash it is the complete old or the complete new content;
//! - `disk_consistent_lsn` names only what fsynced layer files hold: it is persisted
//!   after the layer file and its directory are fsynced, never before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TimelineId};

/// The file's name inside the timeline directory.
pub const METADATA_FILE: &str = "metadata";
const MAGIC: u32 = 0x5354_4D44; // "STMD"
const VERSION: u16 = 1;

/// What a timeline must remember across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineMetadata {
    /// Everything up to and including this LSN is in fsynced layer files.
    pub disk_consistent_lsn: Lsn,
    /// The start of the last record at or below `disk_consistent_lsn` (ingest resumes
    /// after it and checks the next record's `xl_prev`).
    pub prev_record_lsn: Option<Lsn>,
    /// The parent branch, if this is a branch.
    pub ancestor_timeline: Option<TimelineId>,
    /// The branch point: this timeline sees the ancestor as of this LSN.
    pub ancestor_lsn: Lsn,
    /// Nothing below this LSN may be read (garbage collection, a later issue).
    pub latest_gc_cutoff_lsn: Lsn,
    /// Where the timeline's own history starts (initdb's or the import's LSN; for a
    /// branch, the branch point).
    pub initdb_lsn: Lsn,
    /// PostgreSQL major version (15).
    pub pg_version: u32,
}

/// Why the metadata file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid metadata.
    #[error("{path}: corrupt timeline metadata: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl TimelineMetadata {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain fields to JSON cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 14);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses [`TimelineMetadata::encode`]'s output; `Err` says what is wrong.
    pub fn decode(b: &[u8]) -> Result<TimelineMetadata, String> {
        if b.len() < 14 {
            return Err(format!("{} bytes is too short", b.len()));
        }
        let (payload, crc) = b.split_at(b.len() - 4);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(payload) != stored {
            return Err("checksum mismatch".into());
        }
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(format!("bad magic {magic:#010x}"));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let len = u32::from_be_bytes([b[6], b[7], b[8], b[9]]) as usize;
        if 10 + len != payload.len() {
            return Err("body length does not match the file".into());
        }
        serde_json::from_slice(&payload[10..]).map_err(|e| format!("body: {e}"))
    }

    /// Reads `dir/metadata`.
    pub fn load(dir: &Path) -> Result<TimelineMetadata, MetadataError> {
        let path = dir.join(METADATA_FILE);
        let b = std::fs::read(&path).map_err(|source| MetadataError::Io {
            path: path.clone(),
            source,
        })?;
        Self::decode(&b).map_err(|reason| MetadataError::Corrupt { path, reason })
    }

    /// Writes `dir/metadata` crash-safely.
    pub fn persist(&self, dir: &Path, sync: Sync) -> Result<(), MetadataError> {
        let path = dir.join(METADATA_FILE);
        crashsafe::overwrite(&path, &self.encode(), sync)
            .map_err(|source| MetadataError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: Lsn(0x1_6B5_A50),
            prev_record_lsn: Some(Lsn(0x1_6B5_A18)),
            ancestor_timeline: Some(TimelineId::generate()),
            ancestor_lsn: Lsn(0x1_0000),
            latest_gc_cutoff_lsn: Lsn(0),
            initdb_lsn: Lsn(0x1_0000),
            pg_version: 15,
        }
    }

    #[test]
    fn round_trip_and_persist() {
        let m = sample();
        assert_eq!(TimelineMetadata::decode(&m.encode()).unwrap(), m);
        let dir = tempfile::tempdir().unwrap();
        m.persist(dir.path(), Sync::No).unwrap();
        assert_eq!(TimelineMetadata::load(dir.path()).unwrap(), m);
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_refused() {
        let b = sample().encode();
        for i in 0..b.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = b.clone();
                bad[i] ^= bit;
                assert!(TimelineMetadata::decode(&bad).is_err(), "byte {i}");
            }
        }
        for n in 0..b.len() {
            assert!(TimelineMetadata::decode(&b[..n]).is_err());
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_FILE), b"garbage").unwrap();
        let e = TimelineMetadata::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metadata") && e.contains("corrupt"), "{e}");
    }
}
