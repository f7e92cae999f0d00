//! The per-timeline control file `safekeeper.control`: the acceptor's durable state.
//!
//! # File format
//! ```text
//! offset  size  field
//!      0     4  magic            b"SKCF"
//!      4     4  format_version   u32 little-endian (FORMAT_VERSION when written)
//!      8     4  body_len         u32 little-endian
//!     12     N  body             UTF-8 JSON of the state, in the layout of format_version
//!   12+N     4  crc32c           u32 little-endian, CRC-32C of every preceding byte
//! ```
//! The framing (magic, version, length, CRC) is the same for every version; only the body
//! changes. JSON keeps the file readable with `tail -c +13 safekeeper.control | head -c -4`
//! and makes additions cheap: LSNs are `"X/Y"` strings, ids 32-hex-digit strings, the term
//! history a list of `{"term", "lsn"}`.
//!
//! # Versions and upgrades
//! [`decode`] dispatches on the version; an older body is parsed in its own layout and
//! converted to [`TimelinePersistentState`] (upgraded in memory; the file is rewritten in the
//! current version the next time the state is persisted). A version newer than
//! [`FORMAT_VERSION`] is refused, so a rolled-back binary never silently drops state it does
//! not understand. Every change of the body — including a new field — bumps
//! [`FORMAT_VERSION`] and adds a conversion step here (a new field's step is usually "take
//! the default").
//!
//! * Version 0: the pre-release flat layout (term, history and server facts as top-level
//!   fields; no membership, `local_start_lsn` or creation time). No deployed safekeeper
//!   wrote it; it is kept so the upgrade chain is exercised by tests from the start.
//! * Version 1: [`TimelinePersistentState`].
//!
//! `control_file/fixtures/v<N>.control` holds a file of every version as that version
//! wrote it; the tests load each, and require the current version's to re-encode to the
//! same bytes, so a body change without a version bump cannot pass.
//!
//! # Durability
//! [`persist`] replaces the file with `utils::crashsafe::overwrite` (temp file, fsync,
//! rename, fsync of the directory): after a crash the file is the complete old or the
//! complete new state. A write that fails may have replaced the file anyway (the directory
//! fsync comes after the rename), so it breaks the [`ControlFileStore`]: every later change
//! is refused until the timeline is reloaded from disk. Any damage — wrong magic, bad length, CRC mismatch, unknown version,
//! undecodable or inconsistent body — is a [`ControlFileError`] naming the file; the
//! timeline then fails to load and the others keep serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use safekeeper_api::membership::Configuration;
use safekeeper_api::term::{Term, TermHistory, TermHistoryError};
use safekeeper_api::{INITIAL_TERM, ServerInfo};
use serde::{Deserialize, Serialize};
use utils::crashsafe::{self, Sync};
use utils::vfs::{self, OsFs, Vfs};
use utils::{Lsn, TenantId, TenantTimelineId, TimelineId};

use crate::metrics;

/// The control file's name in a timeline directory.
pub const CONTROL_FILE_NAME: &str = "safekeeper.control";
/// The first four bytes of every control file.
pub const MAGIC: [u8; 4] = *b"SKCF";
/// The version [`encode`] writes.
pub const FORMAT_VERSION: u32 = 1;
/// magic + version + body length.
const HEADER_LEN: usize = 12;
const CRC_LEN: usize = 4;
/// Control files are small; anything claiming more is damaged.
const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// Why a control file could not be read or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ControlFileError {
    /// An earlier write failed after it may have replaced the file (e.g. the directory
    /// fsync after the rename): what the file holds is unknown, so the store refuses every
    /// further change until the timeline is reloaded from disk.
    #[error("control file {}: broken by an earlier failed write ({reason}); reload the timeline", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// The failure that broke it.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("control file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Too short to hold even the framing, or shorter than its header says.
    #[error("control file {}: truncated: {len} bytes, expected {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The length the framing requires.
        expected: usize,
    },
    /// Longer than its header says.
    #[error("control file {}: {len} bytes, expected {expected}: trailing garbage", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The length the framing requires.
        expected: usize,
    },
    /// Not a safekeeper control file.
    #[error("control file {}: bad magic {found:02X?} (expected {MAGIC:02X?})", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The checksum does not match: the file is damaged.
    #[error(
        "control file {}: checksum mismatch (stored {stored:08X}, computed {computed:08X})",
        path.display()
    )]
    BadChecksum {
        /// The file.
        path: PathBuf,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of its content.
        computed: u32,
    },
    /// Written by a newer safekeeper.
    #[error(
        "control file {}: unsupported format version {version} (this safekeeper reads versions 0 to {FORMAT_VERSION})",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The body does not decode, or decodes to an impossible state.
    #[error("control file {}: invalid body (format version {version}): {msg}", path.display())]
    BadBody {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
        /// What is wrong.
        msg: String,
    },
    /// The state cannot be encoded (never happens for valid states).
    #[error("control file {}: cannot encode state: {msg}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
}

/// What the acceptor has promised: the highest term it voted for, and the history of terms
/// of the WAL it holds (which may run ahead of its WAL: it adopts an elected proposer's
/// history before catching up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest term voted for.
    pub term: Term,
    /// `(term, start LSN)` of every term in the log, ascending.
    pub term_history: TermHistory,
}

impl AcceptorState {
    /// The term of the last history entry at or below `flush_lsn` (`last_log_term`).
    pub fn last_log_term(&self, flush_lsn: Lsn) -> Term {
        self.term_history.last_log_term(flush_lsn)
    }
}

/// Everything a safekeeper persists about one timeline (format version 1).
///
/// Later state (WAL backup, partial-segment uploads, eviction) is added as new fields in a
/// new format version; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePersistentState {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Membership configuration; generation 0 = none (generation checks disabled).
    pub mconf: Configuration,
    /// Term and term history.
    pub acceptor_state: AcceptorState,
    /// The PostgreSQL server whose WAL this is.
    pub server: ServerInfo,
    /// Where the timeline's WAL begins (globally; the first proposer's start). 0 = not yet.
    pub timeline_start_lsn: Lsn,
    /// Where this safekeeper's WAL begins. 0 = no WAL yet.
    pub local_start_lsn: Lsn,
    /// WAL known committed (quorum-flushed and present locally); at a record boundary.
    pub commit_lsn: Lsn,
    /// End of the last segment fully uploaded to object storage.
    pub backup_lsn: Lsn,
    /// WAL below this is on every safekeeper (the proposer's truncate LSN).
    pub peer_horizon_lsn: Lsn,
    /// The minimum LSN pageservers have made durable in object storage.
    pub remote_consistent_lsn: Lsn,
    /// When the timeline was created on this safekeeper.
    pub creation_ts: SystemTime,
}

impl TimelinePersistentState {
    /// The state of a newly created timeline: term 0, no history, no WAL.
    pub fn new(
        ttid: TenantTimelineId,
        mconf: Configuration,
        server: ServerInfo,
        creation_ts: SystemTime,
    ) -> Self {
        TimelinePersistentState {
            tenant_id: ttid.tenant_id,
            timeline_id: ttid.timeline_id,
            mconf,
            acceptor_state: AcceptorState {
                term: INITIAL_TERM,
                term_history: TermHistory::empty(),
            },
            server,
            timeline_start_lsn: Lsn::INVALID,
            local_start_lsn: Lsn::INVALID,
            commit_lsn: Lsn::INVALID,
            backup_lsn: Lsn::INVALID,
            peer_horizon_lsn: Lsn::INVALID,
            remote_consistent_lsn: Lsn::INVALID,
            creation_ts,
        }
    }

    /// Which timeline.
    pub fn ttid(&self) -> TenantTimelineId {
        TenantTimelineId::new(self.tenant_id, self.timeline_id)
    }

    /// Checks the state is one the acceptor could have written.
    pub fn validate(&self) -> Result<(), String> {
        self.acceptor_state
            .term_history
            .validate()
            .map_err(|e: TermHistoryError| format!("term history: {e}"))?;
        if let Some(last) = self.acceptor_state.term_history.last()
            && last.term > self.acceptor_state.term
        {
            return Err(format!(
                "term history reaches term {} above the acceptor term {}",
                last.term, self.acceptor_state.term
            ));
        }
        if self.local_start_lsn.is_valid() && self.local_start_lsn < self.timeline_start_lsn {
            return Err(format!(
                "local_start_lsn {} is below timeline_start_lsn {}",
                self.local_start_lsn, self.timeline_start_lsn
            ));
        }
        if self.server.wal_seg_size != 0
            && !postgres_ffi::is_valid_wal_segment_size(u64::from(self.server.wal_seg_size))
        {
            return Err(format!("invalid wal_seg_size {}", self.server.wal_seg_size));
        }
        Ok(())
    }
}

/// Version 0's body (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StateV0 {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub term: Term,
    pub term_history: TermHistory,
    pub pg_version: u32,
    pub system_id: u64,
    pub wal_seg_size: u32,
    pub timeline_start_lsn: Lsn,
    pub commit_lsn: Lsn,
    pub backup_lsn: Lsn,
    pub peer_horizon_lsn: Lsn,
    pub remote_consistent_lsn: Lsn,
}

/// Version 0 → 1: no membership configuration (generation 0), local WAL starts where the
/// timeline does, creation time unknown (the epoch).
fn upgrade_v0(v0: StateV0) -> TimelinePersistentState {
    TimelinePersistentState {
        tenant_id: v0.tenant_id,
        timeline_id: v0.timeline_id,
        mconf: Configuration::empty(),
        acceptor_state: AcceptorState {
            term: v0.term,
            term_history: v0.term_history,
        },
        server: ServerInfo {
            pg_version: v0.pg_version,
            system_id: v0.system_id,
            wal_seg_size: v0.wal_seg_size,
        },
        timeline_start_lsn: v0.timeline_start_lsn,
        local_start_lsn: v0.timeline_start_lsn,
        commit_lsn: v0.commit_lsn,
        backup_lsn: v0.backup_lsn,
        peer_horizon_lsn: v0.peer_horizon_lsn,
        remote_consistent_lsn: v0.remote_consistent_lsn,
        creation_ts: SystemTime::UNIX_EPOCH,
    }
}

/// Frames `body` as a control file of `version`.
pub(crate) fn frame(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = postgres_ffi::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The file content for `state`, in the current format version. `path` only names the file
/// in errors.
pub fn encode(state: &TimelinePersistentState, path: &Path) -> Result<Vec<u8>, ControlFileError> {
    let body = serde_json::to_vec_pretty(state).map_err(|e| ControlFileError::Encode {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok(frame(FORMAT_VERSION, &body))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses a control file's content (any supported version), checking framing, checksum and
/// the state's consistency. `path` only names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<TimelinePersistentState, ControlFileError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(ControlFileError::Truncated {
            path: path_buf(),
            len: bytes.len(),
            expected: HEADER_LEN + CRC_LEN,
        });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != MAGIC {
        return Err(ControlFileError::BadMagic {
            path: path_buf(),
            found,
        });
    }
    let version = le_u32(&bytes[4..8]);
    let body_len = le_u32(&bytes[8..12]) as usize;
    if body_len > MAX_BODY_LEN {
        return Err(ControlFileError::BadBody {
            path: path_buf(),
            version,
            msg: format!("body length {body_len} exceeds the limit {MAX_BODY_LEN}"),
        });
    }
    let expected = HEADER_LEN + body_len + CRC_LEN;
    if bytes.len() < expected {
        return Err(ControlFileError::Truncated {
            path: path_buf(),
            len: bytes.len(),
            expected,
        });
    }
    if bytes.len() > expected {
        return Err(ControlFileError::TrailingBytes {
            path: path_buf(),
            len: bytes.len(),
            expected,
        });
    }
    let crc_at = HEADER_LEN + body_len;
    let stored = le_u32(&bytes[crc_at..]);
    let computed = postgres_ffi::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(ControlFileError::BadChecksum {
            path: path_buf(),
            stored,
            computed,
        });
    }
    let body = &bytes[HEADER_LEN..crc_at];
    let bad = |msg: String| ControlFileError::BadBody {
        path: path_buf(),
        version,
        msg,
    };
    let state = match version {
        0 => upgrade_v0(serde_json::from_slice::<StateV0>(body).map_err(|e| bad(e.to_string()))?),
        1 => serde_json::from_slice::<TimelinePersistentState>(body)
            .map_err(|e| bad(e.to_string()))?,
        _ => {
            return Err(ControlFileError::UnsupportedVersion {
                path: path_buf(),
                version,
            });
        }
    };
    state.validate().map_err(bad)?;
    Ok(state)
}

/// Reads and decodes the control file at `path`.
pub fn load(path: &Path) -> Result<TimelinePersistentState, ControlFileError> {
    load_in(&OsFs, path)
}

/// [`load`] from `fs`.
pub fn load_in(fs: &dyn Vfs, path: &Path) -> Result<TimelinePersistentState, ControlFileError> {
    let bytes = fs.read(path).map_err(|source| ControlFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Durably replaces the control file at `path` on `fs` with `state`.
pub fn persist(
    fs: &dyn Vfs,
    path: &Path,
    state: &TimelinePersistentState,
    sync: Sync,
) -> Result<(), ControlFileError> {
    let started = Instant::now();
    let bytes = encode(state, path)?;
    crashsafe::overwrite_in(fs, path, &bytes, sync).map_err(|source| ControlFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    metrics::PERSIST_CONTROL_FILE_SECONDS.observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// A timeline's control file and the state last persisted to it: the in-memory copy changes
/// only after the file did, so it never claims more than the disk holds.
#[derive(Debug)]
pub struct ControlFileStore {
    fs: Arc<dyn Vfs>,
    path: PathBuf,
    sync: Sync,
    state: TimelinePersistentState,
    /// Set by a failed write: see [`ControlFileError::Broken`].
    broken: Option<String>,
}

impl ControlFileStore {
    /// Loads `<dir>/safekeeper.control`.
    pub fn load(dir: &Path, sync: Sync) -> Result<Self, ControlFileError> {
        Self::load_in(vfs::os(), dir, sync)
    }

    /// [`ControlFileStore::load`] from `fs`, which its later writes (and the WAL storage
    /// opened over it) use too.
    pub fn load_in(fs: Arc<dyn Vfs>, dir: &Path, sync: Sync) -> Result<Self, ControlFileError> {
        let path = dir.join(CONTROL_FILE_NAME);
        let state = load_in(fs.as_ref(), &path)?;
        Ok(ControlFileStore {
            fs,
            path,
            sync,
            state,
            broken: None,
        })
    }

    /// Writes `state` as `<dir>/safekeeper.control` (replacing any file there).
    pub fn create(
        dir: &Path,
        state: TimelinePersistentState,
        sync: Sync,
    ) -> Result<Self, ControlFileError> {
        Self::create_in(vfs::os(), dir, state, sync)
    }

    /// [`ControlFileStore::create`] on `fs`.
    pub fn create_in(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        state: TimelinePersistentState,
        sync: Sync,
    ) -> Result<Self, ControlFileError> {
        let path = dir.join(CONTROL_FILE_NAME);
        persist(fs.as_ref(), &path, &state, sync)?;
        Ok(ControlFileStore {
            fs,
            path,
            sync,
            state,
            broken: None,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file system it lives on.
    pub fn fs(&self) -> &Arc<dyn Vfs> {
        &self.fs
    }

    /// The persisted state.
    pub fn state(&self) -> &TimelinePersistentState {
        &self.state
    }

    /// Durably replaces the state. On an I/O error the in-memory state stays the old one,
    /// but the file may already hold the new one (a failed directory fsync comes after the
    /// rename), so the store is [broken](ControlFileError::Broken) from then on: the
    /// in-memory copy can no longer claim to match the disk, and acting on it (answering
    /// in an older term than the one on disk, say) could break the protocol's promises.
    pub fn persist(&mut self, state: TimelinePersistentState) -> Result<(), ControlFileError> {
        self.check_not_broken()?;
        match persist(self.fs.as_ref(), &self.path, &state, self.sync) {
            Ok(()) => {
                self.state = state;
                Ok(())
            }
            Err(e) => {
                if matches!(e, ControlFileError::Io { .. }) {
                    tracing::error!("{e}: the timeline refuses further changes until reloaded");
                    self.broken = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// `Err(Broken)` once a write has failed (see [`ControlFileStore::persist`]).
    pub fn check_not_broken(&self) -> Result<(), ControlFileError> {
        match &self.broken {
            Some(reason) => Err(ControlFileError::Broken {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
