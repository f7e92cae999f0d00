//! Turning one decoded WAL record into the per-page values the pageserver stores.
//!
//! This is the storage-independent half of ingest: for a record that ends at `end_lsn` it
//! says which pages change and how. Every value is stored at `end_lsn`.
//! - Each block reference becomes a value for that block: an image when the record is an
//!   `XLOG_FPI`/`XLOG_FPI_FOR_HINT` whose image is applied (its LSN set to `end_lsn`, as redo
//!   does), otherwise the raw record ([`WalRecord::Postgres`], `will_init` when it restores
//!   or initializes the page).
//! - Transaction commits and aborts become CLOG status records, one per CLOG page touched
//!   (top-level xid and subtransactions share the final status).
//! - `CLOG_ZEROPAGE`, `MULTIXACT_ZERO_*_PAGE` become zero images; a new multixact becomes an
//!   offsets record (its own offset and the next multixact's) per offsets page touched, and a
//!   members record per members page it spans.
//! - Heap records that clear visibility-map bits become VM records, one per VM page.
//!
//! What is *not* here (the engine's job): relation sizes, directories, truncation and drops,
//! two-phase state files, checkpoints.

use std::collections::BTreeMap;

use bytes::Bytes;
use pageserver_api::reltag::{BufferTag, RelTag, VISIBILITYMAP_FORKNUM};
use postgres_ffi::records::multixact::MultiXactRecord;
use postgres_ffi::records::xact::XactRecord;
use postgres_ffi::records::{RmgrRecord, clog::ClogRecord, parse_record};
use postgres_ffi::{DecodedWalRecord, PgMajorVersion, RelFileNode};
use utils::Lsn;

use crate::walrecord::{ClogStatus, MultiXactMember, WalRecord};
use crate::walredo::apply_strata::{
    CLOG_XACTS_PER_PAGE, MULTIXACT_MEMBERS_PER_PAGE, MULTIXACT_OFFSETS_PER_PAGE,
    VM_HEAPBLOCKS_PER_PAGE,
};
use postgres_ffi::BLCKSZ;

const RM_XLOG_ID: u8 = 0;
const XLOG_FPI_FOR_HINT: u8 = 0xA0;
const XLOG_FPI: u8 = 0xB0;

/// An SLRU (simple LRU-buffered) directory the pageserver keeps pages of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlruKind {
    /// `pg_xact`: transaction status.
    Clog,
    /// `pg_multixact/offsets`.
    MultiXactOffsets,
    /// `pg_multixact/members`.
    MultiXactMembers,
}

/// A page the pageserver versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageKey {
    /// A relation block.
    Rel(BufferTag),
    /// An SLRU page, by its page number in the SLRU (not per segment).
    Slru(SlruKind, u32),
}

/// What to store for a page at an LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The whole page.
    Image(Bytes),
    /// A change to apply on top of the previous version.
    Record(WalRecord),
}

/// A record the ingest cannot make sense of.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The rmgr-specific part does not parse.
    #[error(transparent)]
    Parse(#[from] postgres_ffi::records::RecordParseError),
    /// A full-page image does not restore.
    #[error("record at {lsn}: {reason}")]
    Image {
        /// The record's start.
        lsn: Lsn,
        /// Why.
        reason: String,
    },
}

fn rel_tag(rel: &RelFileNode, forknum: u8) -> RelTag {
    RelTag {
        spcnode: rel.spc_node,
        dbnode: rel.db_node,
        relnode: rel.rel_node,
        forknum,
    }
}

/// The values `record` (spanning `start_lsn..end_lsn`) produces, in a deterministic order.
pub fn record_values(
    record: &DecodedWalRecord,
    start_lsn: Lsn,
    end_lsn: Lsn,
) -> Result<Vec<(PageKey, Value)>, IngestError> {
    let parsed = parse_record(record, PgMajorVersion::V15)?;
    let mut out = Vec::new();
    record_values_parsed(record, parsed.as_ref(), start_lsn, end_lsn, &mut out)?;
    Ok(out)
}

/// [`record_values`] for a record whose rmgr part the caller has parsed already,
/// appending to `out` (the engine's ingest parses once and reuses the result).
pub fn record_values_parsed(
    record: &DecodedWalRecord,
    parsed: Option<&RmgrRecord>,
    start_lsn: Lsn,
    end_lsn: Lsn,
    out: &mut Vec<(PageKey, Value)>,
) -> Result<(), IngestError> {
    let is_fpi_record =
        record.rmid() == RM_XLOG_ID && matches!(record.rmgr_info(), XLOG_FPI | XLOG_FPI_FOR_HINT);
    for block in &record.blocks {
        let tag = BufferTag {
            rel: rel_tag(&block.rel, block.fork as u8),
            blkno: block.blkno,
        };
        let value = match &block.image {
            Some(img) if is_fpi_record && img.apply() => {
                let mut page = [0u8; BLCKSZ];
                img.restore_into(&mut page)
                    .map_err(|reason| IngestError::Image {
                        lsn: start_lsn,
                        reason,
                    })?;
                postgres_ffi::page::set_lsn_after_redo(&mut page, end_lsn);
                Value::Image(Bytes::copy_from_slice(&page))
            }
            _ => Value::Record(WalRecord::Postgres {
                start_lsn,
                will_init: block.initializes_page(),
                rec: record.raw.clone(),
            }),
        };
        out.push((PageKey::Rel(tag), value));
    }

    match parsed {
        Some(RmgrRecord::Xact(XactRecord::Completion(c))) => {
            let status = if c.kind.is_commit() {
                ClogStatus::Committed
            } else {
                ClogStatus::Aborted
            };
            let mut by_page: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for xid in std::iter::once(c.xid).chain(c.subxacts.iter().copied()) {
                by_page
                    .entry(xid / CLOG_XACTS_PER_PAGE)
                    .or_default()
                    .push(xid);
            }
            for (pageno, xids) in by_page {
                out.push((
                    PageKey::Slru(SlruKind::Clog, pageno),
                    Value::Record(WalRecord::ClogSetStatus {
                        xids,
                        status,
                        timestamp: c.xact_time,
                    }),
                ));
            }
        }
        Some(RmgrRecord::Clog(ClogRecord::ZeroPage { pageno })) => {
            out.push((PageKey::Slru(SlruKind::Clog, *pageno as u32), zero_page()));
        }
        Some(RmgrRecord::MultiXact(m)) => match m {
            MultiXactRecord::ZeroOffPage { pageno } => {
                out.push((
                    PageKey::Slru(SlruKind::MultiXactOffsets, *pageno as u32),
                    zero_page(),
                ));
            }
            MultiXactRecord::ZeroMemPage { pageno } => {
                out.push((
                    PageKey::Slru(SlruKind::MultiXactMembers, *pageno as u32),
                    zero_page(),
                ));
            }
            MultiXactRecord::CreateId { mid, moff, members } => {
                let (mid, moff) = (*mid, *moff);
                // PostgreSQL also records where the next multixact's members start
                // (multixact ids wrap around to FirstMultiXactId = 1).
                let next_mid = match mid.wrapping_add(1) {
                    0 => 1,
                    n => n,
                };
                let entries = vec![
                    (mid, moff),
                    (next_mid, moff.wrapping_add(members.len() as u32)),
                ];
                let mut pages: Vec<u32> = entries
                    .iter()
                    .map(|(m, _)| m / MULTIXACT_OFFSETS_PER_PAGE)
                    .collect();
                pages.dedup();
                for pageno in pages {
                    out.push((
                        PageKey::Slru(SlruKind::MultiXactOffsets, pageno),
                        Value::Record(WalRecord::MultixactOffsets {
                            entries: entries.clone(),
                        }),
                    ));
                }
                let members: Vec<MultiXactMember> = members
                    .iter()
                    .map(|m| MultiXactMember {
                        xid: m.xid,
                        status: m.status as u8,
                    })
                    .collect();
                let mut pages: Vec<u32> = (0..members.len() as u32)
                    .map(|i| moff.wrapping_add(i) / MULTIXACT_MEMBERS_PER_PAGE)
                    .collect();
                pages.dedup();
                for pageno in pages {
                    out.push((
                        PageKey::Slru(SlruKind::MultiXactMembers, pageno),
                        Value::Record(WalRecord::MultixactMembersCreate {
                            moff,
                            members: members.clone(),
                        }),
                    ));
                }
            }
            MultiXactRecord::TruncateId { .. } => {}
        },
        Some(RmgrRecord::ClearVmBits(clear)) => {
            let vm_rel = rel_tag(&clear.rel, VISIBILITYMAP_FORKNUM);
            let mut by_page: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for blk in [clear.new_heap_blkno, clear.old_heap_blkno]
                .into_iter()
                .flatten()
            {
                let list = by_page.entry(blk / VM_HEAPBLOCKS_PER_PAGE).or_default();
                if !list.contains(&blk) {
                    list.push(blk);
                }
            }
            for (vm_blk, heap_blknos) in by_page {
                out.push((
                    PageKey::Rel(BufferTag {
                        rel: vm_rel,
                        blkno: vm_blk,
                    }),
                    Value::Record(WalRecord::ClearVisibilityMapFlags {
                        heap_blknos,
                        flags: clear.flags,
                    }),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn zero_page() -> Value {
    Value::Image(Bytes::from_static(&[0u8; BLCKSZ]))
}
