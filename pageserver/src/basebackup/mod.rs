//! Basebackup: a complete PostgreSQL 15 data directory at one LSN, as a tar stream, from
//! which the stock server starts without recovery and writes WAL continuing at that LSN.
//!
//! What goes in (docs/basebackup.md): every fork of every relation (split into 1 GiB
//! segment files), the relation maps, `PG_VERSION` per database, the SLRUs, two-phase
//! state files, the kept root files (`PG_VERSION`, configuration), the empty directories
//! PostgreSQL expects, and the two files built by [`startup`]: `pg_control` and the WAL
//! segment with a shutdown checkpoint record at the LSN.
//!
//! Invariants:
//! * Everything is read at one LSN, so the directory is one consistent state: every page's
//!   LSN is at most the LSN, and pg_xact, pg_multixact and nextXid agree.
//! * Memory is bounded regardless of database size: pages are read and written one
//!   relation segment at a time, a few in flight ([`READ_AHEAD`]); only SLRU segments
//!   (256 KiB) and the WAL segment (16 MiB) are built whole.
//! * An unlogged relation's main fork is its init fork: after a clean shutdown PostgreSQL
//!   does not reset unlogged relations, and their contents are not in the WAL anyway.
//! * Errors found before the first byte (bad LSN, LSN not reached, timeline gone) are
//!   returned by [`prepare`]; an error mid-stream ends the stream without its end-of-archive
//!   marker, so a client never mistakes a truncated archive for a complete one.

pub mod startup;
pub mod tar_stream;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use pageserver_api::reltag::{
    FSM_FORKNUM, INIT_FORKNUM, MAIN_FORKNUM, RelTag, VISIBILITYMAP_FORKNUM,
};
use postgres_ffi::controlfile::{CheckPoint, ControlFileData};
use postgres_ffi::types::{DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::info;
use utils::Lsn;

use crate::keyspace::{self, CHECKPOINT_KEY, CONTROLFILE_KEY};
use crate::metrics;
use crate::timeline::Timeline;
use crate::timeline::read::ReadError;
use crate::walingest::SlruKind;
use postgres_ffi::BLCKSZ;
use tar_stream::TarStream;

/// Blocks per relation segment file (1 GiB), PostgreSQL's `RELSEG_SIZE`.
const RELSEG_BLOCKS: u32 = 131_072;

/// Pages read ahead of the one being written (overlaps page rebuilds).
const READ_AHEAD: usize = 16;

/// The directories a PostgreSQL 15 data directory has (initdb creates them; the server
/// refuses to start, or fails later, without them).
const DIRECTORIES: &[&str] = &[
    "global",
    "base",
    "pg_wal",
    "pg_wal/archive_status",
    "pg_xact",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "pg_subtrans",
    "pg_twophase",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_tblspc",
    "pg_logical",
    "pg_logical/snapshots",
    "pg_logical/mappings",
];

/// Why a basebackup failed.
#[derive(Debug, thiserror::Error)]
pub enum BasebackupError {
    /// The request is malformed (an LSN not on a record boundary).
    #[error("{0}")]
    BadRequest(String),
    /// Reading the timeline failed (or the LSN is out of range or not reached).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The stored state cannot make a data directory (missing or corrupt pg_control,
    /// a user tablespace).
    #[error("{0}")]
    Unsupported(String),
    /// Writing the stream failed (usually: the client went away).
    #[error("writing the basebackup: {0}")]
    Io(#[from] std::io::Error),
}

/// A basebackup ready to be streamed: the LSN is checked and reached.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The timeline.
    pub timeline: Arc<Timeline>,
    /// The LSN of the data directory.
    pub lsn: Lsn,
    /// Start of the record ending at `lsn` (0 when not known).
    pub prev_record: Lsn,
}

/// What a finished basebackup wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Tar bytes (before compression).
    pub tar_bytes: u64,
    /// Relation forks.
    pub relations: u64,
    /// Relation pages.
    pub pages: u64,
}

/// Resolves and checks the LSN (default: the last record LSN), waiting up to `wait` for
/// it to be ingested.
pub async fn prepare(
    timeline: Arc<Timeline>,
    lsn: Option<Lsn>,
    wait: Duration,
) -> Result<Prepared, BasebackupError> {
    let lsn = lsn.unwrap_or_else(|| timeline.last_record_lsn());
    // Below the timeline's start first (0/0 included): that is the timeline's state, not a
    // malformed request.
    timeline.check_read_lsn(lsn)?;
    if !lsn.is_aligned() {
        return Err(BasebackupError::BadRequest(format!(
            "basebackup at {lsn}: not on a record boundary (WAL records are 8-byte aligned)"
        )));
    }
    timeline.wait_lsn(lsn, wait).await?;
    let last = timeline.last_record();
    let prev_record = match last.prev {
        Some(p) if last.last == lsn => p,
        _ => Lsn(0),
    };
    Ok(Prepared {
        timeline,
        lsn,
        prev_record,
    })
}

/// Writes the tar stream of `p` to `out` (gzip-compressed when `gzip`), flushes and shuts
/// `out` down.
pub async fn write<W: AsyncWrite + Unpin + Send>(
    p: &Prepared,
    out: W,
    gzip: bool,
) -> Result<Stats, BasebackupError> {
    let started = Instant::now();
    let result = if gzip {
        let enc = async_compression::tokio::write::GzipEncoder::with_quality(
            out,
            async_compression::Level::Fastest,
        );
        write_tar(p, enc).await
    } else {
        write_tar(p, out).await
    };
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::BASEBACKUPS.with_label_values(&[outcome]).inc();
    if let Ok(s) = &result {
        metrics::BASEBACKUP_BYTES.inc_by(s.tar_bytes);
        let secs = started.elapsed().as_secs_f64();
        metrics::BASEBACKUP_SECONDS.observe(secs);
        info!(
            tenant_id = %p.timeline.tenant_id,
            timeline_id = %p.timeline.timeline_id,
            lsn = %p.lsn,
            "basebackup: {} relation forks, {} pages, {} MiB of tar in {:.3} s",
            s.relations,
            s.pages,
            s.tar_bytes >> 20,
            secs
        );
    }
    result
}

async fn write_tar<W: AsyncWrite + Unpin + Send>(
    p: &Prepared,
    out: W,
) -> Result<Stats, BasebackupError> {
    let tl = &p.timeline;
    let lsn = p.lsn;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut tar = TarStream::new(out, now);
    let mut stats = Stats::default();

    // The startup files first: a corrupt pg_control fails before anything big is sent.
    let control = tl.get(CONTROLFILE_KEY, lsn).await?.ok_or_else(|| {
        BasebackupError::Unsupported(format!("the timeline has no pg_control at {lsn}"))
    })?;
    let control = ControlFileData::decode(&control)
        .map_err(|e| BasebackupError::Unsupported(format!("stored pg_control: {e}")))?;
    let ckpt = tl.get(CHECKPOINT_KEY, lsn).await?.ok_or_else(|| {
        BasebackupError::Unsupported(format!("the timeline has no checkpoint state at {lsn}"))
    })?;
    let ckpt = CheckPoint::decode(&ckpt)
        .map_err(|e| BasebackupError::Unsupported(format!("stored checkpoint: {e}")))?;
    let startup = startup::startup_files(&control, &ckpt, lsn, p.prev_record, now as i64)
        .map_err(BasebackupError::Unsupported)?;

    for d in DIRECTORIES {
        tar.dir(d).await?;
    }
    for (path, contents) in kept_files(tl, lsn)? {
        tar.file(&path, &contents).await?;
    }
    tar.file("global/pg_control", &startup.control).await?;

    let rels = tl.list_all_rels(lsn)?;
    let mut dbs: BTreeSet<(u32, u32)> = tl.list_dbs(lsn)?.into_iter().collect();
    dbs.extend(rels.keys().map(|r| (r.spcnode, r.dbnode)));
    for &(spc, db) in &dbs {
        let dir = db_dir(spc, db)?;
        if spc == DEFAULTTABLESPACE_OID {
            tar.dir(&dir).await?;
            tar.file(&format!("{dir}/PG_VERSION"), b"15\n").await?;
        }
        if let Some(map) = tl.get(keyspace::relmap_key(spc, db), lsn).await?
            && !map.is_empty()
        {
            tar.file(&format!("{dir}/pg_filenode.map"), &map).await?;
        }
    }

    let unlogged: BTreeSet<(u32, u32, u32)> = rels
        .keys()
        .filter(|r| r.forknum == INIT_FORKNUM)
        .map(|r| (r.spcnode, r.dbnode, r.relnode))
        .collect();
    for (&rel, &nblocks) in &rels {
        let is_unlogged = unlogged.contains(&(rel.spcnode, rel.dbnode, rel.relnode));
        if is_unlogged && rel.forknum != INIT_FORKNUM {
            continue;
        }
        write_fork(&mut tar, tl, rel, rel, nblocks, lsn, &mut stats).await?;
        if is_unlogged {
            let main = RelTag {
                forknum: MAIN_FORKNUM,
                ..rel
            };
            write_fork(&mut tar, tl, rel, main, nblocks, lsn, &mut stats).await?;
        }
    }

    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
    ] {
        for segno in tl.list_slru_segments(kind, lsn)?.into_keys() {
            let data = tl.get_slru_segment(kind, segno, lsn).await?;
            tar.file(&format!("{}/{segno:04X}", keyspace::slru_dir(kind)), &data)
                .await?;
        }
    }
    for (key, state) in tl.scan_latest(keyspace::kind_range(keyspace::KIND_TWOPHASE), lsn)? {
        tar.file(&format!("pg_twophase/{:08X}", key.f6), &state)
            .await?;
    }
    for (name, seg) in &startup.wal_segments {
        tar.file(&format!("pg_wal/{name}"), seg).await?;
    }
    stats.tar_bytes = tar.written() + 1024;
    let mut out = tar.finish().await?;
    out.shutdown().await?;
    Ok(stats)
}

/// The root files kept by path (`PG_VERSION`, the configuration files), checked to be
/// plain relative paths.
fn kept_files(tl: &Timeline, lsn: Lsn) -> Result<Vec<(String, Bytes)>, BasebackupError> {
    let mut out = Vec::new();
    for (key, v) in tl.scan_latest(keyspace::kind_range(keyspace::KIND_FILE), lsn)? {
        let Some((path, contents)) = keyspace::decode_file_value(&v) else {
            return Err(BasebackupError::Unsupported(format!(
                "stored file under key {key} does not decode"
            )));
        };
        let safe = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !safe || path == "global/pg_control" {
            return Err(BasebackupError::Unsupported(format!(
                "stored file has an unusable path {path:?}"
            )));
        }
        out.push((path.to_string(), Bytes::copy_from_slice(contents)));
    }
    Ok(out)
}

/// `global` or `base/<db>`; user tablespaces are not supported (import refuses them).
fn db_dir(spc: u32, db: u32) -> Result<String, BasebackupError> {
    match spc {
        GLOBALTABLESPACE_OID => Ok("global".into()),
        DEFAULTTABLESPACE_OID => Ok(format!("base/{db}")),
        _ => Err(BasebackupError::Unsupported(format!(
            "tablespace {spc} (database {db}): user tablespaces are not supported"
        ))),
    }
}

/// The file name of segment `segno` of a fork.
fn rel_file_path(rel: RelTag, segno: u32) -> Result<String, BasebackupError> {
    let dir = db_dir(rel.spcnode, rel.dbnode)?;
    let fork = match rel.forknum {
        MAIN_FORKNUM => "",
        FSM_FORKNUM => "_fsm",
        VISIBILITYMAP_FORKNUM => "_vm",
        INIT_FORKNUM => "_init",
        f => {
            return Err(BasebackupError::Unsupported(format!(
                "relation {} has fork {f}",
                rel.relnode
            )));
        }
    };
    Ok(if segno == 0 {
        format!("{dir}/{}{fork}", rel.relnode)
    } else {
        format!("{dir}/{}{fork}.{segno}", rel.relnode)
    })
}

/// Writes the fork `source` (of `nblocks` pages) as the files of `target`.
async fn write_fork<W: AsyncWrite + Unpin + Send>(
    tar: &mut TarStream<W>,
    tl: &Timeline,
    source: RelTag,
    target: RelTag,
    nblocks: u32,
    lsn: Lsn,
    stats: &mut Stats,
) -> Result<(), BasebackupError> {
    stats.relations += 1;
    let segments = nblocks.div_ceil(RELSEG_BLOCKS).max(1);
    for segno in 0..segments {
        let first = segno * RELSEG_BLOCKS;
        let end = (first + RELSEG_BLOCKS).min(nblocks);
        let path = rel_file_path(target, segno)?;
        tar.begin_file(&path, u64::from(end - first) * BLCKSZ as u64)
            .await?;
        let mut pages = futures::stream::iter(first..end)
            .map(|blk| tl.get(keyspace::rel_block_key(source, blk), lsn))
            .buffered(READ_AHEAD);
        while let Some(page) = pages.next().await {
            match page? {
                Some(p) if p.len() == BLCKSZ => tar.write(&p).await?,
                Some(p) if p.is_empty() => tar.write(&[0u8; BLCKSZ]).await?,
                Some(p) => {
                    return Err(BasebackupError::Unsupported(format!(
                        "a page of relation {source} is {} bytes",
                        p.len()
                    )));
                }
                None => tar.write(&[0u8; BLCKSZ]).await?,
            }
            stats.pages += 1;
        }
        tar.end_file().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_file_names_follow_postgres() {
        let r = |spc, db, rel, fork| RelTag {
            spcnode: spc,
            dbnode: db,
            relnode: rel,
            forknum: fork,
        };
        assert_eq!(
            rel_file_path(r(1663, 5, 16384, 0), 0).unwrap(),
            "base/5/16384"
        );
        assert_eq!(
            rel_file_path(r(1663, 5, 16384, 1), 0).unwrap(),
            "base/5/16384_fsm"
        );
        assert_eq!(
            rel_file_path(r(1663, 5, 16384, 2), 3).unwrap(),
            "base/5/16384_vm.3"
        );
        assert_eq!(
            rel_file_path(r(1663, 5, 16384, 3), 0).unwrap(),
            "base/5/16384_init"
        );
        assert_eq!(
            rel_file_path(r(1664, 0, 1262, 0), 1).unwrap(),
            "global/1262.1"
        );
        assert!(rel_file_path(r(16500, 5, 1, 0), 0).is_err());
    }
}
