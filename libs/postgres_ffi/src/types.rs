//! Identifiers PostgreSQL uses in its on-disk formats: OIDs, transaction ids, relation file
//! nodes, fork numbers and block numbers.
//!
//! `RelFileNode` (PostgreSQL 16 renamed it `RelFileLocator`; the layout did not change) is three
//! `u32`s: tablespace, database and relation file number, 12 bytes with no padding. A block is
//! addressed by relation, fork and block number: the one type for that is
//! `pageserver_api::reltag::BufferTag`, which page requests carry (this crate names only
//! what the formats contain).

use std::fmt;

use crate::reader::{Reader, ShortInput};

/// An object identifier (`Oid`).
pub type Oid = u32;
/// A 32-bit transaction id (`TransactionId`).
pub type TransactionId = u32;
/// A multixact id (`MultiXactId`).
pub type MultiXactId = u32;
/// An offset into the multixact members SLRU (`MultiXactOffset`).
pub type MultiXactOffset = u32;
/// A block number within one fork of a relation (`BlockNumber`).
pub type BlockNumber = u32;
/// Microseconds since 2000-01-01 00:00:00 UTC (`TimestampTz`).
pub type TimestampTz = i64;
/// A WAL timeline id (`TimeLineID`).
pub type TimeLineId = u32;
/// A replication origin id (`RepOriginId`).
pub type RepOriginId = u16;

/// `InvalidTransactionId`.
pub const INVALID_TRANSACTION_ID: TransactionId = 0;
/// `FirstNormalTransactionId`: ids below it are special (bootstrap, frozen).
pub const FIRST_NORMAL_TRANSACTION_ID: TransactionId = 3;
/// `InvalidOid`.
pub const INVALID_OID: Oid = 0;
/// `InvalidBlockNumber`: "no block", e.g. a relation size that is not known.
pub const INVALID_BLOCK_NUMBER: BlockNumber = u32::MAX;
/// The `pg_default` tablespace (`DEFAULTTABLESPACE_OID`).
pub const DEFAULTTABLESPACE_OID: Oid = 1663;
/// The `pg_global` tablespace of shared catalogs (`GLOBALTABLESPACE_OID`).
pub const GLOBALTABLESPACE_OID: Oid = 1664;

/// Seconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
pub const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// Converts a [`TimestampTz`] to microseconds since the Unix epoch.
pub fn timestamptz_to_unix_micros(ts: TimestampTz) -> i64 {
    ts.saturating_add(POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000)
}

/// Converts microseconds since the Unix epoch to a [`TimestampTz`].
pub fn unix_micros_to_timestamptz(micros: i64) -> TimestampTz {
    micros.saturating_sub(POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000)
}

/// The physical file of a relation: `(spcNode, dbNode, relNode)`.
///
/// This is what WAL records name, not the relation's OID; `ALTER TABLE ... SET TABLESPACE`,
/// `TRUNCATE` and `VACUUM FULL` give a relation a new node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelFileNode {
    /// Tablespace OID.
    pub spc_node: Oid,
    /// Database OID; 0 for shared relations in `pg_global`.
    pub db_node: Oid,
    /// Relation file number (`relfilenode`).
    pub rel_node: Oid,
}

impl RelFileNode {
    /// The on-disk size of a `RelFileNode`.
    pub const SIZE: usize = 12;

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ShortInput> {
        Ok(RelFileNode {
            spc_node: r.u32()?,
            db_node: r.u32()?,
            rel_node: r.u32()?,
        })
    }

    /// Parses the 12-byte on-disk form.
    pub fn decode(buf: &[u8]) -> Result<Self, ShortInput> {
        Self::read(&mut Reader::new(buf))
    }

    /// The 12-byte on-disk form.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&self.spc_node.to_le_bytes());
        out[4..8].copy_from_slice(&self.db_node.to_le_bytes());
        out[8..12].copy_from_slice(&self.rel_node.to_le_bytes());
        out
    }

    /// The file path of this relation's main fork relative to the data directory, as
    /// PostgreSQL's `relpathperm` prints it (`base/5/16384`, `global/1262`,
    /// `pg_tblspc/16400/PG_15_202209061/5/16384`).
    pub fn path(&self) -> String {
        self.fork_path(ForkNumber::Main)
    }

    /// The file path of one fork (`base/5/16384_vm`), see [`RelFileNode::path`].
    pub fn fork_path(&self, fork: ForkNumber) -> String {
        let suffix = match fork {
            ForkNumber::Main => String::new(),
            other => format!("_{}", other.name()),
        };
        let dir = if self.spc_node == GLOBALTABLESPACE_OID {
            "global".to_string()
        } else if self.spc_node == DEFAULTTABLESPACE_OID {
            format!("base/{}", self.db_node)
        } else {
            format!(
                "pg_tblspc/{}/{}/{}",
                self.spc_node,
                crate::v15::TABLESPACE_VERSION_DIRECTORY,
                self.db_node
            )
        };
        format!("{dir}/{}{suffix}", self.rel_node)
    }
}

impl fmt::Display for RelFileNode {
    /// `spc/db/rel`, the form `pg_waldump` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spc_node, self.db_node, self.rel_node)
    }
}

/// Which file of a relation a block belongs to (`ForkNumber`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ForkNumber {
    /// The main data (`MAIN_FORKNUM`).
    Main = 0,
    /// The free space map (`FSM_FORKNUM`).
    Fsm = 1,
    /// The visibility map (`VISIBILITYMAP_FORKNUM`).
    VisibilityMap = 2,
    /// The init fork of an unlogged relation (`INIT_FORKNUM`).
    Init = 3,
}

impl ForkNumber {
    /// Every fork, in number order.
    pub const ALL: [ForkNumber; 4] = [
        ForkNumber::Main,
        ForkNumber::Fsm,
        ForkNumber::VisibilityMap,
        ForkNumber::Init,
    ];

    /// The fork with this number, if it is one (`0..=3`).
    pub fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }

    /// Same as [`ForkNumber::from_u8`] for the `int` forks some records carry.
    pub fn from_i32(n: i32) -> Option<Self> {
        u8::try_from(n).ok().and_then(Self::from_u8)
    }

    /// The fork's name as in file names and `pg_waldump` (`main`, `fsm`, `vm`, `init`).
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::Fsm => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }
}

impl fmt::Display for ForkNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `a` is logically before `b` in the circular 32-bit xid space
/// (`TransactionIdPrecedes`); permanent ids (< 3) compare by value.
pub fn transaction_id_precedes(a: TransactionId, b: TransactionId) -> bool {
    if a < FIRST_NORMAL_TRANSACTION_ID || b < FIRST_NORMAL_TRANSACTION_ID {
        return a < b;
    }
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relfilenode_round_trip_and_paths() {
        let rel = RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: 16384,
        };
        assert_eq!(RelFileNode::decode(&rel.encode()).unwrap(), rel);
        assert_eq!(rel.to_string(), "1663/5/16384");
        assert_eq!(rel.path(), "base/5/16384");
        assert_eq!(rel.fork_path(ForkNumber::VisibilityMap), "base/5/16384_vm");
        let shared = RelFileNode {
            spc_node: GLOBALTABLESPACE_OID,
            db_node: 0,
            rel_node: 1262,
        };
        assert_eq!(shared.path(), "global/1262");
        let ts = RelFileNode {
            spc_node: 16400,
            db_node: 5,
            rel_node: 1,
        };
        assert_eq!(
            ts.fork_path(ForkNumber::Fsm),
            "pg_tblspc/16400/PG_15_202209061/5/1_fsm"
        );
        assert!(RelFileNode::decode(&[0; 11]).is_err());
    }

    #[test]
    fn forks_and_xids() {
        assert_eq!(ForkNumber::from_u8(2), Some(ForkNumber::VisibilityMap));
        assert_eq!(ForkNumber::from_u8(4), None);
        assert_eq!(ForkNumber::from_i32(-1), None);
        assert!(transaction_id_precedes(100, 200));
        assert!(transaction_id_precedes(u32::MAX - 5, 10), "wraps around");
        assert!(transaction_id_precedes(2, 100));
        assert_eq!(
            timestamptz_to_unix_micros(unix_micros_to_timestamptz(1_700_000_000_000_000)),
            1_700_000_000_000_000
        );
    }
}
