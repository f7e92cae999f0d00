//! The terms a compute's sidecar has won, persisted next to the compute's data directory.
//!
//! This is what lets a restarted sidecar continue its own compute's WAL (the donor's last
//! term is one of ours: the WAL on the safekeepers is what this compute wrote) while a
//! stale compute, whose WAL was continued by someone else, is refused (see
//! [`crate::stream_mode`]). A term is recorded **before** the sidecar proposes any WAL in
//! it, so a crash can lose nothing that matters: a term we won but never wrote in is
//! harmless to remember.
//!
//! Format: JSON `{"tenant_id", "timeline_id", "won_terms": [..]}`, written with
//! [`utils::crashsafe::overwrite`] (temp file, fsync, rename, fsync of the directory). A
//! file naming another timeline, or one that does not parse, is an error rather than an
//! empty set: forgetting terms could only make the sidecar refuse its own compute, but a
//! mix-up of directories is worth a clear message.

use std::io;
use std::path::{Path, PathBuf};

use safekeeper_api::term::Term;
use serde::{Deserialize, Serialize};
use utils::TenantTimelineId;
use utils::crashsafe::{self, Sync};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "walproposer.terms";

/// Why the won-terms file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WonTermsError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file does not parse.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file belongs to another timeline.
    #[error(
        "{path} belongs to timeline {found}, not {expected}: a state directory serves one compute"
    )]
    OtherTimeline {
        /// The file.
        path: PathBuf,
        /// Whose it is.
        found: TenantTimelineId,
        /// Ours.
        expected: TenantTimelineId,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    tenant_id: utils::TenantId,
    timeline_id: utils::TimelineId,
    won_terms: Vec<Term>,
}

/// The persisted set of won terms of one compute.
#[derive(Debug)]
pub struct WonTerms {
    path: PathBuf,
    ttid: TenantTimelineId,
    terms: Vec<Term>,
    sync: Sync,
}

impl WonTerms {
    /// Loads `<dir>/walproposer.terms`, or an empty set if it does not exist (the directory
    /// is created if needed).
    pub fn load(dir: &Path, ttid: TenantTimelineId, sync: Sync) -> Result<WonTerms, WonTermsError> {
        let path = dir.join(FILE_NAME);
        let io_err = |source| WonTermsError::Io {
            path: path.clone(),
            source,
        };
        crashsafe::create_dir_all(dir, sync).map_err(io_err)?;
        let terms = match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| WonTermsError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let found = TenantTimelineId::new(disk.tenant_id, disk.timeline_id);
                if found != ttid {
                    return Err(WonTermsError::OtherTimeline {
                        path,
                        found,
                        expected: ttid,
                    });
                }
                disk.won_terms
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(e)),
        };
        Ok(WonTerms {
            path,
            ttid,
            terms,
            sync,
        })
    }

    /// Whether this compute won `term`.
    pub fn contains(&self, term: Term) -> bool {
        self.terms.contains(&term)
    }

    /// The terms, oldest first.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Records `term` durably before returning.
    pub fn record(&mut self, term: Term) -> Result<(), WonTermsError> {
        if self.contains(term) {
            return Ok(());
        }
        self.terms.push(term);
        let disk = OnDisk {
            tenant_id: self.ttid.tenant_id,
            timeline_id: self.ttid.timeline_id,
            won_terms: self.terms.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).map_err(|e| WonTermsError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        crashsafe::overwrite(&self.path, &bytes, self.sync).map_err(|source| WonTermsError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reload_and_other_timelines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ttid = TenantTimelineId::generate();
        let mut w = WonTerms::load(dir.path(), ttid, Sync::No).unwrap();
        assert!(w.terms().is_empty());
        w.record(5).unwrap();
        w.record(7).unwrap();
        w.record(5).unwrap();
        let w = WonTerms::load(dir.path(), ttid, Sync::No).unwrap();
        assert_eq!(w.terms(), &[5, 7]);
        assert!(w.contains(7) && !w.contains(6));

        let other = TenantTimelineId::generate();
        let e = WonTerms::load(dir.path(), other, Sync::No).unwrap_err();
        assert!(e.to_string().contains("belongs to timeline"), "{e}");

        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = WonTerms::load(dir.path(), ttid, Sync::No).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
