//! The values the pageserver stores for a page at an LSN, and the records it invents.
//!
//! A page's history is a base (an image, or nothing when the first record initializes the
//! page) followed by records, each stored at the LSN where it ends. Most records are
//! PostgreSQL's own WAL records, replayed by PostgreSQL's redo code in a `strata_walredo`
//! process. Some changes PostgreSQL makes without a block reference — transaction status
//! in CLOG, multixact offsets and members, visibility-map bits cleared as a side effect of
//! heap changes — are stored as *Strata records*, which the pageserver applies in Rust
//! (`walredo::apply_strata`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utils::Lsn;

/// A transaction's status in CLOG (`pg_xact`), two bits per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum ClogStatus {
    /// `TRANSACTION_STATUS_IN_PROGRESS` (all bits clear).
    InProgress = 0,
    /// `TRANSACTION_STATUS_COMMITTED`.
    Committed = 1,
    /// `TRANSACTION_STATUS_ABORTED`.
    Aborted = 2,
    /// `TRANSACTION_STATUS_SUB_COMMITTED`.
    SubCommitted = 3,
}

/// One member of a multixact: a transaction and how it holds the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiXactMember {
    /// The member transaction.
    pub xid: u32,
    /// PostgreSQL's `MultiXactStatus` (for-key-share … update).
    pub status: u8,
}

/// A change to one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// A PostgreSQL WAL record, exactly as written (header and body, reassembled).
    Postgres {
        /// Where the record starts; it ends at the LSN it is stored under.
        start_lsn: Lsn,
        /// Whether replaying it does not need the previous page content (an FPI, or a
        /// record with `BKPBLOCK_WILL_INIT` for this block).
        will_init: bool,
        /// The raw `XLogRecord`.
        rec: Bytes,
    },
    /// Set the CLOG status of transactions on this CLOG page.
    ClogSetStatus {
        /// Transactions whose two status bits live on this page.
        xids: Vec<u32>,
        /// The new status.
        status: ClogStatus,
        /// Commit or abort time (`TimestampTz`), kept for time-to-LSN lookups; not part
        /// of the page.
        timestamp: i64,
    },
    /// Set multixact starting offsets on this offsets page: a new multixact's own, and
    /// (since PostgreSQL 15.14, `RecordNewMultiXact`) the next one's, which is where the new
    /// one's members end. Entries for other pages are ignored.
    MultixactOffsets {
        /// `(multixact id, offset of its first member)` pairs.
        entries: Vec<(u32, u32)>,
    },
    /// Record multixact members; only those that fall on this members page are applied.
    MultixactMembersCreate {
        /// Offset of the first member.
        moff: u32,
        /// The members, at consecutive offsets from `moff`.
        members: Vec<MultiXactMember>,
    },
    /// Clear visibility-map bits of heap blocks that map to this VM page (PostgreSQL
    /// clears them as a side effect of heap changes, without a block reference).
    ClearVisibilityMapFlags {
        /// Heap block numbers whose bits to clear.
        heap_blknos: Vec<u32>,
        /// Which bits: `VISIBILITYMAP_ALL_VISIBLE` (1) and/or `ALL_FROZEN` (2).
        flags: u8,
    },
    /// The relation was truncated to `heap_blocks`: clear the bits of every later heap
    /// block on this VM page.
    TruncateVisibilityMap {
        /// The heap's new size in blocks.
        heap_blocks: u32,
    },
}

impl WalRecord {
    /// Whether the record can be applied without the page's previous content.
    pub fn will_init(&self) -> bool {
        match self {
            WalRecord::Postgres { will_init, .. } => *will_init,
            _ => false,
        }
    }

    /// Whether PostgreSQL must replay it (as opposed to Rust).
    pub fn is_postgres(&self) -> bool {
        matches!(self, WalRecord::Postgres { .. })
    }
}
