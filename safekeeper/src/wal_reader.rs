//! Reading a timeline's WAL back, for the walsender (pageservers, replicas, peers).
//!
//! PostgreSQL's walreceiver asks for WAL from the start of the segment holding its start
//! point and checks the long page header of every segment's first page. So for the segment
//! holding `timeline_start_lsn`, the bytes before it are served exactly as
//! [`synthesize_prefix`] builds them — a valid long header, valid short headers on later
//! pages, zeros elsewhere — whether or not the segment file is still there; everything from
//! `timeline_start_lsn` on comes from the segment files.
//!
//! The reader never decides what may be read: the caller bounds every read (by `commit_lsn`
//! for pageservers and replicas, by `flush_lsn` for peers), and WAL below those is never
//! truncated, so concurrent appends and truncations cannot change bytes the reader returns.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use postgres_ffi::wal_generate::WalWriterConfig;
use utils::Lsn;
use utils::vfs::{OpenMode, Vfs, VfsFile};

use crate::wal_storage::{StorageError, WalStorageConfig, segment_path, synthesize_prefix};

/// A sequential reader of one timeline's WAL from some position.
#[derive(Debug)]
pub struct WalReader {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    seg_size: u64,
    writer_config: WalWriterConfig,
    timeline_start_lsn: Lsn,
    /// The synthesized bytes of `timeline_start_lsn`'s segment before it, built on first use.
    prefix: Option<Vec<u8>>,
    pos: Lsn,
    file: Option<(u64, Arc<dyn VfsFile>)>,
}

impl WalReader {
    /// A reader at `start`, which must not be before the segment holding
    /// `timeline_start_lsn` (the timeline has nothing there).
    pub fn new(
        config: &WalStorageConfig,
        timeline_start_lsn: Lsn,
        start: Lsn,
    ) -> Result<Self, StorageError> {
        let first = timeline_start_lsn.segment_start(config.seg_size);
        if !timeline_start_lsn.is_valid() || start < first {
            return Err(StorageError::NotAvailable {
                dir: config.dir.clone(),
                lsn: start,
                msg: format!(
                    "the timeline's WAL starts at {timeline_start_lsn} (first segment at {first})"
                ),
            });
        }
        Ok(WalReader {
            fs: Arc::clone(&config.fs),
            dir: config.dir.clone(),
            seg_size: config.seg_size,
            writer_config: config.writer_config(),
            timeline_start_lsn,
            prefix: None,
            pos: start,
            file: None,
        })
    }

    /// The LSN of the next byte [`WalReader::read`] returns.
    pub fn position(&self) -> Lsn {
        self.pos
    }

    /// Reads WAL from the current position into `buf`, never past `end` nor past the end of
    /// the current segment; returns how many bytes were read (0 only when the position has
    /// reached `end` or `buf` is empty) and advances.
    pub fn read(&mut self, buf: &mut [u8], end: Lsn) -> Result<usize, StorageError> {
        if self.pos >= end || buf.is_empty() {
            return Ok(0);
        }
        let segno = self.pos.segment_number(self.seg_size);
        let off = self.pos.segment_offset(self.seg_size);
        let mut n = (buf.len() as u64)
            .min(end.0 - self.pos.0)
            .min(self.seg_size - off) as usize;
        if self.pos < self.timeline_start_lsn {
            n = n.min((self.timeline_start_lsn.0 - self.pos.0) as usize);
            let prefix = self.prefix.get_or_insert_with(|| {
                synthesize_prefix(self.writer_config, self.timeline_start_lsn)
            });
            buf[..n].copy_from_slice(&prefix[off as usize..off as usize + n]);
        } else {
            let file = self.segment(segno)?;
            file.read_exact_at(&mut buf[..n], off)
                .map_err(|source| StorageError::Io {
                    op: "read",
                    path: segment_path(&self.dir, segno, self.seg_size, false),
                    source,
                })?;
        }
        self.pos = Lsn(self.pos.0 + n as u64);
        Ok(n)
    }

    /// Reads exactly `[position, end)` into a new buffer (for tests and small ranges).
    pub fn read_to_vec(&mut self, end: Lsn) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::with_capacity(end.0.saturating_sub(self.pos.0) as usize);
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = self.read(&mut buf, end)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// The open file of segment `segno`: its final name, or `.partial` while it is being
    /// written (checking the final name again, as the writer may rename it meanwhile).
    fn segment(&mut self, segno: u64) -> Result<&dyn VfsFile, StorageError> {
        if self.file.as_ref().is_none_or(|(n, _)| *n != segno) {
            let final_path = segment_path(&self.dir, segno, self.seg_size, false);
            let partial_path = segment_path(&self.dir, segno, self.seg_size, true);
            let mut opened = None;
            for path in [&final_path, &partial_path, &final_path] {
                match self.fs.open(path, OpenMode::Read) {
                    Ok(f) => {
                        opened = Some(f);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(StorageError::Io {
                            op: "open",
                            path: path.clone(),
                            source,
                        });
                    }
                }
            }
            let Some(file) = opened else {
                return Err(StorageError::NotAvailable {
                    dir: self.dir.clone(),
                    lsn: self.pos,
                    msg: format!("segment file {} is missing", final_path.display()),
                });
            };
            self.file = Some((segno, file));
        }
        self.file
            .as_ref()
            .map(|(_, f)| f.as_ref())
            .ok_or_else(|| StorageError::NotAvailable {
                dir: self.dir.clone(),
                lsn: self.pos,
                msg: "no open segment".to_string(),
            })
    }
}
