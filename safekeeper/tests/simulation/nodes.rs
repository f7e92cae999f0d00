//! The simulated nodes: acceptors (the real [`Acceptor`] over the real WAL storage and
//! control file, on a simulated file system with power loss) and proposers (the real
//! walproposer core plus a simulated compute that produces valid WAL).

use std::path::PathBuf;
use std::sync::Arc;

use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig};
use postgres_ffi::wal_segment::find_end_of_wal_in_bytes;
use rand::Rng;
use rand::rngs::StdRng;
use safekeeper::acceptor::Acceptor;
use safekeeper::send_wal::StreamBound;
use safekeeper::wal_storage::{FlushTicket, StorageError, WalReader, WalStorageConfig};
use safekeeper_api::term::Term;
use utils::crashsafe::Sync;
use utils::{Lsn, NodeId};
use walproposer::Proposer;

use super::fs::{LossMode, SimFs};

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
    /// Its flush LSN before the crash: everything below is durable.
    pub flush: Lsn,
    config: WalStorageConfig,
    timeline_start: Lsn,
    /// When (virtual ms) it restarts.
    pub restart_at_ms: u64,
}

/// The acceptor's flush task (the production flush thread's steps, one event each): a
/// ticket taken under the acceptor, its fdatasync run outside, the result handed back.
#[derive(Debug)]
pub struct FlushTask {
    /// The ticket (`None`: the timeline had no WAL yet).
    pub ticket: Option<FlushTicket>,
    /// The fdatasync's outcome, once run.
    pub synced: Option<Result<(), StorageError>>,
    /// The proposers whose appends it answers.
    pub answers: Vec<usize>,
}

/// One safekeeper's timeline.
#[derive(Debug)]
pub struct AcceptorNode {
    /// The timeline directory (on `fs`).
    pub dir: PathBuf,
    /// Its machine's file system.
    pub fs: SimFs,
    /// Its node id.
    pub node_id: NodeId,
    /// The acceptor while it runs.
    pub acc: Option<Acceptor>,
    /// How many times it was opened (a stream from an earlier run is gone).
    pub starts: u64,
    /// The flush in progress.
    pub flush: Option<FlushTask>,
    /// What is left while it is down.
    pub down: Option<Down>,
}

impl AcceptorNode {
    /// The file system as the production code takes it.
    pub fn vfs(&self) -> Arc<dyn utils::vfs::Vfs> {
        Arc::new(self.fs.clone())
    }

    /// Opens the acceptor on its files (first start or restart). A crash armed to fall
    /// during the opening makes it fail: the caller checks [`SimFs::is_dead`].
    pub fn open(&mut self) -> Result<(), String> {
        let acc = Acceptor::open_in(self.vfs(), &self.dir, self.node_id, Sync::Yes)
            .map_err(|e| format!("acceptor {} failed to open: {e}", self.node_id))?;
        self.acc = Some(acc);
        self.starts += 1;
        self.down = None;
        Ok(())
    }

    /// Power loss: drops the acceptor (and its flush in progress) and keeps of its files
    /// only what the simulated file system lets survive. Returns how unsynced writes were
    /// treated.
    pub fn power_loss(&mut self, rng: &mut StdRng, restart_at_ms: u64) -> LossMode {
        self.flush = None;
        if let Some(acc) = self.acc.take() {
            self.down = Some(Down {
                flush: acc.flush_lsn(),
                config: acc.wal().config().clone(),
                timeline_start: acc.persisted_state().timeline_start_lsn,
                restart_at_ms,
            });
        } else if let Some(d) = &mut self.down {
            // It died again while opening: what it had flushed before is still durable.
            d.restart_at_ms = restart_at_ms;
        }
        let mode = if rng.random_bool(0.6) {
            LossMode::Everything
        } else {
            LossMode::PartialWriteback
        };
        self.fs.power_loss(mode, rng);
        mode
    }

    /// Reads `[from, to)` of its WAL, up or down, as the checker (not the node's own I/O:
    /// see [`SimFs::observe`]).
    pub fn read(&self, from: Lsn, to: Lsn) -> Result<Vec<u8>, String> {
        self.fs.observe(|| self.read_wal(from, to))
    }

    /// Reads as much of `[from, to)` as its files hold, from `from` on, as the checker: a
    /// crash in the middle of a truncation (legitimate above its commit LSN) can leave a
    /// down node's files shorter than its flush LSN.
    pub fn read_available(&self, from: Lsn, to: Lsn) -> Result<Vec<u8>, String> {
        let mut reader = self
            .fs
            .observe(|| match (&self.acc, &self.down) {
                (Some(acc), _) => acc.wal_reader(from),
                (None, Some(d)) => WalReader::new(&d.config, d.timeline_start, from),
                (None, None) => Err(StorageError::NotAvailable {
                    dir: self.dir.clone(),
                    lsn: from,
                    msg: "acceptor neither up nor down".to_string(),
                }),
            })
            .map_err(|e| format!("WAL reader at {from}: {e}"))?;
        let mut out = Vec::new();
        // Sector by sector: a short file ends the read at the last whole sector it holds.
        let mut buf = [0u8; 512];
        loop {
            let want = (to.0.saturating_sub(reader.position().0) as usize).min(buf.len());
            if want == 0 {
                return Ok(out);
            }
            match self.fs.observe(|| reader.read(&mut buf[..want], to)) {
                Ok(0) | Err(_) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads `[from, to)` of its WAL, up or down: the node's own reading.
    fn read_wal(&self, from: Lsn, to: Lsn) -> Result<Vec<u8>, String> {
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

    /// Starts a term-bound read for a proposer of `term`, by the production walsender's
    /// rule ([`StreamBound::open`]).
    pub fn open_term_read(&self, term: Term) -> Result<StreamBound, String> {
        let Some(acc) = &self.acc else {
            return Err("donor is down".to_string());
        };
        StreamBound::open(Some(term), acc.term(), acc.last_log_term())
    }

    /// Reads `[from, to)` on a term-bound stream opened earlier: served only while the
    /// production rule allows it ([`StreamBound::end`]), and only WAL the stream may
    /// send by then (the real stream would wait for more; the simulated one fails).
    pub fn read_term_bound(
        &self,
        bound: &StreamBound,
        from: Lsn,
        to: Lsn,
    ) -> Result<Vec<u8>, String> {
        let Some(acc) = &self.acc else {
            return Err("donor is down".to_string());
        };
        let end = bound.end(
            acc.term(),
            acc.last_log_term(),
            acc.flush_lsn(),
            acc.commit_lsn(),
        )?;
        if to > from && end < to {
            return Err(format!("the stream may send only up to {end}, below {to}"));
        }
        self.read_wal(from, to)
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
