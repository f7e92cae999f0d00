//! Names of relation forks and of their blocks, as PostgreSQL identifies them.
//!
//! A [`RelTag`] is PostgreSQL's `RelFileNode` plus a fork number; a [`BufferTag`] adds a
//! block number. Ordering is (spcnode, dbnode, relnode, forknum[, blkno]), so sorted
//! collections group a relation's forks and blocks together.

use std::fmt;

use serde::{Deserialize, Serialize};

/// PostgreSQL's main fork.
pub const MAIN_FORKNUM: u8 = 0;
/// The free-space map fork.
pub const FSM_FORKNUM: u8 = 1;
/// The visibility-map fork.
pub const VISIBILITYMAP_FORKNUM: u8 = 2;
/// The init fork of unlogged relations.
pub const INIT_FORKNUM: u8 = 3;
/// The largest valid fork number.
pub const MAX_FORKNUM: u8 = INIT_FORKNUM;

/// One fork of one relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelTag {
    /// Tablespace OID.
    pub spcnode: u32,
    /// Database OID (0 for shared relations).
    pub dbnode: u32,
    /// Relation file node.
    pub relnode: u32,
    /// Fork number: main, fsm, vm or init.
    pub forknum: u8,
}

impl fmt::Display for RelTag {
    /// PostgreSQL's path-like form: `spc/db/rel` plus `_fsm`, `_vm` or `_init`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode)?;
        match self.forknum {
            MAIN_FORKNUM => Ok(()),
            FSM_FORKNUM => f.write_str("_fsm"),
            VISIBILITYMAP_FORKNUM => f.write_str("_vm"),
            INIT_FORKNUM => f.write_str("_init"),
            other => write!(f, "_fork{other}"),
        }
    }
}

/// One block of one relation fork: what a page request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BufferTag {
    /// The relation fork.
    pub rel: RelTag,
    /// The block number within the fork.
    pub blkno: u32,
}

impl fmt::Display for BufferTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} blk {}", self.rel, self.blkno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_order() {
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: VISIBILITYMAP_FORKNUM,
        };
        assert_eq!(rel.to_string(), "1663/5/16384_vm");
        let main = RelTag {
            forknum: MAIN_FORKNUM,
            ..rel
        };
        assert!(
            main < rel,
            "forks of one relation sort together, main first"
        );
        let tag = BufferTag {
            rel: main,
            blkno: 7,
        };
        assert_eq!(tag.to_string(), "1663/5/16384 blk 7");
    }
}
