//! The simulated nodes: acceptors (the real [`Acceptor`] over real files, with simulated
//! power loss) and proposers (the real walproposer core plus a simulated compute that
//! produces valid WAL).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig};
use postgres_ffi::wal_segment::find_end_of_wal_in_bytes;
use rand::Rng;
use rand::rngs::StdRng;
use safekeeper::acceptor::Acceptor;
use safekeeper::wal_storage::{WalReader, WalStorageConfig, segment_path};
use safekeeper_api::term::{Term, TermHistory};
use utils::crashsafe::Sync;
use utils::{Lsn, NodeId};
use walproposer::Proposer;

/// Reads `[from, to)` with `reader` into an exact-size buffer.
fn read_exact(mut reader: WalReader, from: Lsn, to: Lsn) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; to.0.saturating_sub(from.0) as usize];
    let mut off = 0;
    while off < out.len() {
        let n = reader
            .read(&mut out[off..], to)
            .map_err(|e| format!("read WAL [{from}, {to}): {e}"))?;
        if n == 0 {
            return Err(format!(
                "read WAL [{from}, {to}): ended at {}",
                reader.position()
            ));
        }
        off += n;
    }
    Ok(out)
}

/// What is left of a crashed acceptor until it restarts: its files, and enough to read
/// them.
#[derive(Debug)]
pub struct Down {
    /// Its flush LSN before the crash: everything below is on disk.
    pub flush: Lsn,
    config: WalStorageConfig,
    timeline_start: Lsn,
    /// When (virtual ms) it restarts.
    pub restart_at_ms: u64,
}

/// One safekeeper's timeline.
#[derive(Debug)]
pub struct AcceptorNode {
    /// The timeline directory.
    pub dir: PathBuf,
    /// Its node id.
    pub node_id: NodeId,
    /// The acceptor while it runs.
    pub acc: Option<Acceptor>,
    /// What is left while it is down.
    pub down: Option<Down>,
}

/// How a crash treated the unflushed tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing was unflushed.
    Nothing,
    /// Everything from this LSN on was lost.
    From(Lsn),
    /// Random 512-byte sectors in `[from, write)` were lost (writeback in any order).
    Sectors(Lsn),
}

impl AcceptorNode {
    /// Opens the acceptor on its files (first start or restart).
    pub fn open(&mut self) -> Result<(), String> {
        let acc = Acceptor::open(&self.dir, self.node_id, Sync::No)
            .map_err(|e| format!("acceptor {} failed to open: {e}", self.node_id))?;
        self.acc = Some(acc);
        self.down = None;
        Ok(())
    }

    /// Power loss: drops the acceptor, then destroys WAL written but not flushed (between
    /// the flush LSN and the write LSN; completed segments were synced when completed). The
    /// control file is replaced atomically, so the last persisted one survives as is.
    pub fn crash(&mut self, rng: &mut StdRng, restart_at_ms: u64) -> Result<Loss, String> {
        let Some(acc) = self.acc.take() else {
            return Ok(Loss::Nothing);
        };
        let flush = acc.flush_lsn();
        let write = acc.write_lsn();
        let config = acc.wal().config().clone();
        let timeline_start = acc.persisted_state().timeline_start_lsn;
        drop(acc);
        self.down = Some(Down {
            flush,
            config: config.clone(),
            timeline_start,
            restart_at_ms,
        });
        let seg = config.seg_size;
        let lo = flush.max(write.segment_start(seg));
        if !write.is_valid() || lo >= write {
            return Ok(Loss::Nothing);
        }
        let segno = lo.segment_number(seg);
        let path = segment_path(&self.dir, segno, seg, true);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("crash: open {}: {e}", path.display()))?;
        let zero = |from: Lsn, to: Lsn| -> Result<(), String> {
            let buf = vec![0u8; (to.0 - from.0) as usize];
            file.write_all_at(&buf, from.segment_offset(seg))
                .map_err(|e| format!("crash: write {}: {e}", path.display()))
        };
        if rng.random_bool(0.6) {
            let cut = Lsn(rng.random_range(lo.0..=write.0));
            if cut < write {
                zero(cut, write)?;
            }
            Ok(Loss::From(cut))
        } else {
            let mut at = Lsn(lo.0 & !511);
            while at < write {
                let next = Lsn(at.0 + 512);
                if rng.random_bool(0.5) {
                    zero(at.max(lo), next.min(write))?;
                }
                at = next;
            }
            Ok(Loss::Sectors(lo))
        }
    }

    /// Reads `[from, to)` of its WAL, up or down.
    pub fn read(&self, from: Lsn, to: Lsn) -> Result<Vec<u8>, String> {
        if to <= from {
            return Ok(Vec::new());
        }
        let reader = match (&self.acc, &self.down) {
            (Some(acc), _) => acc.wal_reader(from),
            (None, Some(d)) => WalReader::new(&d.config, d.timeline_start, from),
            (None, None) => return Err("acceptor neither up nor down".to_string()),
        }
        .map_err(|e| format!("WAL reader at {from}: {e}"))?;
        read_exact(reader, from, to)
    }

    /// Reads `[from, to)` only if the acceptor runs and its log still agrees with
    /// `history` up to `to` (the check a safekeeper serving a proposer's fetch makes).
    pub fn read_if_consistent(
        &self,
        history: &TermHistory,
        from: Lsn,
        to: Lsn,
    ) -> Result<Vec<u8>, String> {
        if to <= from {
            return Ok(Vec::new());
        }
        let Some(acc) = &self.acc else {
            return Err("donor is down".to_string());
        };
        let common =
            TermHistory::find_highest_common_point(acc.term_history(), history, acc.flush_lsn());
        match common {
            Some(p) if p.lsn >= to => self.read(from, to),
            other => Err(format!(
                "donor's log no longer holds the proposer's history up to {to} (common point {other:?})"
            )),
        }
    }
}

/// The simulated PostgreSQL of one proposer incarnation: the log it continues (the donor's
/// WAL up to the term start) and the WAL it writes after it.
#[derive(Debug)]
pub struct Compute {
    /// Its term.
    pub term: Term,
    /// The timeline's first LSN.
    base: Lsn,
    /// The donor's WAL `[base, term_start)`.
    prefix: Vec<u8>,
    /// Its own WAL from the term start.
    pub writer: WalWriter,
    /// How much of the writer's bytes were handed to the proposer.
    pub emitted: usize,
}

impl Compute {
    /// A compute continuing `prefix` (WAL from `base`): its first record links back to the
    /// prefix's last record. Fails if the prefix does not end at a record boundary.
    pub fn new(
        term: Term,
        base: Lsn,
        prefix: Vec<u8>,
        writer_config: WalWriterConfig,
        decoder_config: WalDecoderConfig,
    ) -> Result<Self, String> {
        let term_start = Lsn(base.0 + prefix.len() as u64);
        let prev = if prefix.is_empty() {
            Lsn::INVALID
        } else {
            let eow = find_end_of_wal_in_bytes(base, &prefix, decoder_config);
            if eow.end_lsn != term_start {
                return Err(format!(
                    "the donor's WAL up to the term start {term_start} ends at {} ({:?})",
                    eow.end_lsn, eow.reason
                ));
            }
            eow.last_record_lsn.unwrap_or(Lsn::INVALID)
        };
        Ok(Compute {
            term,
            base,
            writer: WalWriter::new(writer_config, term_start, prev),
            prefix,
            emitted: 0,
        })
    }

    /// The end of its log.
    pub fn end(&self) -> Lsn {
        self.writer.position()
    }

    /// Its log `[from, to)` (both at or after the timeline's first LSN).
    pub fn log(&self, from: Lsn, to: Lsn) -> Vec<u8> {
        let mut out = Vec::with_capacity(to.0.saturating_sub(from.0) as usize);
        let split = self.base.0 + self.prefix.len() as u64;
        let own = self.writer.bytes();
        let mut at = from.0;
        while at < to.0 {
            if at < split {
                let end = to.0.min(split);
                out.extend_from_slice(
                    &self.prefix[(at - self.base.0) as usize..(end - self.base.0) as usize],
                );
                at = end;
            } else {
                out.extend_from_slice(&own[(at - split) as usize..(to.0 - split) as usize]);
                at = to.0;
            }
        }
        out
    }
}

/// One proposer slot: a sequence of incarnations (a compute restart is a new one).
#[derive(Debug)]
pub struct ProposerNode {
    /// Counts incarnations; events of an older one are stale.
    pub inc: u32,
    /// The running core.
    pub core: Option<Proposer>,
    /// Its compute, once elected.
    pub compute: Option<Compute>,
    /// Virtual time (ms) of the next start while dead.
    pub restart_at_ms: u64,
    /// The highest commit LSN it reported.
    pub commit: Lsn,
}
