//! WAL storage of one timeline: PostgreSQL-named segment files in the timeline directory.
//!
//! # Layout
//! Segments are named as PostgreSQL names them on timeline 1 (`000000010000000000000002`), and
//! are exactly `wal_seg_size` bytes long. The segment being written carries the `.partial`
//! suffix. A segment is created preallocated: a temp file is sized (and, where the file
//! system supports it, allocated) to the full segment size, then durably renamed to
//! `<name>.partial`; since its size never changes afterwards, `fdatasync` is enough to make
//! writes durable. When writing reaches a segment's end, the segment is fdatasynced and
//! renamed to its final name (no directory fsync: a `.partial` left by a crash below the
//! write position is renamed again when the storage is opened).
//!
//! The first segment of a timeline whose WAL starts mid-segment (at `local_start_lsn`) is
//! initialized with what PostgreSQL's walreceiver needs to accept it: a valid long page header,
//! valid short page headers up to the start, zeros elsewhere ([`synthesize_prefix`]).
//!
//! # Positions and invariants
//! * `write_lsn` (end of the bytes written) ≥ `write_record_lsn` (end of the last complete
//!   record written) ≥ `flush_lsn` (end of the last complete record that is fdatasynced).
//! * **`flush_lsn` is always a record boundary**: every byte is fed to a
//!   [`WalStreamDecoder`] before it is written, and only the end of a record whose last byte
//!   (alignment padding, or the rest of the segment after `XLOG_SWITCH`, included) is written
//!   counts. Bytes that do not decode are refused and never reach the disk.
//! * Appends are strictly sequential: `begin == write_lsn`, otherwise a gap or a rewrite
//!   error.
//! * **Nothing below `commit_lsn` is ever truncated**: [`PhysicalStorage::truncate`] refuses;
//!   the acceptor keeps [`PhysicalStorage::set_commit_lsn`] up to date, and the value loaded
//!   at start is the persisted one.
//! * Bytes after `write_lsn` in the open segment are zeros, and there are no segments past
//!   it: truncation and opening zero the tail and delete later segments.
//! * Every segment below the one holding `write_lsn` has its final name and was fdatasynced.
//! * A flush may be split so its fdatasync runs without the caller's lock
//!   ([`PhysicalStorage::begin_flush`], [`FlushTicket::sync`],
//!   [`PhysicalStorage::complete_flush`]): `flush_lsn` moves only to what the ticket covered
//!   and only after its fdatasync succeeded, never for a ticket made before positions were
//!   reset (truncation), and writes in between stay unflushed until a later flush.
//! * Any I/O error while writing, syncing or truncating leaves the storage *broken*: every
//!   later call fails until it is opened again (a failed fsync must never be retried and
//!   believed, and a half-done truncation is repaired by the scan on open).
//!
//! # Opening
//! [`PhysicalStorage::open`] scans from the persisted `commit_lsn` (from the start of its
//! segment, or from `local_start_lsn` in the first segment, so a `commit_lsn` that is not a
//! record boundary cannot mislead the scan) with
//! [`postgres_ffi::wal_segment::find_end_of_wal`], requires the end of valid WAL to be at
//! least `commit_lsn`, and truncates whatever follows (a torn record, garbage, an older
//! generation of WAL).
//!
//! One leniency, shared with PostgreSQL: the pages after an `XLOG_SWITCH` record up to the
//! segment end carry no WAL and are never read. While running, the switch counts as
//! complete only once they are written; after a crash, a complete switch record is enough,
//! and those pages may be zeros instead of the empty pages the proposer sent.
//!
//! # Sync code
//! This module does blocking file I/O on purpose: `pwrite`, `fdatasync`, `rename` and
//! `ftruncate` block in the kernel whatever the API, and tokio's fs wraps each one in its own
//! `spawn_blocking` hop. The server runs one WAL-acceptor task per connection; it calls this
//! storage from `spawn_blocking` (or a dedicated thread) for a whole batch of messages at a
//! time, which keeps one thread hop per batch rather than one per syscall, and keeps this
//! code and its crash tests simple.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::types::TimeLineId;
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig};
use postgres_ffi::wal_segment::{
    EndOfWalReason, PARTIAL_SUFFIX, find_end_of_wal_in_bytes, find_end_of_wal_with,
    parse_xlog_file_name, xlog_file_name,
};
use postgres_ffi::{PgMajorVersion, WalDecodeError, WalStreamDecoder};
use prometheus::IntGauge;
use tracing::{info, warn};
use utils::crashsafe::{self, Sync};
use utils::vfs::{OpenMode, Vfs, VfsFile};
use utils::{Lsn, TenantTimelineId};

use crate::metrics;

pub use crate::wal_reader::WalReader;

/// The PostgreSQL timeline id in segment names and page headers: always 1.
pub const PG_TLI: TimeLineId = 1;

/// The longest unflushed written WAL may wait for an fdatasync when appends keep coming.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What can go wrong with a timeline's WAL files. Every message names the directory or file,
/// and the LSNs involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Settings that cannot describe WAL.
    #[error("invalid WAL storage settings for {}: {msg}", dir.display())]
    InvalidConfig {
        /// The timeline directory.
        dir: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// No WAL position yet: the timeline never had a proposer elected.
    #[error("WAL storage in {} is not initialized yet (no proposer was ever elected)", dir.display())]
    NotInitialized {
        /// The timeline directory.
        dir: PathBuf,
    },
    /// Initialization of storage that already has WAL.
    #[error("WAL storage in {} is already initialized (WAL ends at {write_lsn})", dir.display())]
    AlreadyInitialized {
        /// The timeline directory.
        dir: PathBuf,
        /// Where its WAL ends.
        write_lsn: Lsn,
    },
    /// An append that starts after the end of the WAL.
    #[error("append at {begin} would create a gap: WAL in {} ends at {write_lsn}", dir.display())]
    Gap {
        /// The timeline directory.
        dir: PathBuf,
        /// The append's start.
        begin: Lsn,
        /// Where the WAL ends.
        write_lsn: Lsn,
    },
    /// An append that starts before the end of the WAL.
    #[error("append at {begin} would rewrite WAL: WAL in {} ends at {write_lsn}", dir.display())]
    Rewrite {
        /// The timeline directory.
        dir: PathBuf,
        /// The append's start.
        begin: Lsn,
        /// Where the WAL ends.
        write_lsn: Lsn,
    },
    /// Received bytes that are not valid WAL; nothing of that append was written.
    #[error("received invalid WAL for {}: {source}", dir.display())]
    InvalidWal {
        /// The timeline directory.
        dir: PathBuf,
        /// What the decoder found.
        #[source]
        source: WalDecodeError,
    },
    /// A truncation that would remove committed WAL.
    #[error(
        "refusing to truncate WAL in {} to {lsn}: below commit_lsn {commit_lsn}",
        dir.display()
    )]
    TruncateBelowCommit {
        /// The timeline directory.
        dir: PathBuf,
        /// The requested truncation point.
        lsn: Lsn,
        /// The commit LSN.
        commit_lsn: Lsn,
    },
    /// A truncation point outside the local WAL.
    #[error(
        "cannot truncate WAL in {} to {lsn}: local WAL is [{local_start_lsn}, {write_lsn})",
        dir.display()
    )]
    TruncateOutOfRange {
        /// The timeline directory.
        dir: PathBuf,
        /// The requested truncation point.
        lsn: Lsn,
        /// Where local WAL starts.
        local_start_lsn: Lsn,
        /// Where it ends.
        write_lsn: Lsn,
    },
    /// A truncation point inside a record.
    #[error(
        "cannot truncate WAL in {} to {lsn}: not a record boundary (valid WAL from the segment before reaches {found})",
        dir.display()
    )]
    NotRecordBoundary {
        /// The timeline directory.
        dir: PathBuf,
        /// The requested truncation point.
        lsn: Lsn,
        /// Where decoding got to.
        found: Lsn,
    },
    /// At start, valid WAL ends before the persisted commit LSN.
    #[error(
        "valid WAL in {} ends at {end_lsn}, below the persisted commit_lsn {commit_lsn} ({reason}): committed WAL is missing or corrupt",
        dir.display()
    )]
    CommittedWalMissing {
        /// The timeline directory.
        dir: PathBuf,
        /// Persisted commit LSN.
        commit_lsn: Lsn,
        /// End of valid WAL found.
        end_lsn: Lsn,
        /// Why the scan stopped.
        reason: String,
    },
    /// Segment files that contradict the invariants.
    #[error("WAL segments in {} are inconsistent: {msg}", dir.display())]
    Inconsistent {
        /// The timeline directory.
        dir: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// An earlier I/O failure left the storage unusable until it is opened again.
    #[error("WAL storage in {} is unusable after an earlier failure: {msg}", dir.display())]
    Broken {
        /// The timeline directory.
        dir: PathBuf,
        /// The earlier failure.
        msg: String,
    },
    /// A read of WAL the timeline does not have locally.
    #[error("WAL at {lsn} is not available in {}: {msg}", dir.display())]
    NotAvailable {
        /// The timeline directory.
        dir: PathBuf,
        /// The requested position.
        lsn: Lsn,
        /// Why.
        msg: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Everything that fixes how a timeline's WAL looks on disk.
#[derive(Debug, Clone)]
pub struct WalStorageConfig {
    /// The file system the files live on ([`utils::vfs::os`] but in the simulation).
    pub fs: Arc<dyn Vfs>,
    /// The timeline directory.
    pub dir: PathBuf,
    /// Which timeline (metric labels).
    pub ttid: TenantTimelineId,
    /// `wal_segment_size`.
    pub seg_size: u64,
    /// The PostgreSQL major version (page magic).
    pub pg_version: PgMajorVersion,
    /// The cluster's system identifier; 0 if not known yet (then not checked).
    pub system_id: u64,
    /// Whether to fsync ([`Sync::No`] for `--no-sync` and tests).
    pub sync: Sync,
}

impl WalStorageConfig {
    /// Decoder settings for this WAL.
    pub fn decoder_config(&self) -> WalDecoderConfig {
        WalDecoderConfig {
            version: self.pg_version,
            seg_size: self.seg_size,
            system_id: (self.system_id != 0).then_some(self.system_id),
        }
    }

    /// Page-header settings for WAL this safekeeper synthesizes.
    pub fn writer_config(&self) -> WalWriterConfig {
        WalWriterConfig {
            version: self.pg_version,
            seg_size: self.seg_size,
            system_id: self.system_id,
            timeline: PG_TLI,
        }
    }

    fn validate(&self) -> Result<(), StorageError> {
        if !postgres_ffi::is_valid_wal_segment_size(self.seg_size) {
            return Err(StorageError::InvalidConfig {
                dir: self.dir.clone(),
                msg: format!(
                    "wal_seg_size {} is not a power of two between 1 MiB and 1 GiB",
                    self.seg_size
                ),
            });
        }
        Ok(())
    }
}

/// The persisted positions the storage opens from (from the control file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalStartPositions {
    /// Where this safekeeper's WAL begins (invalid: no WAL yet).
    pub local_start_lsn: Lsn,
    /// The persisted commit LSN: valid WAL must reach at least here.
    pub commit_lsn: Lsn,
}

/// One segment file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentFile {
    partial: bool,
}

/// Path of segment `segno` in `dir`, final or `.partial`.
pub fn segment_path(dir: &Path, segno: u64, seg_size: u64, partial: bool) -> PathBuf {
    let name = xlog_file_name(PG_TLI, segno, seg_size);
    if partial {
        dir.join(format!("{name}{PARTIAL_SUFFIX}"))
    } else {
        dir.join(name)
    }
}

/// The segment files in `dir`, by number. Two names for one segment is an error.
fn list_segments(
    fs: &dyn Vfs,
    dir: &Path,
    seg_size: u64,
) -> Result<BTreeMap<u64, SegmentFile>, StorageError> {
    let mut segs = BTreeMap::new();
    for name in fs.read_dir(dir).map_err(io_err("read directory", dir))? {
        let Some(name) = name.to_str() else { continue };
        let Some((segno, tli)) = parse_xlog_file_name(name, seg_size) else {
            continue;
        };
        if tli != PG_TLI {
            continue;
        }
        let partial = name.ends_with(PARTIAL_SUFFIX);
        if segs.insert(segno, SegmentFile { partial }).is_some() {
            return Err(StorageError::Inconsistent {
                dir: dir.to_path_buf(),
                msg: format!(
                    "segment {} exists both complete and as .partial",
                    xlog_file_name(PG_TLI, segno, seg_size)
                ),
            });
        }
    }
    Ok(segs)
}

/// The bytes of the segment holding `upto` that precede it, as this safekeeper serves them:
/// a valid long page header on the segment's first page, a valid short header on every later
/// page that starts before `upto`, zeros elsewhere. Empty when `upto` is a segment start.
pub fn synthesize_prefix(config: WalWriterConfig, upto: Lsn) -> Vec<u8> {
    let seg_start = upto.segment_start(config.seg_size);
    let mut w = WalWriter::new(config, seg_start, Lsn::INVALID);
    w.fill_until(upto);
    let mut bytes = w.into_bytes();
    // `fill_until` finishes a page header it started; a start inside a header is invalid
    // anyway, but never return more than asked.
    bytes.truncate((upto.0 - seg_start.0) as usize);
    bytes
}

/// Whether WAL could start at `lsn`: a page boundary, or a `MAXALIGN`ed position after the
/// page header (long on a segment's first page, short elsewhere). The one definition,
/// used by [`PhysicalStorage::check_start_lsn`] and timeline creation.
pub fn is_possible_start_lsn(lsn: Lsn, seg_size: u64) -> bool {
    let header = postgres_ffi::xlog_page::page_header_size(lsn.page_start(), seg_size) as u64;
    lsn.is_valid() && (lsn.page_offset() == 0 || (lsn.is_aligned() && lsn.page_offset() >= header))
}

/// Creates segment `segno` as `<name>.partial`, full size, with `prefix` at its start:
/// written as a temp file and durably renamed, so the segment exists whole or not at all.
fn create_segment(
    fs: &dyn Vfs,
    dir: &Path,
    segno: u64,
    seg_size: u64,
    prefix: &[u8],
    sync: Sync,
) -> Result<Arc<dyn VfsFile>, StorageError> {
    let path = segment_path(dir, segno, seg_size, true);
    let temp = crashsafe::temp_path_for(&path);
    let file = fs
        .open(&temp, OpenMode::CreateTruncate)
        .map_err(io_err("create", &temp))?;
    let filled = (|| {
        file.set_len(seg_size)
            .map_err(io_err("set length of", &temp))?;
        preallocate(file.as_ref(), seg_size, &temp)?;
        if !prefix.is_empty() {
            file.write_all_at(prefix, 0)
                .map_err(io_err("write", &temp))?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        // A segment whose blocks could not be allocated is never renamed into place.
        let _ = fs.remove_file(&temp);
        return Err(e);
    }
    crashsafe::durable_rename_in(fs, &temp, &path, sync)
        .map_err(io_err("create segment", &path))?;
    Ok(file)
}

/// Allocates a new segment's blocks now, so that running out of space fails the segment's
/// creation (before any WAL is acknowledged into it) rather than a later write or
/// fdatasync. A file system without `fallocate` gets the zeros written instead; any other
/// failure (ENOSPC, EDQUOT, EIO) is the creation's error.
fn preallocate(file: &dyn VfsFile, len: u64, path: &Path) -> Result<(), StorageError> {
    match file.allocate(len) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            let zeros = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], off)
                    .map_err(io_err("write zeros into", path))?;
                off += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(io_err("preallocate", path)(e)),
    }
}

/// Deletes the complete segments of `dir` that lie entirely below `horizon` (segment number
/// below `horizon`'s); never a `.partial`. Returns the removed segment numbers.
///
/// The caller computes the horizon (see `Timeline::wal_removal_horizon`): it must not exceed
/// what pageservers have made durable remotely, what is backed up, or `commit_lsn`.
pub fn remove_segments_below(
    config: &WalStorageConfig,
    horizon: Lsn,
) -> Result<Vec<u64>, StorageError> {
    let (fs, dir, seg_size) = (config.fs.as_ref(), config.dir.as_path(), config.seg_size);
    let limit = horizon.segment_number(seg_size);
    let mut removed = Vec::new();
    for (segno, f) in list_segments(fs, dir, seg_size)? {
        if segno >= limit {
            break;
        }
        if f.partial {
            continue;
        }
        let path = segment_path(dir, segno, seg_size, false);
        fs.remove_file(&path).map_err(io_err("remove", &path))?;
        removed.push(segno);
    }
    if !removed.is_empty() {
        crashsafe::fsync_dir_in(fs, dir, config.sync).map_err(io_err("fsync directory", dir))?;
    }
    Ok(removed)
}

/// A flush prepared by [`PhysicalStorage::begin_flush`]: a duplicate descriptor of the open
/// segment and the record boundary that becomes durable once it is fdatasynced. Every byte
/// up to that boundary was written before the ticket was made, and every earlier segment
/// was fdatasynced when it was completed, so one fdatasync of this descriptor makes it all
/// durable. Made under the caller's lock, synced without it, completed under it again.
#[derive(Debug)]
pub struct FlushTicket {
    /// The open segment's number and a shared handle of it; `None` when there is nothing
    /// to sync (nothing written since the last sync, or `Sync::No`).
    file: Option<(u64, Arc<dyn VfsFile>)>,
    dir: PathBuf,
    seg_size: u64,
    /// `write_lsn` when the ticket was made.
    write_lsn: Lsn,
    /// The flush LSN this ticket makes good: the last complete record written.
    upto: Lsn,
    epoch: u64,
}

impl FlushTicket {
    /// The record boundary this ticket makes durable.
    pub fn upto(&self) -> Lsn {
        self.upto
    }

    /// Runs the fdatasync (blocking; no lock needed).
    pub fn sync(&self) -> Result<(), StorageError> {
        let Some((segno, file)) = &self.file else {
            return Ok(());
        };
        let started = Instant::now();
        file.sync_data().map_err(|source| StorageError::Io {
            op: "fdatasync",
            path: segment_path(&self.dir, *segno, self.seg_size, true),
            source,
        })?;
        metrics::FLUSH_WAL_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The WAL segments of one timeline, with positions tracked at record boundaries.
#[derive(Debug)]
pub struct PhysicalStorage {
    config: WalStorageConfig,
    local_start_lsn: Lsn,
    /// Truncation never goes below this.
    commit_lsn: Lsn,
    write_lsn: Lsn,
    write_record_lsn: Lsn,
    /// End of a decoded record whose padding (or post-switch tail) is not all written yet.
    pending_record_end: Option<Lsn>,
    flush_lsn: Lsn,
    decoder: WalStreamDecoder,
    /// The decoder refused received bytes; it accepts nothing until a truncation.
    decoder_failed: bool,
    /// The open segment (always `.partial`) and its number.
    file: Option<(u64, Arc<dyn VfsFile>)>,
    /// Writes to `file` not yet fdatasynced.
    dirty: bool,
    /// When the oldest unflushed write happened.
    unflushed_since: Option<Instant>,
    /// Bumped whenever positions are reset (truncation, initialization): a
    /// [`FlushTicket`] from an older epoch describes WAL that may be gone.
    epoch: u64,
    broken: Option<String>,
    flush_gauge: IntGauge,
}

impl PhysicalStorage {
    /// Opens a timeline's WAL: finds the end of valid WAL from the persisted commit LSN and
    /// truncates anything after it. With no segments and no `local_start_lsn`, the storage is
    /// uninitialized until [`PhysicalStorage::initialize`].
    pub fn open(config: WalStorageConfig, start: WalStartPositions) -> Result<Self, StorageError> {
        config.validate()?;
        let dir = config.dir.clone();
        crashsafe::remove_temp_files_in(config.fs.as_ref(), &dir, config.sync)
            .map_err(io_err("clean up", &dir))?;
        let segs = list_segments(config.fs.as_ref(), &dir, config.seg_size)?;
        let mut storage = PhysicalStorage {
            decoder: WalStreamDecoder::new(Lsn::INVALID, config.decoder_config()),
            decoder_failed: false,
            flush_gauge: metrics::flush_lsn_gauge(&config.ttid),
            config,
            local_start_lsn: start.local_start_lsn,
            commit_lsn: start.commit_lsn,
            write_lsn: Lsn::INVALID,
            write_record_lsn: Lsn::INVALID,
            pending_record_end: None,
            flush_lsn: Lsn::INVALID,
            file: None,
            dirty: false,
            unflushed_since: None,
            epoch: 0,
            broken: None,
        };
        if !start.local_start_lsn.is_valid() {
            if let Some(segno) = segs.keys().next() {
                return Err(StorageError::Inconsistent {
                    dir,
                    msg: format!(
                        "segment {} exists but the timeline has no local_start_lsn",
                        xlog_file_name(PG_TLI, *segno, storage.config.seg_size)
                    ),
                });
            }
            return Ok(storage);
        }
        if segs.is_empty() {
            // The control file was persisted with the start, the crash came before the first
            // segment was created: nothing was ever appended, so create it now.
            if start.commit_lsn > start.local_start_lsn {
                return Err(StorageError::CommittedWalMissing {
                    dir,
                    commit_lsn: start.commit_lsn,
                    end_lsn: start.local_start_lsn,
                    reason: "no segment files".to_string(),
                });
            }
            storage.create_first_segment(start.local_start_lsn)?;
            return Ok(storage);
        }
        storage.recover(&segs)?;
        Ok(storage)
    }

    /// Scans for the end of valid WAL and cuts the tail after it.
    fn recover(&mut self, segs: &BTreeMap<u64, SegmentFile>) -> Result<(), StorageError> {
        let dir = self.config.dir.clone();
        let seg_size = self.config.seg_size;
        let commit = self.commit_lsn;
        let mut scan_start = if commit.is_valid() {
            self.local_start_lsn.max(commit.segment_start(seg_size))
        } else {
            self.local_start_lsn
        };
        let fs = self.config.fs.as_ref();
        let scan = |from: Lsn| {
            find_end_of_wal_with(from, self.config.decoder_config(), |segno| {
                let Some(f) = segs.get(&segno) else {
                    return Ok(None);
                };
                let path = segment_path(&dir, segno, seg_size, f.partial);
                fs.read(&path).map(Some)
            })
            .map_err(io_err("scan WAL in", &dir))
        };
        let eow = loop {
            let eow = scan(scan_start)?;
            if eow.last_record_lsn.is_some()
                || eow.end_lsn >= commit
                || scan_start <= self.local_start_lsn
            {
                break eow;
            }
            // No record starts between the segment start and commit_lsn: the record ending
            // at commit_lsn began in an earlier segment (the scan saw only its continuation).
            // Scan from that segment; if it was removed, from commit_lsn itself, a record
            // boundary (then the link back to the previous record cannot be checked).
            let prev_segno = Lsn(scan_start.0 - 1).segment_number(seg_size);
            if segs.contains_key(&prev_segno) {
                scan_start = self.local_start_lsn.max(Lsn(scan_start.0 - seg_size));
            } else {
                break scan(commit)?;
            }
        };
        let end = eow.end_lsn;
        let reason = match &eow.reason {
            EndOfWalReason::EndOfInput => "end of segment files".to_string(),
            EndOfWalReason::Invalid(e) => e.to_string(),
        };
        if end < commit {
            return Err(StorageError::CommittedWalMissing {
                dir,
                commit_lsn: commit,
                end_lsn: end,
                reason,
            });
        }
        if let EndOfWalReason::Invalid(e) = &eow.reason
            && !e.is_zeroed()
        {
            warn!(dir = %dir.display(), %end, "WAL ends with invalid bytes, truncating: {e}");
        }
        let end_seg = end.segment_number(seg_size);
        // Segments wholly below the end are complete: give them their final names.
        for (&segno, f) in segs.range(..end_seg) {
            if f.partial {
                let from = segment_path(&dir, segno, seg_size, true);
                let to = segment_path(&dir, segno, seg_size, false);
                crashsafe::durable_rename_in(fs, &from, &to, self.config.sync)
                    .map_err(io_err("complete segment", &from))?;
            }
        }
        self.cut_tail(end, segs)?;
        info!(dir = %dir.display(), flush_lsn = %end, commit_lsn = %commit, "opened WAL storage");
        // The next record must link back to the last one, as in one uninterrupted write.
        self.reset_positions(end, eow.last_record_lsn);
        Ok(())
    }

    /// Deletes segments after the one holding `lsn` (highest first, so every intermediate
    /// state is a prefix), zeros that segment from `lsn` on and names it `.partial`.
    fn cut_tail(
        &mut self,
        lsn: Lsn,
        segs: &BTreeMap<u64, SegmentFile>,
    ) -> Result<(), StorageError> {
        let dir = self.config.dir.clone();
        let seg_size = self.config.seg_size;
        let sync = self.config.sync;
        let fs = Arc::clone(&self.config.fs);
        let target = lsn.segment_number(seg_size);
        self.file = None;
        self.dirty = false;
        for (&segno, f) in segs.range(target + 1..).rev() {
            let path = segment_path(&dir, segno, seg_size, f.partial);
            fs.remove_file(&path).map_err(io_err("remove", &path))?;
        }
        if let Some(f) = segs.get(&target) {
            let path = segment_path(&dir, target, seg_size, f.partial);
            let file = fs
                .open(&path, OpenMode::ReadWrite)
                .map_err(io_err("open", &path))?;
            let off = lsn.segment_offset(seg_size);
            file.set_len(off).map_err(io_err("truncate", &path))?;
            file.set_len(seg_size).map_err(io_err("extend", &path))?;
            if sync == Sync::Yes {
                file.sync_all().map_err(io_err("fsync", &path))?;
            }
            if !f.partial {
                let partial = segment_path(&dir, target, seg_size, true);
                crashsafe::durable_rename_in(fs.as_ref(), &path, &partial, sync)
                    .map_err(io_err("reopen segment", &path))?;
            }
            self.file = Some((target, file));
        } else if lsn.segment_offset(seg_size) != 0 {
            return Err(StorageError::Inconsistent {
                dir,
                msg: format!(
                    "segment {} holding {lsn} is missing",
                    xlog_file_name(PG_TLI, target, seg_size)
                ),
            });
        }
        crashsafe::fsync_dir_in(fs.as_ref(), &dir, sync)
            .map_err(io_err("fsync directory", &dir))?;
        Ok(())
    }

    /// Positions at `lsn`, a record boundary; `prev_record` is the start of the record that
    /// ends there (checked against the next record's `xl_prev`), if there is one.
    fn reset_positions(&mut self, lsn: Lsn, prev_record: Option<Lsn>) {
        self.epoch += 1;
        self.write_lsn = lsn;
        self.write_record_lsn = lsn;
        self.flush_lsn = lsn;
        self.pending_record_end = None;
        self.dirty = false;
        self.unflushed_since = None;
        let decoder = WalStreamDecoder::new(lsn, self.config.decoder_config());
        self.decoder_failed = false;
        self.decoder = match prev_record {
            Some(prev) => decoder.with_prev_record(prev),
            None => decoder,
        };
        metrics::set_lsn(&self.flush_gauge, lsn);
    }

    /// Checks that `lsn` is a record boundary of the local WAL and finds the start of the
    /// record ending there (`None` at the local start). Reads back from the segment before
    /// `lsn`'s, further only while no record starts in what was read (a huge record).
    fn record_ending_at(&self, lsn: Lsn) -> Result<Option<Lsn>, StorageError> {
        let seg_size = self.config.seg_size;
        if lsn <= self.local_start_lsn {
            return Ok(None);
        }
        let mut from = self
            .local_start_lsn
            .max(Lsn(lsn.0 - 1).segment_start(seg_size));
        loop {
            let data = match WalReader::new(&self.config, self.local_start_lsn, from)
                .and_then(|mut r| r.read_to_vec(lsn))
            {
                Ok(data) => data,
                // The segment before was removed (the removal horizon reached `lsn`): then
                // `lsn` is the commit LSN, a known record boundary, and the link back to the
                // previous record cannot be checked.
                Err(StorageError::NotAvailable { .. }) if lsn == self.commit_lsn => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let eow = find_end_of_wal_in_bytes(from, &data, self.config.decoder_config());
            if eow.end_lsn == lsn {
                return Ok(eow.last_record_lsn);
            }
            if eow.last_record_lsn.is_some() || from == self.local_start_lsn {
                return Err(StorageError::NotRecordBoundary {
                    dir: self.config.dir.clone(),
                    lsn,
                    found: eow.end_lsn,
                });
            }
            from = self.local_start_lsn.max(Lsn(from.0 - seg_size));
        }
    }

    fn create_first_segment(&mut self, local_start_lsn: Lsn) -> Result<(), StorageError> {
        let seg_size = self.config.seg_size;
        let prefix = synthesize_prefix(self.config.writer_config(), local_start_lsn);
        let segno = local_start_lsn.segment_number(seg_size);
        let file = create_segment(
            self.config.fs.as_ref(),
            &self.config.dir,
            segno,
            seg_size,
            &prefix,
            self.config.sync,
        )?;
        self.file = Some((segno, file));
        self.local_start_lsn = local_start_lsn;
        self.reset_positions(local_start_lsn, None);
        Ok(())
    }

    /// Checks that WAL could start at `lsn`: a page boundary, or a `MAXALIGN`ed position
    /// after the page header.
    pub fn check_start_lsn(&self, lsn: Lsn) -> Result<(), StorageError> {
        if is_possible_start_lsn(lsn, self.config.seg_size) {
            Ok(())
        } else {
            Err(StorageError::InvalidConfig {
                dir: self.config.dir.clone(),
                msg: format!("WAL cannot start at {lsn}: not a possible record start"),
            })
        }
    }

    /// Creates the first segment for WAL starting at `local_start_lsn` (a record or page
    /// boundary): the bytes before it in its segment are a synthesized prefix
    /// ([`synthesize_prefix`]). Only for storage without WAL.
    pub fn initialize(&mut self, local_start_lsn: Lsn) -> Result<(), StorageError> {
        self.check_usable()?;
        self.check_start_lsn(local_start_lsn)?;
        if self.write_lsn.is_valid() {
            return Err(StorageError::AlreadyInitialized {
                dir: self.config.dir.clone(),
                write_lsn: self.write_lsn,
            });
        }
        let segs = list_segments(
            self.config.fs.as_ref(),
            &self.config.dir,
            self.config.seg_size,
        )?;
        if !segs.is_empty() {
            return Err(StorageError::Inconsistent {
                dir: self.config.dir.clone(),
                msg: "segment files exist in storage that has no WAL".to_string(),
            });
        }
        self.create_first_segment(local_start_lsn)
            .inspect_err(|e| self.broken = Some(e.to_string()))
    }

    /// The settings.
    pub fn config(&self) -> &WalStorageConfig {
        &self.config
    }

    /// Whether there is a WAL position (a proposer was elected at least once).
    pub fn is_initialized(&self) -> bool {
        self.write_lsn.is_valid()
    }

    /// End of the bytes written (not necessarily a record boundary, nor durable).
    pub fn write_lsn(&self) -> Lsn {
        self.write_lsn
    }

    /// End of the last complete record written (not necessarily durable).
    pub fn write_record_lsn(&self) -> Lsn {
        self.write_record_lsn
    }

    /// End of the last complete record that is durable: the flush LSN reported to proposers.
    pub fn flush_lsn(&self) -> Lsn {
        self.flush_lsn
    }

    /// Where this safekeeper's WAL begins.
    pub fn local_start_lsn(&self) -> Lsn {
        self.local_start_lsn
    }

    /// Raises the truncation floor (never lowers it).
    pub fn set_commit_lsn(&mut self, commit_lsn: Lsn) {
        self.commit_lsn = self.commit_lsn.max(commit_lsn);
    }

    /// Sets the system identifier once it becomes known (checked in long page headers of
    /// WAL received from now on).
    pub fn set_system_id(&mut self, system_id: u64) {
        self.config.system_id = system_id;
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.broken {
            Some(msg) => Err(StorageError::Broken {
                dir: self.config.dir.clone(),
                msg: msg.clone(),
            }),
            None => Ok(()),
        }
    }

    fn check_initialized(&self) -> Result<(), StorageError> {
        self.check_usable()?;
        if !self.write_lsn.is_valid() {
            return Err(StorageError::NotInitialized {
                dir: self.config.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends `buf`, which must start at the end of the WAL, after checking it decodes.
    /// Not durable until [`PhysicalStorage::flush`].
    pub fn write_wal(&mut self, begin: Lsn, buf: &[u8]) -> Result<(), StorageError> {
        // Tests make this `panic` to check that a panic under the acceptor lock breaks the
        // timeline rather than leaving it half-updated.
        let _ = utils::failpoint::eval("wal-storage-write");
        self.check_initialized()?;
        if begin != self.write_lsn {
            let (dir, write_lsn) = (self.config.dir.clone(), self.write_lsn);
            return Err(if begin > write_lsn {
                StorageError::Gap {
                    dir,
                    begin,
                    write_lsn,
                }
            } else {
                StorageError::Rewrite {
                    dir,
                    begin,
                    write_lsn,
                }
            });
        }
        if buf.is_empty() {
            return Ok(());
        }
        let end = Lsn(begin.0 + buf.len() as u64);
        // Decode first: invalid bytes never reach the disk. The decoder's error is sticky, so
        // nothing more is accepted until a truncation resets it.
        let mut complete = self.write_record_lsn;
        let mut pending = self.pending_record_end;
        if let Some(p) = pending
            && p <= end
        {
            complete = p;
            pending = None;
        }
        self.decoder.feed_bytes(buf);
        loop {
            match self.decoder.poll_decode() {
                Ok(Some((_, rec_end, _))) => {
                    if rec_end <= end {
                        complete = rec_end;
                        pending = None;
                    } else {
                        pending = Some(rec_end);
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    self.decoder_failed = true;
                    return Err(StorageError::InvalidWal {
                        dir: self.config.dir.clone(),
                        source,
                    });
                }
            }
        }
        let started = Instant::now();
        if let Err(e) = self.write_bytes(begin, buf) {
            self.broken = Some(e.to_string());
            return Err(e);
        }
        metrics::WRITE_WAL_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::WAL_RECEIVED_BYTES.inc_by(buf.len() as u64);
        self.write_lsn = end;
        self.write_record_lsn = complete;
        self.pending_record_end = pending;
        self.unflushed_since.get_or_insert(started);
        Ok(())
    }

    fn open_segment(&mut self, segno: u64) -> Result<&dyn VfsFile, StorageError> {
        let dir = &self.config.dir;
        let fs = self.config.fs.as_ref();
        let seg_size = self.config.seg_size;
        if self.file.as_ref().is_none_or(|(n, _)| *n != segno) {
            let path = segment_path(dir, segno, seg_size, true);
            let file = match fs.open(&path, OpenMode::ReadWrite) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let complete = segment_path(dir, segno, seg_size, false);
                    if fs
                        .is_file(&complete)
                        .map_err(io_err("look up", &complete))?
                    {
                        return Err(StorageError::Inconsistent {
                            dir: dir.clone(),
                            msg: format!(
                                "writing into completed segment {}",
                                xlog_file_name(PG_TLI, segno, seg_size)
                            ),
                        });
                    }
                    create_segment(fs, dir, segno, seg_size, &[], self.config.sync)?
                }
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            self.file = Some((segno, file));
            self.dirty = false;
        }
        self.file
            .as_ref()
            .map(|(_, f)| f.as_ref())
            .ok_or_else(|| StorageError::Inconsistent {
                dir: dir.clone(),
                msg: "no open segment".to_string(),
            })
    }

    fn write_bytes(&mut self, begin: Lsn, buf: &[u8]) -> Result<(), StorageError> {
        let seg_size = self.config.seg_size;
        let mut pos = begin;
        let mut rest = buf;
        while !rest.is_empty() {
            let segno = pos.segment_number(seg_size);
            let off = pos.segment_offset(seg_size);
            let n = rest.len().min((seg_size - off) as usize);
            let file = self.open_segment(segno)?;
            file.write_all_at(&rest[..n], off)
                .map_err(|source| StorageError::Io {
                    op: "write",
                    path: segment_path(&self.config.dir, segno, seg_size, true),
                    source,
                })?;
            self.dirty = true;
            pos = Lsn(pos.0 + n as u64);
            rest = &rest[n..];
            if pos.segment_offset(seg_size) == 0 {
                self.complete_segment(segno)?;
            }
        }
        Ok(())
    }

    /// fdatasyncs the full open segment and gives it its final name.
    fn complete_segment(&mut self, segno: u64) -> Result<(), StorageError> {
        self.sync_open_file()?;
        self.file = None;
        let from = segment_path(&self.config.dir, segno, self.config.seg_size, true);
        let to = segment_path(&self.config.dir, segno, self.config.seg_size, false);
        // No directory fsync: if the rename is lost, opening renames it again.
        self.config
            .fs
            .rename(&from, &to)
            .map_err(io_err("complete segment", &from))
    }

    fn sync_open_file(&mut self) -> Result<(), StorageError> {
        if let Some((segno, file)) = &self.file
            && self.dirty
        {
            if self.config.sync == Sync::Yes {
                let started = Instant::now();
                file.sync_data().map_err(|source| StorageError::Io {
                    op: "fdatasync",
                    path: segment_path(&self.config.dir, *segno, self.config.seg_size, true),
                    source,
                })?;
                metrics::FLUSH_WAL_SECONDS.observe(started.elapsed().as_secs_f64());
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Makes everything written durable (fdatasync) and advances the flush LSN to the end
    /// of the last complete record written.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_initialized()?;
        if let Err(e) = self.sync_open_file() {
            self.broken = Some(e.to_string());
            return Err(e);
        }
        self.flush_lsn = self.write_record_lsn;
        self.unflushed_since = None;
        metrics::set_lsn(&self.flush_gauge, self.flush_lsn);
        Ok(())
    }

    /// Prepares a flush whose fdatasync runs outside the caller's lock (see [`FlushTicket`]):
    /// the ticket covers everything written so far. Writes may go on meanwhile; nothing is
    /// reported durable until [`PhysicalStorage::complete_flush`], and a synchronous
    /// [`PhysicalStorage::flush`] in between still syncs by itself.
    pub fn begin_flush(&mut self) -> Result<FlushTicket, StorageError> {
        self.check_initialized()?;
        let file = match &self.file {
            Some((segno, f)) if self.dirty && self.config.sync == Sync::Yes => {
                Some((*segno, Arc::clone(f)))
            }
            _ => None,
        };
        Ok(FlushTicket {
            file,
            dir: self.config.dir.clone(),
            seg_size: self.config.seg_size,
            write_lsn: self.write_lsn,
            upto: self.write_record_lsn,
            epoch: self.epoch,
        })
    }

    /// Takes the outcome of a ticket's [`FlushTicket::sync`]: on success the flush LSN moves
    /// to the ticket's end (unless the WAL was truncated since the ticket was made); a
    /// failed fdatasync leaves the storage broken, as in [`PhysicalStorage::flush`].
    pub fn complete_flush(
        &mut self,
        ticket: FlushTicket,
        synced: Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        if let Err(e) = synced {
            self.broken = Some(e.to_string());
            return Err(e);
        }
        if ticket.epoch != self.epoch {
            return Ok(());
        }
        if ticket.write_lsn == self.write_lsn {
            // Nothing was written since the ticket: everything is durable now.
            self.dirty = false;
            self.unflushed_since = None;
        }
        if ticket.upto > self.flush_lsn {
            self.flush_lsn = ticket.upto;
            metrics::set_lsn(&self.flush_gauge, self.flush_lsn);
        }
        Ok(())
    }

    /// Whether written WAL has waited [`FLUSH_INTERVAL`] or longer for a flush: the caller
    /// flushes when its input queue drains, and also whenever this says so.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.unflushed_since
            .is_some_and(|t| now.saturating_duration_since(t) >= FLUSH_INTERVAL)
    }

    /// Whether written WAL awaits a flush.
    pub fn has_unflushed(&self) -> bool {
        self.unflushed_since.is_some()
    }

    /// Cuts the WAL back to `lsn` (a record boundary): later segments are deleted, the rest
    /// of `lsn`'s segment is zeroed, and it becomes the open `.partial` segment; durable on
    /// return. Refuses to go below the commit LSN or outside the local WAL.
    pub fn truncate(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        self.check_initialized()?;
        let dir = self.config.dir.clone();
        if lsn < self.commit_lsn {
            return Err(StorageError::TruncateBelowCommit {
                dir,
                lsn,
                commit_lsn: self.commit_lsn,
            });
        }
        if lsn < self.local_start_lsn || lsn > self.write_lsn {
            return Err(StorageError::TruncateOutOfRange {
                dir,
                lsn,
                local_start_lsn: self.local_start_lsn,
                write_lsn: self.write_lsn,
            });
        }
        if lsn == self.write_lsn && lsn == self.write_record_lsn && !self.decoder_failed {
            // Already clean here: the tail after write_lsn is zeros and nothing follows.
            return self.flush();
        }
        // Written WAL must be readable back for the record-boundary check.
        self.flush()?;
        let prev_record = self.record_ending_at(lsn)?;
        let result = list_segments(self.config.fs.as_ref(), &dir, self.config.seg_size)
            .and_then(|segs| self.cut_tail(lsn, &segs));
        if let Err(e) = result {
            self.broken = Some(e.to_string());
            return Err(e);
        }
        info!(dir = %dir.display(), from = %self.write_lsn, to = %lsn, "truncated WAL");
        self.reset_positions(lsn, prev_record);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
