//! The engine side of ingest: what a decoded WAL record does to a timeline besides the
//! per-page values [`crate::walingest`] produces — relation sizes and directories,
//! database create/drop, relation maps, SLRU segments, two-phase state, the checkpoint.
//!
//! Records are applied into a pending batch that [`WalIngest::commit`] hands to the
//! timeline; `last_record_lsn` moves to the end of the last record in the batch only then.
//! Metadata written inside the batch (sizes, segments) is read back through overlays, so
//! each record sees its predecessors.
//!
//! Invariants:
//! - every value of a record is stored at the record's end LSN, except the zero pages a
//!   relation extension implies, which are stored at its start (below the record, above
//!   anything earlier for those blocks, and not readable on their own because the size
//!   that makes them exist changes at the end LSN);
//! - a key gets at most one value per LSN (a second write at the same LSN replaces the
//!   pending one);
//! - a record that cannot be applied is an error that stops ingest; nothing is skipped.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pageserver_api::reltag::{FSM_FORKNUM, MAX_FORKNUM, RelTag, VISIBILITYMAP_FORKNUM};
use postgres_ffi::controlfile::CheckPoint;
use postgres_ffi::records::dbase::DbaseRecord;
use postgres_ffi::records::multixact::MultiXactRecord;
use postgres_ffi::records::smgr::SmgrRecord;
use postgres_ffi::records::standby::StandbyRecord;
use postgres_ffi::records::xact::XactRecord;
use postgres_ffi::records::xlog::XlogRecord;
use postgres_ffi::records::{RmgrRecord, clog::ClogRecord, parse_record};
use postgres_ffi::slru::SLRU_PAGES_PER_SEGMENT;
use postgres_ffi::{DecodedWalRecord, PgMajorVersion, RelFileNode};
use utils::Lsn;

use super::read::ReadError;
use super::{LastRecord, Timeline, WriteError};
use crate::keyspace::{self, DIR_ENTRY_PRESENT, Key, RelSizeEntry};
use crate::metrics;
use crate::walingest::{IngestError, PageKey, SlruKind, Value, record_values_parsed};
use crate::walrecord::WalRecord;
use crate::walredo::apply_strata::{
    MULTIXACT_MEMBERS_PER_PAGE, MULTIXACT_OFFSETS_PER_PAGE, VM_HEAPBLOCKS_PER_PAGE,
};

/// Commit the pending batch once it holds this many bytes of values.
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// FSM leaf slots per page (`SlotsPerFSMPage` for 8 KiB blocks).
const FSM_SLOTS_PER_PAGE: u64 = 4069;
/// FSM tree depth for 8 KiB blocks.
const FSM_TREE_DEPTH: u32 = 3;

/// Why a record could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestEngineError {
    /// The record's contents do not make sense.
    #[error(transparent)]
    Record(#[from] IngestError),
    /// Reading the timeline's state failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The timeline refused the batch.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A stored value is not what ingest wrote.
    #[error("{0}")]
    Corrupt(String),
}

impl From<postgres_ffi::records::RecordParseError> for IngestEngineError {
    fn from(e: postgres_ffi::records::RecordParseError) -> Self {
        IngestEngineError::Record(IngestError::Parse(e))
    }
}

/// Applies records to one timeline.
pub struct WalIngest {
    tl: Arc<Timeline>,
    checkpoint: CheckPoint,
    checkpoint_dirty: bool,
    pending: Vec<(Key, Lsn, Value)>,
    /// Position in `pending` of each key's newest value (to replace same-LSN writes).
    newest: HashMap<Key, usize>,
    rel_sizes: HashMap<RelTag, (Lsn, Option<u32>)>,
    slru_segments: HashMap<(SlruKind, u32), Option<u32>>,
    pending_bytes: usize,
    pending_records: usize,
    last: LastRecord,
    scratch: Vec<(PageKey, Value)>,
}

impl std::fmt::Debug for WalIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalIngest")
            .field("last", &self.last)
            .finish()
    }
}

fn rel(r: &RelFileNode, fork: u8) -> RelTag {
    RelTag {
        spcnode: r.spc_node,
        dbnode: r.db_node,
        relnode: r.rel_node,
        forknum: fork,
    }
}

fn zero_page() -> Value {
    // An empty image of a page key is a zero page (see `Timeline::get`).
    Value::Image(Bytes::new())
}

/// The FSM block that holds leaf `logpageno` (PostgreSQL's `fsm_logical_to_physical` at
/// level 0).
fn fsm_leaf_block(logpageno: u64) -> u64 {
    let mut leafno = logpageno;
    let mut pages = 0u64;
    for _ in 0..FSM_TREE_DEPTH {
        pages += leafno + 1;
        leafno /= FSM_SLOTS_PER_PAGE;
    }
    pages - 1
}

/// `(new FSM size, partially truncated FSM block)` for a heap truncated to `heap_blocks`.
fn fsm_truncation(heap_blocks: u32) -> (u32, Option<u32>) {
    let logpageno = u64::from(heap_blocks) / FSM_SLOTS_PER_PAGE;
    let slot = u64::from(heap_blocks) % FSM_SLOTS_PER_PAGE;
    let blk = fsm_leaf_block(logpageno) as u32;
    if slot > 0 {
        (blk + 1, Some(blk))
    } else {
        (blk, None)
    }
}

/// `(new VM size, partially truncated VM block)` for a heap truncated to `heap_blocks`.
fn vm_truncation(heap_blocks: u32) -> (u32, Option<u32>) {
    let blk = heap_blocks / VM_HEAPBLOCKS_PER_PAGE;
    if !heap_blocks.is_multiple_of(VM_HEAPBLOCKS_PER_PAGE) {
        (blk + 1, Some(blk))
    } else {
        (blk, None)
    }
}

/// `a` follows or equals `b` in 32-bit transaction-id order.
fn xid_follows_or_equals(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl WalIngest {
    /// Starts ingesting after the timeline's last record.
    pub async fn new(tl: Arc<Timeline>) -> Result<WalIngest, IngestEngineError> {
        let last = tl.last_record();
        let checkpoint = match tl.get(keyspace::CHECKPOINT_KEY, last.last).await? {
            Some(b) => CheckPoint::decode(&b)
                .map_err(|e| IngestEngineError::Corrupt(format!("stored checkpoint: {e}")))?,
            None => CheckPoint::default(),
        };
        Ok(WalIngest {
            tl,
            checkpoint,
            checkpoint_dirty: false,
            pending: Vec::new(),
            newest: HashMap::new(),
            rel_sizes: HashMap::new(),
            slru_segments: HashMap::new(),
            pending_bytes: 0,
            pending_records: 0,
            last,
            scratch: Vec::new(),
        })
    }

    /// The last record applied (committed or pending).
    pub fn last(&self) -> LastRecord {
        self.last
    }

    /// Whether the pending batch is big enough to commit.
    pub fn should_commit(&self) -> bool {
        self.pending_records >= 100 || self.pending_bytes >= MAX_PENDING_BYTES
    }

    fn put(&mut self, key: Key, lsn: Lsn, value: Value) {
        self.pending_bytes += match &value {
            Value::Image(b) => b.len() + 32,
            Value::Record(WalRecord::Postgres { rec, .. }) => rec.len() + 32,
            Value::Record(_) => 64,
        };
        if let Some(&i) = self.newest.get(&key)
            && self.pending[i].1 == lsn
        {
            self.pending[i].2 = value;
            return;
        }
        self.newest.insert(key, self.pending.len());
        self.pending.push((key, lsn, value));
    }

    async fn rel_size(&self, r: RelTag) -> Result<Option<u32>, IngestEngineError> {
        if let Some((_, s)) = self.rel_sizes.get(&r) {
            return Ok(*s);
        }
        Ok(self.tl.get_rel_size(r, self.tl.last_record_lsn()).await?)
    }

    fn set_rel_size(&mut self, r: RelTag, size: Option<u32>, lsn: Lsn) {
        let v = match size {
            Some(n) => Value::Image(Bytes::copy_from_slice(
                &RelSizeEntry { nblocks: n }.encode(),
            )),
            None => Value::Image(Bytes::new()),
        };
        self.put(keyspace::rel_size_key(r), lsn, v);
        self.rel_sizes.insert(r, (lsn, size));
    }

    async fn slru_segment(
        &self,
        kind: SlruKind,
        segno: u32,
    ) -> Result<Option<u32>, IngestEngineError> {
        if let Some(s) = self.slru_segments.get(&(kind, segno)) {
            return Ok(*s);
        }
        Ok(self
            .tl
            .get_slru_segment_size(kind, segno, self.tl.last_record_lsn())
            .await?)
    }

    fn set_slru_segment(&mut self, kind: SlruKind, segno: u32, pages: Option<u32>, lsn: Lsn) {
        let v = Value::Image(match pages {
            Some(n) => Bytes::copy_from_slice(&n.to_le_bytes()),
            None => Bytes::new(),
        });
        self.put(keyspace::slru_segment_key(kind, segno), lsn, v);
        self.slru_segments.insert((kind, segno), pages);
    }

    async fn extend_slru(
        &mut self,
        kind: SlruKind,
        pageno: u32,
        lsn: Lsn,
    ) -> Result<(), IngestEngineError> {
        let segno = pageno / SLRU_PAGES_PER_SEGMENT;
        let need = pageno % SLRU_PAGES_PER_SEGMENT + 1;
        let cur = self.slru_segment(kind, segno).await?;
        if cur.is_none_or(|c| c < need) {
            self.set_slru_segment(kind, segno, Some(need), lsn);
        }
        Ok(())
    }

    async fn truncate_slru(
        &mut self,
        kind: SlruKind,
        cutoff_page: u32,
        lsn: Lsn,
    ) -> Result<(), IngestEngineError> {
        // Segments wholly before the cutoff's segment go (no wraparound handling: the
        // counters of a cluster this young do not wrap).
        self.commit().await?;
        let cutoff = cutoff_page - cutoff_page % SLRU_PAGES_PER_SEGMENT;
        let segs = self
            .tl
            .list_slru_segments(kind, self.tl.last_record_lsn())?;
        for segno in segs.keys() {
            if (segno + 1) * SLRU_PAGES_PER_SEGMENT <= cutoff {
                self.set_slru_segment(kind, *segno, None, lsn);
            }
        }
        Ok(())
    }

    /// A block value for `r`/`blkno`: extends the relation when the block is past its end.
    async fn put_block(
        &mut self,
        r: RelTag,
        blkno: u32,
        value: Value,
        start: Lsn,
        end: Lsn,
    ) -> Result<(), IngestEngineError> {
        let cur = self.rel_size(r).await?.unwrap_or(0);
        if blkno >= cur {
            let init = crate::value::will_init(&value);
            for b in cur..blkno {
                self.put(keyspace::rel_block_key(r, b), start, zero_page());
            }
            if !init {
                self.put(keyspace::rel_block_key(r, blkno), start, zero_page());
            }
            self.set_rel_size(r, Some(blkno + 1), end);
        }
        self.put(keyspace::rel_block_key(r, blkno), end, value);
        Ok(())
    }

    fn advance_next_xid(&mut self, xid: u32) {
        if xid < 3 {
            return;
        }
        let next = self.checkpoint.next_xid;
        let next32 = next as u32;
        if !xid_follows_or_equals(xid, next32) {
            return;
        }
        let mut epoch = (next >> 32) as u32;
        if xid < next32 {
            epoch += 1;
        }
        let mut full = (u64::from(epoch) << 32) | u64::from(xid);
        full += 1;
        if (full as u32) < 3 {
            full += 3 - u64::from(full as u32);
        }
        self.checkpoint.next_xid = full;
        self.checkpoint_dirty = true;
    }

    /// Applies one record (`start..end`) to the pending batch.
    pub async fn ingest_record(
        &mut self,
        record: &DecodedWalRecord,
        start: Lsn,
        end: Lsn,
    ) -> Result<(), IngestEngineError> {
        let parsed = parse_record(record, PgMajorVersion::V15)?;
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        record_values_parsed(record, parsed.as_ref(), start, end, &mut values)?;
        for (pk, v) in values.drain(..) {
            match pk {
                PageKey::Rel(tag) => self.put_block(tag.rel, tag.blkno, v, start, end).await?,
                PageKey::Slru(kind, pageno) => {
                    self.put(keyspace::slru_block_key(kind, pageno), end, v);
                }
            }
        }
        self.scratch = values;
        if let Some(p) = parsed {
            self.apply_rmgr(p, start, end).await?;
        }
        self.advance_next_xid(record.xid());
        self.last = LastRecord {
            last: end,
            prev: Some(start),
        };
        self.pending_records += 1;
        metrics::INGEST_RECORDS.inc();
        Ok(())
    }

    async fn apply_rmgr(
        &mut self,
        p: RmgrRecord,
        _start: Lsn,
        end: Lsn,
    ) -> Result<(), IngestEngineError> {
        match p {
            RmgrRecord::Smgr(SmgrRecord::Create { rel: r, fork }) => {
                let t = rel(&r, fork as u8);
                if self.rel_size(t).await?.is_none() {
                    self.set_rel_size(t, Some(0), end);
                }
            }
            RmgrRecord::Smgr(SmgrRecord::Truncate {
                rel: r,
                blkno,
                flags,
            }) => {
                if SmgrRecord::truncates_main(flags) {
                    let t = rel(&r, 0);
                    if let Some(cur) = self.rel_size(t).await?
                        && blkno < cur
                    {
                        self.set_rel_size(t, Some(blkno), end);
                    }
                }
                if SmgrRecord::truncates_fsm(flags) {
                    let t = rel(&r, FSM_FORKNUM);
                    if let Some(cur) = self.rel_size(t).await? {
                        let (new, partial) = fsm_truncation(blkno);
                        if let Some(pb) = partial
                            && pb < cur
                        {
                            // PostgreSQL clears the tail of this page; the FSM is only a
                            // hint, so an empty page is as good.
                            self.put(keyspace::rel_block_key(t, pb), end, zero_page());
                        }
                        if new < cur {
                            self.set_rel_size(t, Some(new), end);
                        }
                    }
                }
                if SmgrRecord::truncates_vm(flags) {
                    let t = rel(&r, VISIBILITYMAP_FORKNUM);
                    if let Some(cur) = self.rel_size(t).await? {
                        let (new, partial) = vm_truncation(blkno);
                        if let Some(pb) = partial
                            && pb < cur
                        {
                            self.put(
                                keyspace::rel_block_key(t, pb),
                                end,
                                Value::Record(WalRecord::TruncateVisibilityMap {
                                    heap_blocks: blkno,
                                }),
                            );
                        }
                        if new < cur {
                            self.set_rel_size(t, Some(new), end);
                        }
                    }
                }
            }
            RmgrRecord::Dbase(DbaseRecord::CreateFileCopy {
                db_id,
                tablespace_id,
                src_db_id,
                src_tablespace_id,
            }) => {
                self.copy_database(src_tablespace_id, src_db_id, tablespace_id, db_id, end)
                    .await?;
            }
            RmgrRecord::Dbase(DbaseRecord::CreateWalLog {
                db_id,
                tablespace_id,
            }) => {
                self.put(
                    keyspace::db_dir_key(tablespace_id, db_id),
                    end,
                    Value::Image(Bytes::from_static(DIR_ENTRY_PRESENT)),
                );
            }
            RmgrRecord::Dbase(DbaseRecord::Drop {
                db_id,
                tablespace_ids,
            }) => {
                self.commit().await?;
                let lsn = self.tl.last_record_lsn();
                for spc in tablespace_ids {
                    for r in self.tl.list_rels(spc, db_id, lsn)?.keys() {
                        self.set_rel_size(*r, None, end);
                    }
                    self.put(
                        keyspace::db_dir_key(spc, db_id),
                        end,
                        Value::Image(Bytes::new()),
                    );
                    self.put(
                        keyspace::relmap_key(spc, db_id),
                        end,
                        Value::Image(Bytes::new()),
                    );
                }
            }
            RmgrRecord::Relmap(u) => {
                self.put(
                    keyspace::relmap_key(u.tsid, u.dbid),
                    end,
                    Value::Image(u.data),
                );
            }
            RmgrRecord::Clog(ClogRecord::ZeroPage { pageno }) => {
                self.extend_slru(SlruKind::Clog, pageno as u32, end).await?;
            }
            RmgrRecord::Clog(ClogRecord::Truncate { pageno, .. }) => {
                self.truncate_slru(SlruKind::Clog, pageno as u32, end)
                    .await?;
            }
            RmgrRecord::MultiXact(m) => match m {
                MultiXactRecord::ZeroOffPage { pageno } => {
                    self.extend_slru(SlruKind::MultiXactOffsets, pageno as u32, end)
                        .await?;
                }
                MultiXactRecord::ZeroMemPage { pageno } => {
                    self.extend_slru(SlruKind::MultiXactMembers, pageno as u32, end)
                        .await?;
                }
                MultiXactRecord::CreateId { mid, moff, members } => {
                    let cp = &mut self.checkpoint;
                    let next_mid = match mid.wrapping_add(1) {
                        0 => 1,
                        n => n,
                    };
                    if (next_mid.wrapping_sub(cp.next_multi) as i32) > 0 {
                        cp.next_multi = next_mid;
                    }
                    let next_off = moff.wrapping_add(members.len() as u32);
                    if (next_off.wrapping_sub(cp.next_multi_offset) as i32) > 0 {
                        cp.next_multi_offset = next_off;
                    }
                    for m in &members {
                        self.advance_next_xid(m.xid);
                    }
                    self.checkpoint_dirty = true;
                }
                MultiXactRecord::TruncateId {
                    oldest_multi_db,
                    end_trunc_off,
                    end_trunc_memb,
                    ..
                } => {
                    self.truncate_slru(
                        SlruKind::MultiXactOffsets,
                        end_trunc_off / MULTIXACT_OFFSETS_PER_PAGE,
                        end,
                    )
                    .await?;
                    self.truncate_slru(
                        SlruKind::MultiXactMembers,
                        end_trunc_memb / MULTIXACT_MEMBERS_PER_PAGE,
                        end,
                    )
                    .await?;
                    self.checkpoint.oldest_multi = end_trunc_off;
                    self.checkpoint.oldest_multi_db = oldest_multi_db;
                    self.checkpoint_dirty = true;
                }
            },
            RmgrRecord::Xact(XactRecord::Completion(c)) => {
                if c.kind.is_commit() {
                    self.tl.commit_times.note(c.xact_time, end);
                }
                for r in &c.dropped_rels {
                    for fork in 0..=MAX_FORKNUM {
                        let t = rel(r, fork);
                        if self.rel_size(t).await?.is_some() {
                            self.set_rel_size(t, None, end);
                        }
                    }
                }
                if c.kind.is_prepared() {
                    let xid = c.twophase_xid.unwrap_or(c.xid);
                    self.put(keyspace::twophase_key(xid), end, Value::Image(Bytes::new()));
                }
                for x in std::iter::once(c.xid).chain(c.subxacts.iter().copied()) {
                    self.advance_next_xid(x);
                }
            }
            RmgrRecord::Xact(XactRecord::Prepare(p)) => {
                self.put(
                    keyspace::twophase_key(p.xid),
                    end,
                    Value::Image(Bytes::from(p.twophase_file())),
                );
                for x in std::iter::once(p.xid).chain(p.subxacts.iter().copied()) {
                    self.advance_next_xid(x);
                }
            }
            RmgrRecord::Xact(XactRecord::Assignment { xtop, subxacts }) => {
                for x in std::iter::once(xtop).chain(subxacts) {
                    self.advance_next_xid(x);
                }
            }
            RmgrRecord::Xlog(XlogRecord::Checkpoint { checkpoint, .. }) => {
                let ours = self.checkpoint;
                let mut cp = checkpoint;
                if cp.next_xid < ours.next_xid {
                    cp.next_xid = ours.next_xid;
                }
                if (ours.next_multi.wrapping_sub(cp.next_multi) as i32) > 0 {
                    cp.next_multi = ours.next_multi;
                }
                if (ours.next_multi_offset.wrapping_sub(cp.next_multi_offset) as i32) > 0 {
                    cp.next_multi_offset = ours.next_multi_offset;
                }
                self.checkpoint = cp;
                self.checkpoint_dirty = true;
            }
            RmgrRecord::Xlog(XlogRecord::NextOid(oid)) => {
                self.checkpoint.next_oid = oid;
                self.checkpoint_dirty = true;
            }
            RmgrRecord::Standby(StandbyRecord::RunningXacts(rx)) => {
                self.checkpoint.oldest_active_xid = rx.oldest_running_xid;
                self.checkpoint_dirty = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// `CREATE DATABASE … STRATEGY FILE_COPY`: the template's relations, pages and map,
    /// as images at the record's LSN.
    async fn copy_database(
        &mut self,
        src_spc: u32,
        src_db: u32,
        spc: u32,
        db: u32,
        end: Lsn,
    ) -> Result<(), IngestEngineError> {
        self.commit().await?;
        let lsn = self.tl.last_record_lsn();
        let rels = self.tl.list_rels(src_spc, src_db, lsn)?;
        for (src, nblocks) in rels {
            let dst = RelTag {
                spcnode: spc,
                dbnode: db,
                ..src
            };
            for blk in 0..nblocks {
                let page = self.tl.get_rel_page(src, blk, lsn).await?;
                self.put(keyspace::rel_block_key(dst, blk), end, Value::Image(page));
                if self.pending_bytes >= MAX_PENDING_BYTES {
                    // Hand over what is pending without moving last_record_lsn: the copy
                    // becomes visible only when the record is complete.
                    self.flush_pending_without_advancing().await?;
                }
            }
            self.set_rel_size(dst, Some(nblocks), end);
        }
        if let Some(map) = self
            .tl
            .get(keyspace::relmap_key(src_spc, src_db), lsn)
            .await?
        {
            self.put(keyspace::relmap_key(spc, db), end, Value::Image(map));
        }
        self.put(
            keyspace::db_dir_key(spc, db),
            end,
            Value::Image(Bytes::from_static(DIR_ENTRY_PRESENT)),
        );
        Ok(())
    }

    async fn flush_pending_without_advancing(&mut self) -> Result<(), IngestEngineError> {
        let committed = self.tl.last_record();
        self.publish_rel_sizes();
        self.tl.put_batch(&self.pending, committed).await?;
        self.pending.clear();
        self.newest.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    fn publish_rel_sizes(&mut self) {
        // Before last_record_lsn moves: a reader at the new LSN must not find the old
        // size in the cache (the cache keeps the newest entry per relation).
        for (r, (lsn, size)) in self.rel_sizes.drain() {
            self.tl.rel_sizes.update(r, lsn, size);
        }
    }

    /// Hands the pending batch to the timeline; `last_record_lsn` moves to the last
    /// applied record.
    pub async fn commit(&mut self) -> Result<(), IngestEngineError> {
        if self.pending_records == 0 && self.pending.is_empty() {
            return Ok(());
        }
        if self.checkpoint_dirty {
            let cp = Value::Image(Bytes::copy_from_slice(&self.checkpoint.encode()));
            self.put(keyspace::CHECKPOINT_KEY, self.last.last, cp);
            self.checkpoint_dirty = false;
        }
        self.publish_rel_sizes();
        self.tl.put_batch(&self.pending, self.last).await?;
        self.pending.clear();
        self.newest.clear();
        self.slru_segments.clear();
        self.pending_bytes = 0;
        self.pending_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsm_and_vm_truncation_points() {
        // Heap of 0 blocks: nothing left in either map.
        assert_eq!(fsm_truncation(0), (2, None));
        assert_eq!(vm_truncation(0), (0, None));
        // The first leaf page is physical block 2 (root, level-1, leaf).
        assert_eq!(fsm_truncation(10), (3, Some(2)));
        assert_eq!(vm_truncation(10), (1, Some(0)));
        assert_eq!(vm_truncation(VM_HEAPBLOCKS_PER_PAGE), (1, None));
        assert_eq!(fsm_leaf_block(1), 3);
    }

    #[test]
    fn xid_order_wraps() {
        assert!(xid_follows_or_equals(5, 5));
        assert!(xid_follows_or_equals(3, u32::MAX - 2));
        assert!(!xid_follows_or_equals(u32::MAX - 2, 3));
    }
}
