//! Oracle tests: WAL, `pg_control` and page images produced by a real PostgreSQL 15 are
//! decoded with this crate and compared with what PostgreSQL's own tools say.
//!
//! Each test initdbs a scratch cluster (run as the `strata` user when we are root), runs a
//! varied workload, stops the server, and then checks:
//!
//! * every record in `pg_wal` against `pg_waldump -b`: LSN, prev link, lengths, xid, rmgr,
//!   record type, block references (relation, fork, block, image flags, hole, compression);
//! * the rmgr-specific parsers against the descriptions `pg_waldump` prints;
//! * every page image restores (decompression, hole) to a page whose header matches the hole;
//! * images of a database created with `STRATEGY wal_log` against the data files on disk;
//! * the end of valid WAL against where `pg_waldump` stops;
//! * `pg_control` against `pg_controldata`, and a modified copy we write against
//!   `pg_controldata` again.
//!
//! Variants differ in `wal_compression`, segment size, `wal_level` and consistency checking.
//! The clusters are [`pg_oracle::TestPostgres`] servers.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use common::waldump::{DumpRecord, parse_lsn, parse_waldump, pg_lsn, pg_timestamp};
use pg_oracle::TestPostgres;
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::decoder::{WalDecoderConfig, WalStreamDecoder};
use postgres_ffi::records::dbase::DbaseRecord;
use postgres_ffi::records::multixact::MultiXactRecord;
use postgres_ffi::records::smgr::SmgrRecord;
use postgres_ffi::records::standby::StandbyRecord;
use postgres_ffi::records::xact::{XactCompletionKind, XactRecord};
use postgres_ffi::records::xlog::XlogRecord;
use postgres_ffi::records::{RmgrRecord, clog::ClogRecord, identify, parse_record};
use postgres_ffi::v15::*;
use postgres_ffi::wal_segment::{self, EndOfWalReason};
use postgres_ffi::{BLCKSZ, DecodedWalRecord, Lsn, PgMajorVersion, page};

struct Variant {
    name: &'static str,
    compression: &'static str,
    wal_segsize_mb: u32,
    wal_level: &'static str,
    consistency_checking: Option<&'static str>,
}

fn copy_rows(from: u32, n: u32) -> String {
    let mut s = String::from("COPY t (a, b, c) FROM stdin;\n");
    for i in from..from + n {
        let _ = writeln!(s, "{i}\tcopied row {i}\t{}", i % 23);
    }
    s.push_str("\\.\n");
    s
}

/// A workload touching every record type the parsers care about.
fn workload() -> String {
    let mut sql = String::from(
        r#"
CREATE TABLE t (a int PRIMARY KEY, b text, c int) WITH (autovacuum_enabled = off);
CREATE INDEX t_c_hash ON t USING hash (c);
INSERT INTO t SELECT g, repeat('x', g % 100), g % 17 FROM generate_series(1, 5000) g;
"#,
    );
    sql.push_str(&copy_rows(10_001, 2000));
    sql.push_str(
        r#"
CREATE TABLE docs (id int, tags int[], words tsvector);
CREATE INDEX docs_tags ON docs USING gin (tags);
CREATE INDEX docs_words ON docs USING gin (words);
INSERT INTO docs SELECT g, ARRAY[g % 10, g % 7, g % 3], to_tsvector('simple', 'word' || (g % 50) || ' other' || (g % 13)) FROM generate_series(1, 3000) g;
CREATE TABLE pts (id int, p point, r int4range);
CREATE INDEX pts_gist ON pts USING gist (p);
CREATE INDEX pts_spgist ON pts USING spgist (r);
CREATE INDEX pts_brin ON pts USING brin (id);
INSERT INTO pts SELECT g, point(g % 100, g / 100), int4range(g, g + 10) FROM generate_series(1, 4000) g;
CREATE SEQUENCE seq;
SELECT count(nextval('seq')) FROM generate_series(1, 200);
CREATE UNLOGGED TABLE unl (a int);
INSERT INTO unl SELECT generate_series(1, 100);
BEGIN; INSERT INTO t VALUES (100001, 'a', 1); SAVEPOINT s1; INSERT INTO t VALUES (100002, 'b', 2);
  SAVEPOINT s2; INSERT INTO t VALUES (100003, 'c', 3); RELEASE s2; ROLLBACK TO s1;
  INSERT INTO t VALUES (100004, 'd', 4); COMMIT;
DO $$ BEGIN FOR i IN 1..80 LOOP BEGIN INSERT INTO t VALUES (200000 + i, 'sub', i); EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
BEGIN; CREATE TABLE doomed (a int); INSERT INTO doomed VALUES (1); ROLLBACK;
BEGIN; INSERT INTO t VALUES (300001, 'never', 0); ROLLBACK;
BEGIN; INSERT INTO t VALUES (400001, 'p1', 1); SAVEPOINT sp; INSERT INTO t VALUES (400002, 'p2', 2);
  CREATE TABLE twopc_new (a int); PREPARE TRANSACTION 'gx_commit';
COMMIT PREPARED 'gx_commit';
BEGIN; INSERT INTO t VALUES (400003, 'p3', 3); CREATE TABLE twopc_abort (a int); PREPARE TRANSACTION 'gx_abort';
ROLLBACK PREPARED 'gx_abort';
BEGIN; SELECT a FROM t WHERE a = 1 FOR SHARE; SAVEPOINT m; UPDATE t SET b = 'multi' WHERE a = 1; COMMIT;
BEGIN; SELECT a FROM t WHERE a = 2 FOR KEY SHARE; SAVEPOINT m1; SELECT a FROM t WHERE a = 2 FOR SHARE;
  SAVEPOINT m2; DELETE FROM t WHERE a = 2; COMMIT;
VACUUM (FREEZE) t;
UPDATE t SET b = 'u' WHERE a % 97 = 0;
DELETE FROM t WHERE a % 89 = 0;
BEGIN; SELECT a FROM t WHERE a = 1000 FOR UPDATE; COMMIT;
VACUUM (FREEZE) t;
INSERT INTO t SELECT g, 'refill', 1 FROM generate_series(900001, 900050) g;
"#,
    );
    sql.push_str(&copy_rows(20_001, 300));
    sql.push_str(
        r#"
CREATE TABLE vt (a int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO vt SELECT g, repeat('p', 200) FROM generate_series(1, 20000) g;
DELETE FROM vt WHERE a > 1000;
VACUUM vt;
TRUNCATE pts;
DROP TABLE docs;
VACUUM FULL t;
VACUUM FULL pg_class;
ALTER DATABASE template0 WITH ALLOW_CONNECTIONS true;
\c template0
SET vacuum_multixact_freeze_min_age = 0;
SET vacuum_freeze_min_age = 0;
VACUUM (FREEZE);
\c template1
SET vacuum_multixact_freeze_min_age = 0;
SET vacuum_freeze_min_age = 0;
VACUUM (FREEZE);
\c postgres
SET vacuum_multixact_freeze_min_age = 0;
SET vacuum_freeze_min_age = 0;
VACUUM (FREEZE);
CREATE DATABASE d_wal STRATEGY wal_log;
CREATE DATABASE d_copy STRATEGY file_copy;
DROP DATABASE d_copy;
SELECT pg_replication_origin_create('strata_origin');
SELECT pg_replication_origin_session_setup('strata_origin');
BEGIN; SELECT pg_replication_origin_xact_setup('0/12345678', '2024-01-02 03:04:05+00');
  INSERT INTO t VALUES (600001, 'origin', 6); COMMIT;
SELECT pg_replication_origin_session_reset();
SELECT pg_logical_emit_message(false, 'strata', repeat('m', 100000));
SELECT pg_logical_emit_message(true, 'strata', repeat('n', 3000000));
CHECKPOINT;
SELECT pg_switch_wal();
INSERT INTO t VALUES (700001, 'after switch', 7);
CHECKPOINT;
"#,
    );
    sql
}

/// What a decoded WAL directory holds.
struct DecodedWal {
    records: Vec<(Lsn, Lsn, DecodedWalRecord)>,
    stop: String,
}

fn decode_wal_dir(dir: &Path, seg_size: u64) -> DecodedWal {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read pg_wal")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| wal_segment::is_xlog_file_name(n))
        .collect();
    names.sort();
    let (first, tli) = wal_segment::parse_xlog_file_name(&names[0], seg_size).expect("segment");
    let start = Lsn(first * seg_size);
    let config = WalDecoderConfig {
        version: PgMajorVersion::V15,
        seg_size,
        system_id: None,
    };
    let mut decoder = WalStreamDecoder::new(start, config);
    let mut records = Vec::new();
    let mut segno = first;
    let stop = loop {
        let name = wal_segment::xlog_file_name(tli, segno, seg_size);
        let Ok(bytes) = fs::read(dir.join(&name)) else {
            break format!("segment {name} missing");
        };
        decoder.feed_bytes(&bytes);
        let mut err = None;
        loop {
            match decoder.poll_decode() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            break e.to_string();
        }
        segno += 1;
    };
    DecodedWal { records, stop }
}

fn fork_name(fork: postgres_ffi::ForkNumber) -> &'static str {
    fork.name()
}

/// Compares one decoded record with `pg_waldump`'s view of it.
fn compare_record(start: Lsn, rec: &DecodedWalRecord, dump: &DumpRecord, errors: &mut Vec<String>) {
    let mut err = |what: String| errors.push(format!("record at {start}: {what}"));
    if dump.lsn != start {
        err(format!("pg_waldump has LSN {}", dump.lsn));
        return;
    }
    if dump.prev != rec.header.prev {
        err(format!("prev {} vs {}", rec.header.prev, dump.prev));
    }
    if dump.tot_len as usize != rec.raw.len() {
        err(format!("tot_len {} vs {}", rec.raw.len(), dump.tot_len));
    }
    if dump.rec_len as usize != rec.raw.len() - rec.fpi_len() {
        err(format!(
            "rec_len {} vs {}",
            rec.raw.len() - rec.fpi_len(),
            dump.rec_len
        ));
    }
    if dump.xid != rec.xid() {
        err(format!("xid {} vs {}", rec.xid(), dump.xid));
    }
    if dump.rmgr != rmgr_name(rec.rmid()) {
        err(format!("rmgr {} vs {}", rmgr_name(rec.rmid()), dump.rmgr));
    }
    let known = [
        RM_XLOG_ID,
        RM_XACT_ID,
        RM_SMGR_ID,
        RM_CLOG_ID,
        RM_DBASE_ID,
        RM_MULTIXACT_ID,
        RM_RELMAP_ID,
        RM_STANDBY_ID,
        RM_HEAP_ID,
        RM_HEAP2_ID,
    ];
    match identify(rec.rmid(), rec.header.info) {
        Some(id) if id != dump.identify => err(format!("identify {id} vs {}", dump.identify)),
        None if known.contains(&rec.rmid()) => {
            err(format!("no identify for {} {}", dump.rmgr, dump.identify))
        }
        _ => {}
    }
    if dump.blocks.len() != rec.blocks.len() {
        err(format!(
            "{} blocks vs {}",
            rec.blocks.len(),
            dump.blocks.len()
        ));
        return;
    }
    for (b, d) in rec.blocks.iter().zip(&dump.blocks) {
        let mut problems = Vec::new();
        if b.block_id != d.id {
            problems.push(format!("id {} vs {}", b.block_id, d.id));
        }
        if b.rel.to_string() != d.rel {
            problems.push(format!("rel {} vs {}", b.rel, d.rel));
        }
        if fork_name(b.fork) != d.fork {
            problems.push(format!("fork {} vs {}", b.fork, d.fork));
        }
        if b.blkno != d.blk {
            problems.push(format!("blk {} vs {}", b.blkno, d.blk));
        }
        match (&b.image, &d.image) {
            (None, None) => {}
            (Some(i), Some(di)) => {
                if i.apply() != di.apply {
                    problems.push(format!("apply {} vs {}", i.apply(), di.apply));
                }
                if (u32::from(i.hole_offset), u32::from(i.hole_length))
                    != (di.hole_offset, di.hole_length)
                {
                    problems.push(format!(
                        "hole {}+{} vs {}+{}",
                        i.hole_offset, i.hole_length, di.hole_offset, di.hole_length
                    ));
                }
                let ours = i.compression().map(|m| {
                    (
                        (BLCKSZ - usize::from(i.hole_length) - i.data.len()) as u32,
                        m.name().to_string(),
                    )
                });
                if ours != di.compression {
                    problems.push(format!("compression {ours:?} vs {:?}", di.compression));
                }
            }
            (ours, theirs) => {
                problems.push(format!("image {} vs {}", ours.is_some(), theirs.is_some()))
            }
        }
        if !problems.is_empty() {
            err(format!("block {}: {}", b.block_id, problems.join(", ")));
        }
    }
}

fn segments(desc: &str) -> Vec<&str> {
    desc.split("; ").collect()
}

fn segment_list(desc: &str, prefix: &str) -> Vec<String> {
    segments(desc)
        .into_iter()
        .find_map(|s| s.strip_prefix(prefix))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn hex_flags(desc: &str) -> Option<u8> {
    let i = desc.find("flags 0x")? + "flags 0x".len();
    u8::from_str_radix(desc.get(i..i + 2)?, 16).ok()
}

/// Checks our parse of the rmgr-specific content against `pg_waldump`'s description.
fn compare_parsed(
    start: Lsn,
    rec: &DecodedWalRecord,
    parsed: &Option<RmgrRecord>,
    dump: &DumpRecord,
    stats: &mut BTreeMap<String, usize>,
    errors: &mut Vec<String>,
) {
    let key = format!("{} {}", dump.rmgr, dump.identify);
    let mut err = |what: String| errors.push(format!("{key} at {start}: {what}"));
    let desc = dump.desc.as_str();
    let expect = |ours: String| -> Option<String> {
        (ours != desc).then(|| format!("desc {desc:?}, ours {ours:?}"))
    };
    let problem: Option<String> = match parsed {
        Some(RmgrRecord::Xlog(XlogRecord::Checkpoint {
            shutdown,
            checkpoint: c,
        })) => expect(format!(
            "redo {}; tli {}; prev tli {}; fpw {}; xid {}:{}; oid {}; multi {}; offset {}; oldest xid {} in DB {}; oldest multi {} in DB {}; oldest/newest commit timestamp xid: {}/{}; oldest running xid {}; {}",
            pg_lsn(c.redo),
            c.this_timeline_id,
            c.prev_timeline_id,
            c.full_page_writes,
            c.next_xid_epoch(),
            c.next_xid_xid(),
            c.next_oid,
            c.next_multi,
            c.next_multi_offset,
            c.oldest_xid,
            c.oldest_xid_db,
            c.oldest_multi,
            c.oldest_multi_db,
            c.oldest_commit_ts_xid,
            c.newest_commit_ts_xid,
            c.oldest_active_xid,
            if *shutdown { "shutdown" } else { "online" }
        )),
        Some(RmgrRecord::Xlog(XlogRecord::NextOid(oid))) => expect(oid.to_string()),
        Some(RmgrRecord::Xlog(XlogRecord::ParameterChange(p))) => {
            let level = ["minimal", "replica", "logical"]
                .get(p.wal_level as usize)
                .copied()
                .unwrap_or("?");
            let onoff = |b: bool| if b { "on" } else { "off" };
            expect(format!(
                "max_connections={} max_worker_processes={} max_wal_senders={} max_prepared_xacts={} max_locks_per_xact={} wal_level={level} wal_log_hints={} track_commit_timestamp={}",
                p.max_connections,
                p.max_worker_processes,
                p.max_wal_senders,
                p.max_prepared_xacts,
                p.max_locks_per_xact,
                onoff(p.wal_log_hints),
                onoff(p.track_commit_timestamp)
            ))
        }
        Some(RmgrRecord::Xlog(XlogRecord::Switch | XlogRecord::Fpi | XlogRecord::FpiForHint)) => {
            expect(String::new())
        }
        Some(RmgrRecord::Xact(XactRecord::Completion(c))) => {
            let mut p = Vec::new();
            let mut head = String::new();
            if let Some(x) = c.twophase_xid {
                let _ = write!(head, "{x}: ");
            }
            head.push_str(&pg_timestamp(c.xact_time));
            if segments(desc).first().copied() != Some(head.as_str()) {
                p.push(format!("head {head:?}"));
            }
            let rels: Vec<String> = c.dropped_rels.iter().map(|r| r.path()).collect();
            if segment_list(desc, "rels:") != rels {
                p.push(format!("rels {rels:?}"));
            }
            let subs: Vec<String> = c.subxacts.iter().map(u32::to_string).collect();
            if segment_list(desc, "subxacts:") != subs {
                p.push(format!("subxacts {subs:?}"));
            }
            if let Some((lsn, ts)) = c.origin {
                let o = format!(
                    "origin: node {}, lsn {}, at {}",
                    rec.origin.unwrap_or(0),
                    pg_lsn(lsn),
                    pg_timestamp(ts)
                );
                if !segments(desc).contains(&o.as_str()) {
                    p.push(format!("origin {o:?}"));
                }
                *stats.entry("xact with origin".into()).or_default() += 1;
            }
            if c.kind.is_prepared() && rec.xid() != 0 {
                p.push("prepared completion with an xl_xid".into());
            }
            if matches!(
                c.kind,
                XactCompletionKind::Commit | XactCompletionKind::Abort
            ) && c.xid != rec.xid()
            {
                p.push("xid differs from xl_xid".into());
            }
            (!p.is_empty()).then(|| format!("desc {desc:?}: {}", p.join(", ")))
        }
        Some(RmgrRecord::Xact(XactRecord::Prepare(pr))) => {
            let mut p = Vec::new();
            let head = format!("gid {}: {}", pr.gid, pg_timestamp(pr.prepared_at));
            if segments(desc).first().copied() != Some(head.as_str()) {
                p.push(format!("head {head:?}"));
            }
            let subs: Vec<String> = pr.subxacts.iter().map(u32::to_string).collect();
            if segment_list(desc, "subxacts:") != subs {
                p.push(format!("subxacts {subs:?}"));
            }
            let commit: Vec<String> = pr.commit_rels.iter().map(|r| r.path()).collect();
            if segment_list(desc, "rels(commit):") != commit {
                p.push(format!("commit rels {commit:?}"));
            }
            let abort: Vec<String> = pr.abort_rels.iter().map(|r| r.path()).collect();
            if segment_list(desc, "rels(abort):") != abort {
                p.push(format!("abort rels {abort:?}"));
            }
            if pr.xid != rec.xid() {
                p.push(format!("xid {} vs xl_xid {}", pr.xid, rec.xid()));
            }
            if pr.total_len as usize != pr.state_data.len() + 4 {
                p.push(format!(
                    "total_len {} vs body {}",
                    pr.total_len,
                    pr.state_data.len()
                ));
            }
            (!p.is_empty()).then(|| format!("desc {desc:?}: {}", p.join(", ")))
        }
        Some(RmgrRecord::Xact(XactRecord::Assignment { xtop, subxacts })) => {
            let subs: Vec<String> = subxacts.iter().map(u32::to_string).collect();
            expect(format!("xtop {xtop}: subxacts: {}", subs.join(" ")))
        }
        Some(RmgrRecord::Smgr(SmgrRecord::Create { rel, fork })) => expect(rel.fork_path(*fork)),
        Some(RmgrRecord::Smgr(SmgrRecord::Truncate { rel, blkno, flags })) => {
            expect(format!("{} to {blkno} blocks flags {flags}", rel.path()))
        }
        Some(RmgrRecord::Dbase(DbaseRecord::CreateFileCopy {
            db_id,
            tablespace_id,
            src_db_id,
            src_tablespace_id,
        })) => expect(format!(
            "copy dir {src_tablespace_id}/{src_db_id} to {tablespace_id}/{db_id}"
        )),
        Some(RmgrRecord::Dbase(DbaseRecord::CreateWalLog {
            db_id,
            tablespace_id,
        })) => expect(format!("create dir {tablespace_id}/{db_id}")),
        Some(RmgrRecord::Dbase(DbaseRecord::Drop {
            db_id,
            tablespace_ids,
        })) => {
            let mut s = String::from("dir");
            for ts in tablespace_ids {
                let _ = write!(s, " {ts}/{db_id}");
            }
            expect(s)
        }
        Some(RmgrRecord::Relmap(u)) => expect(format!(
            "database {} tablespace {} size {}",
            u.dbid,
            u.tsid,
            u.data.len()
        )),
        Some(RmgrRecord::Clog(ClogRecord::ZeroPage { pageno })) => expect(format!("page {pageno}")),
        Some(RmgrRecord::Clog(ClogRecord::Truncate {
            pageno,
            oldest_xact,
            ..
        })) => expect(format!("page {pageno}; oldestXact {oldest_xact}")),
        Some(RmgrRecord::MultiXact(MultiXactRecord::ZeroOffPage { pageno }))
        | Some(RmgrRecord::MultiXact(MultiXactRecord::ZeroMemPage { pageno })) => {
            expect(pageno.to_string())
        }
        Some(RmgrRecord::MultiXact(MultiXactRecord::CreateId { mid, moff, members })) => {
            let mut s = format!("{mid} offset {moff} nmembers {}:", members.len());
            for m in members {
                let _ = write!(s, " {} ({})", m.xid, m.status.short_name());
            }
            expect(s)
        }
        Some(RmgrRecord::MultiXact(MultiXactRecord::TruncateId {
            start_trunc_off,
            end_trunc_off,
            start_trunc_memb,
            end_trunc_memb,
            ..
        })) => expect(format!(
            "offsets [{start_trunc_off}, {end_trunc_off}), members [{start_trunc_memb}, {end_trunc_memb})"
        )),
        Some(RmgrRecord::Standby(StandbyRecord::RunningXacts(rx))) => {
            let mut s = format!(
                "nextXid {} latestCompletedXid {} oldestRunningXid {}",
                rx.next_xid, rx.latest_completed_xid, rx.oldest_running_xid
            );
            if rx.xcnt > 0 {
                let _ = write!(s, "; {} xacts:", rx.xcnt);
                for x in &rx.xids[..rx.xcnt] {
                    let _ = write!(s, " {x}");
                }
            }
            if rx.subxid_overflow {
                s.push_str("; subxid overflowed");
            }
            if rx.subxcnt > 0 {
                let _ = write!(s, "; {} subxacts:", rx.subxcnt);
                for x in &rx.xids[rx.xcnt..] {
                    let _ = write!(s, " {x}");
                }
            }
            expect(s)
        }
        Some(RmgrRecord::Standby(StandbyRecord::Locks(locks))) => {
            let mut s = String::new();
            for l in locks {
                let _ = write!(s, "xid {} db {} rel {} ", l.xid, l.db_oid, l.rel_oid);
            }
            expect(s.trim().to_string())
        }
        _ => None,
    };
    if let Some(p) = problem {
        err(p);
    }

    // Heap flags that clear visibility-map bits: compare with the flags pg_waldump shows.
    if rec.rmid() == RM_HEAP_ID || rec.rmid() == RM_HEAP2_ID {
        let op = rec.rmgr_info() & XLOG_HEAP_OPMASK;
        let relevant = match rec.rmid() {
            RM_HEAP_ID => [
                XLOG_HEAP_INSERT,
                XLOG_HEAP_DELETE,
                XLOG_HEAP_UPDATE,
                XLOG_HEAP_HOT_UPDATE,
                XLOG_HEAP_LOCK,
            ]
            .contains(&op),
            _ => [XLOG_HEAP2_MULTI_INSERT, XLOG_HEAP2_LOCK_UPDATED].contains(&op),
        };
        if relevant {
            let Some(flags) = hex_flags(desc) else {
                err(format!("no flags in {desc:?}"));
                return;
            };
            let clears = match (rec.rmid(), op) {
                (RM_HEAP_ID, XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE) => flags & 0x03 != 0,
                _ => flags & 0x01 != 0,
            };
            let ours = matches!(parsed, Some(RmgrRecord::ClearVmBits(_)));
            if clears != ours {
                err(format!("flags {flags:#04X} but vm clear {parsed:?}"));
            }
            if ours {
                *stats.entry(format!("vm clear {key}")).or_default() += 1;
            }
        }
        if rec.rmgr_info() & XLOG_HEAP_INIT_PAGE != 0
            && op != XLOG_HEAP_DELETE
            && rec.block(0).is_some_and(|b| !b.will_init())
        {
            err("+INIT without BKPBLOCK_WILL_INIT on block 0".into());
        }
    }
}

/// Restores every image and checks the page header agrees with the hole it had.
fn check_images(records: &[(Lsn, Lsn, DecodedWalRecord)], errors: &mut Vec<String>) -> usize {
    let mut n = 0;
    for (start, _, rec) in records {
        for b in &rec.blocks {
            let Some(img) = &b.image else { continue };
            n += 1;
            match rec.restore_image(b) {
                Err(e) => errors.push(format!("{e}")),
                Ok(Some(pg)) => {
                    if img.has_hole() {
                        let h = page::PageHeader::decode(&pg).expect("page header");
                        if (usize::from(h.lower), usize::from(h.upper))
                            != (
                                usize::from(img.hole_offset),
                                usize::from(img.hole_offset + img.hole_length),
                            )
                        {
                            errors.push(format!(
                                "image of block {} at {start}: pd_lower/pd_upper {}/{} vs hole {}+{}",
                                b.block_id, h.lower, h.upper, img.hole_offset, img.hole_length
                            ));
                        }
                    }
                }
                Ok(None) => unreachable!(),
            }
        }
    }
    n
}

/// Every page image logged into database `db` must equal the page on disk, once stamped
/// with its record's end LSN as redo does, except inside the hole: PostgreSQL drops the
/// hole's bytes from the image and redo zeroes them, while the page on disk may hold stale
/// bytes there (PostgreSQL's own consistency checks mask the same range). Returns the
/// number of pages compared.
fn check_images_against_files(
    datadir: &Path,
    db: u32,
    records: &[(Lsn, Lsn, DecodedWalRecord)],
    errors: &mut Vec<String>,
) -> usize {
    type LastImage = (Lsn, Vec<u8>, std::ops::Range<usize>);
    let mut last: HashMap<(String, u32), LastImage> = HashMap::new();
    for (_, end, rec) in records {
        for b in &rec.blocks {
            if b.rel.db_node != db {
                continue;
            }
            let key = (b.rel.fork_path(b.fork), b.blkno);
            if b.apply_image() {
                let mut pg = rec
                    .restore_image(b)
                    .expect("restore")
                    .expect("image")
                    .to_vec();
                page::set_lsn_after_redo(&mut pg, *end);
                let hole = b.image.as_ref().map_or(0..0, |i| {
                    usize::from(i.hole_offset)..usize::from(i.hole_offset + i.hole_length)
                });
                last.insert(key, (*end, pg, hole));
            } else {
                // Changed by a later record: this image is no longer the page on disk.
                last.remove(&key);
            }
        }
    }
    let mut compared = 0;
    for ((path, blkno), (end, img, hole)) in &last {
        let file = datadir.join(path);
        let data = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let off = *blkno as usize * BLCKSZ;
        let Some(disk) = data.get(off..off + BLCKSZ) else {
            errors.push(format!("{path} block {blkno} missing on disk"));
            continue;
        };
        compared += 1;
        let mut disk = disk.to_vec();
        disk[hole.clone()].fill(0);
        if disk != img.as_slice() {
            let first = disk.iter().zip(img).position(|(a, b)| a != b);
            errors.push(format!(
                "{path} block {blkno}: image from record ending {end} differs at byte {first:?}"
            ));
        }
    }
    compared
}

fn check_controlfile(
    pg: &TestPostgres,
    records: &[(Lsn, Lsn, DecodedWalRecord)],
    variant: &Variant,
) {
    let bytes = fs::read(pg.datadir().join("global/pg_control")).expect("read pg_control");
    let cf = ControlFileData::decode(&bytes).expect("decode pg_control");
    let kv = pg.pg_controldata(pg.datadir()).unwrap();
    let get = |k: &str| -> &str {
        kv.get(k)
            .unwrap_or_else(|| panic!("pg_controldata has no {k:?}"))
    };
    let cp = &cf.checkpoint_copy;
    let onoff = |b: bool| if b { "on" } else { "off" };
    let expected: Vec<(&str, String)> = vec![
        (
            "pg_control version number",
            cf.pg_control_version.to_string(),
        ),
        ("Catalog version number", cf.catalog_version_no.to_string()),
        (
            "Database system identifier",
            cf.system_identifier.to_string(),
        ),
        ("Database cluster state", cf.state.description().to_string()),
        ("Latest checkpoint location", pg_lsn(cf.checkpoint)),
        ("Latest checkpoint's REDO location", pg_lsn(cp.redo)),
        (
            "Latest checkpoint's TimeLineID",
            cp.this_timeline_id.to_string(),
        ),
        (
            "Latest checkpoint's PrevTimeLineID",
            cp.prev_timeline_id.to_string(),
        ),
        (
            "Latest checkpoint's full_page_writes",
            onoff(cp.full_page_writes).into(),
        ),
        (
            "Latest checkpoint's NextXID",
            format!("{}:{}", cp.next_xid_epoch(), cp.next_xid_xid()),
        ),
        ("Latest checkpoint's NextOID", cp.next_oid.to_string()),
        (
            "Latest checkpoint's NextMultiXactId",
            cp.next_multi.to_string(),
        ),
        (
            "Latest checkpoint's NextMultiOffset",
            cp.next_multi_offset.to_string(),
        ),
        ("Latest checkpoint's oldestXID", cp.oldest_xid.to_string()),
        (
            "Latest checkpoint's oldestXID's DB",
            cp.oldest_xid_db.to_string(),
        ),
        (
            "Latest checkpoint's oldestActiveXID",
            cp.oldest_active_xid.to_string(),
        ),
        (
            "Latest checkpoint's oldestMultiXid",
            cp.oldest_multi.to_string(),
        ),
        (
            "Latest checkpoint's oldestMulti's DB",
            cp.oldest_multi_db.to_string(),
        ),
        (
            "Latest checkpoint's oldestCommitTsXid",
            cp.oldest_commit_ts_xid.to_string(),
        ),
        (
            "Latest checkpoint's newestCommitTsXid",
            cp.newest_commit_ts_xid.to_string(),
        ),
        (
            "Fake LSN counter for unlogged rels",
            pg_lsn(cf.unlogged_lsn),
        ),
        (
            "Minimum recovery ending location",
            pg_lsn(cf.min_recovery_point),
        ),
        (
            "Min recovery ending loc's timeline",
            cf.min_recovery_point_tli.to_string(),
        ),
        ("Backup start location", pg_lsn(cf.backup_start_point)),
        ("Backup end location", pg_lsn(cf.backup_end_point)),
        (
            "End-of-backup record required",
            if cf.backup_end_required { "yes" } else { "no" }.into(),
        ),
        ("wal_level setting", variant.wal_level.into()),
        ("wal_log_hints setting", onoff(cf.wal_log_hints).into()),
        ("max_connections setting", cf.max_connections.to_string()),
        (
            "max_worker_processes setting",
            cf.max_worker_processes.to_string(),
        ),
        ("max_wal_senders setting", cf.max_wal_senders.to_string()),
        (
            "max_prepared_xacts setting",
            cf.max_prepared_xacts.to_string(),
        ),
        (
            "max_locks_per_xact setting",
            cf.max_locks_per_xact.to_string(),
        ),
        (
            "track_commit_timestamp setting",
            onoff(cf.track_commit_timestamp).into(),
        ),
        ("Maximum data alignment", cf.max_align.to_string()),
        ("Database block size", cf.blcksz.to_string()),
        (
            "Blocks per segment of large relation",
            cf.relseg_size.to_string(),
        ),
        ("WAL block size", cf.xlog_blcksz.to_string()),
        ("Bytes per WAL segment", cf.xlog_seg_size.to_string()),
        (
            "Maximum length of identifiers",
            cf.name_data_len.to_string(),
        ),
        ("Maximum columns in an index", cf.index_max_keys.to_string()),
        (
            "Maximum size of a TOAST chunk",
            cf.toast_max_chunk_size.to_string(),
        ),
        ("Size of a large-object chunk", cf.loblksize.to_string()),
        (
            "Float8 argument passing",
            if cf.float8_by_val {
                "by value"
            } else {
                "by reference"
            }
            .into(),
        ),
        (
            "Data page checksum version",
            cf.data_checksum_version.to_string(),
        ),
        (
            "Mock authentication nonce",
            cf.mock_authentication_nonce
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
    ];
    for (k, v) in &expected {
        assert_eq!(get(k), v, "pg_controldata {k:?}");
    }
    assert_eq!(
        cf.wal_level,
        ["minimal", "replica", "logical"]
            .iter()
            .position(|l| *l == variant.wal_level)
            .expect("known wal_level") as i32
    );
    assert_eq!(cf.float_format, FLOATFORMAT_VALUE);
    assert_eq!(
        u64::from(cf.xlog_seg_size),
        u64::from(variant.wal_segsize_mb) << 20
    );

    // Our encoding reproduces the file byte for byte.
    assert_eq!(cf.encode(), bytes, "pg_control re-encodes identically");

    // The checkpoint record it points at carries the same CheckPoint.
    let (_, _, rec) = records
        .iter()
        .find(|(s, _, _)| *s == cf.checkpoint)
        .expect("checkpoint record in WAL");
    match parse_record(rec, PgMajorVersion::V15).expect("parse checkpoint") {
        Some(RmgrRecord::Xlog(XlogRecord::Checkpoint {
            shutdown,
            checkpoint,
        })) => {
            assert!(shutdown, "clean shutdown ends with a shutdown checkpoint");
            assert_eq!(&checkpoint, cp);
        }
        other => panic!("not a checkpoint: {other:?}"),
    }

    // Write a modified control file; pg_controldata must accept its CRC and show the change.
    let mut changed = cf.clone();
    changed.checkpoint_copy.next_oid += 12345;
    changed.checkpoint_copy.next_xid = (7u64 << 32) | 4242;
    let scratch = pg.scratch("controlcopy").unwrap();
    fs::create_dir_all(scratch.join("global")).expect("mkdir global");
    fs::write(scratch.join("global/pg_control"), changed.encode()).expect("write pg_control");
    let kv2 = pg.pg_controldata(&scratch).unwrap();
    assert!(
        !kv2.stderr.contains("CRC"),
        "pg_controldata complains: {}",
        kv2.stderr
    );
    let get2 = |k: &str| kv2.get(k).map(str::to_string);
    assert_eq!(
        get2("Latest checkpoint's NextOID"),
        Some((cp.next_oid + 12345).to_string())
    );
    assert_eq!(get2("Latest checkpoint's NextXID"), Some("7:4242".into()));
    let reread =
        ControlFileData::decode(&fs::read(scratch.join("global/pg_control")).expect("read back"))
            .expect("re-read");
    assert_eq!(
        ControlFileData { crc: 0, ..reread },
        ControlFileData { crc: 0, ..changed }
    );
}

/// The WAL in a directory, decoded and checked against `pg_waldump`.
struct Compared {
    wal: DecodedWal,
    stats: BTreeMap<String, usize>,
    images: usize,
    /// Start of the first segment.
    first_segment: Lsn,
    /// What [`wal_segment::find_end_of_wal`] says.
    end: wal_segment::EndOfWal,
}

/// Decodes every segment in `pg`'s WAL directory, compares each record (and its parsed
/// content and images) with `pg_waldump`, and checks that both stop at the same place.
fn decode_and_compare(name: &str, pg: &TestPostgres, seg_size: u64) -> Compared {
    let wal_dir = &pg.wal_dir();
    let wal = decode_wal_dir(wal_dir, seg_size);
    let first = wal.records.first().expect("some WAL").0;
    let first_segment = first.segment_start(seg_size);
    let dump = pg
        .pg_waldump(wal_dir, &["-b", "-s", &pg_lsn(first_segment)])
        .unwrap();
    let (dump_out, dump_err) = (dump.stdout, dump.stderr);
    let dump = parse_waldump(&dump_out);

    let mut errors = Vec::new();
    let mut stats: BTreeMap<String, usize> = BTreeMap::new();
    assert_eq!(
        wal.records.len(),
        dump.len(),
        "[{name}] record count; we stopped with: {}; pg_waldump: {dump_err}",
        wal.stop
    );
    for ((start, end, rec), d) in wal.records.iter().zip(&dump) {
        compare_record(*start, rec, d, &mut errors);
        assert!(*end > *start && end.is_aligned());
        *stats
            .entry(format!("{} {}", d.rmgr, d.identify))
            .or_default() += 1;
        if rec.check_consistency() {
            *stats.entry("XLR_CHECK_CONSISTENCY".into()).or_default() += 1;
        }
        if rec.toplevel_xid.is_some() {
            *stats.entry("XLR_BLOCK_ID_TOPLEVEL_XID".into()).or_default() += 1;
        }
        if rec.origin.is_some() {
            *stats.entry("XLR_BLOCK_ID_ORIGIN".into()).or_default() += 1;
        }
        if rec.blocks.iter().any(|b| b.same_rel()) {
            *stats.entry("BKPBLOCK_SAME_REL".into()).or_default() += 1;
        }
        for img in rec.blocks.iter().filter_map(|b| b.image.as_ref()) {
            if !img.apply() {
                *stats
                    .entry("image without BKPIMAGE_APPLY".into())
                    .or_default() += 1;
            }
            if let Some(m) = img.compression() {
                *stats.entry(format!("{} image", m.name())).or_default() += 1;
            }
        }
        if end.segment_number(seg_size) != start.segment_number(seg_size)
            && end.segment_offset(seg_size) != 0
        {
            *stats
                .entry("crosses a segment boundary".into())
                .or_default() += 1;
        }
        if end.page_offset() == 0 {
            *stats.entry("ends at a page boundary".into()).or_default() += 1;
        }
        match parse_record(rec, PgMajorVersion::V15) {
            Ok(parsed) => compare_parsed(*start, rec, &parsed, d, &mut stats, &mut errors),
            Err(e) => errors.push(e.to_string()),
        }
        if errors.len() > 50 {
            break;
        }
    }
    let images = check_images(&wal.records, &mut errors);
    assert!(
        errors.is_empty(),
        "[{name}] {} mismatches, first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Where pg_waldump stops is where valid WAL ends. A crash can also leave the last
    // segment complete, with the next record continuing into a segment that was never
    // created: pg_waldump then stops at the missing file instead (the end of WAL is still
    // checked below).
    let last = wal.records.last().expect("records");
    let stopped_after = dump_err
        .split("error in WAL record at ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .map(parse_lsn);
    let missing_next_segment = dump_err
        .split("could not find file \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .is_some_and(|f| {
            // The next record starts in the segment where the last one ends, or that
            // segment is the missing one (the last record ended at its very start).
            let seg = last.1.segment_number(seg_size);
            [seg, seg + 1]
                .iter()
                .any(|&s| f == wal_segment::xlog_file_name(1, s, seg_size))
        });
    if !missing_next_segment {
        assert_eq!(
            stopped_after,
            Some(last.0),
            "[{name}] pg_waldump: {dump_err}"
        );
    }
    let end = wal_segment::find_end_of_wal(
        wal_dir,
        1,
        first_segment,
        WalDecoderConfig {
            version: PgMajorVersion::V15,
            seg_size,
            system_id: None,
        },
    )
    .expect("scan pg_wal");
    assert_eq!(end.end_lsn, last.1, "[{name}] end of WAL");
    assert_eq!(end.last_record_lsn, Some(last.0), "[{name}] last record");
    Compared {
        wal,
        stats,
        images,
        first_segment,
        end,
    }
}

fn base_settings(wal_level: &str, compression: &str) -> Vec<(String, String)> {
    [
        ("wal_level", wal_level),
        ("full_page_writes", "on"),
        ("wal_log_hints", "on"),
        ("wal_compression", compression),
        ("max_prepared_transactions", "5"),
        ("wal_keep_size", "4GB"),
        ("max_wal_size", "4GB"),
        ("autovacuum", "off"),
        ("fsync", "off"),
        ("shared_buffers", "16MB"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn run_variant(v: Variant) {
    let mut settings = base_settings(v.wal_level, v.compression);
    if let Some(c) = v.consistency_checking {
        settings.push(("wal_consistency_checking".into(), c.into()));
    }
    let mut pg = TestPostgres::builder()
        .wal_segsize_mb(v.wal_segsize_mb)
        .confs(&settings)
        .init()
        .unwrap();
    pg.start().unwrap();
    pg.psql_script("postgres", &workload()).unwrap();
    let d_wal: u32 = pg
        .psql("SELECT oid FROM pg_database WHERE datname = 'd_wal'")
        .unwrap()
        .trim()
        .parse()
        .expect("d_wal oid");
    pg.stop("fast").unwrap();

    let seg_size = u64::from(v.wal_segsize_mb) << 20;
    let c = decode_and_compare(v.name, &pg, seg_size);
    let stats = &c.stats;
    assert!(
        matches!(c.end.reason, EndOfWalReason::Invalid(ref e) if e.is_zeroed()),
        "[{}] a clean shutdown leaves zeros after the last record: {:?}",
        v.name,
        c.end.reason
    );
    let mut errors = Vec::new();
    let on_disk = check_images_against_files(pg.datadir(), d_wal, &c.wal.records, &mut errors);
    assert!(
        errors.is_empty(),
        "[{}] images differ from data files:\n{}",
        v.name,
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    check_controlfile(&pg, &c.wal.records, &v);

    // The workload must have produced what the checks above are meant to cover.
    let must_have = [
        "Transaction COMMIT",
        "Transaction ABORT",
        "Transaction PREPARE",
        "Transaction COMMIT_PREPARED",
        "Transaction ABORT_PREPARED",
        "Transaction ASSIGNMENT",
        "Storage CREATE",
        "Storage TRUNCATE",
        "Database CREATE_FILE_COPY",
        "Database CREATE_WAL_LOG",
        "Database DROP",
        "RelMap UPDATE",
        "MultiXact CREATE_ID",
        "MultiXact TRUNCATE_ID",
        "XLOG CHECKPOINT_ONLINE",
        "XLOG CHECKPOINT_SHUTDOWN",
        "XLOG NEXTOID",
        "XLOG SWITCH",
        "XLOG FPI",
        "XLOG FPI_FOR_HINT",
        "Standby RUNNING_XACTS",
        "Heap INSERT+INIT",
        "Heap2 MULTI_INSERT",
        "XLR_BLOCK_ID_ORIGIN",
        "BKPBLOCK_SAME_REL",
        "crosses a segment boundary",
        "xact with origin",
        "vm clear Heap UPDATE",
        "vm clear Heap DELETE",
    ];
    let missing: Vec<_> = must_have
        .iter()
        .filter(|k| !stats.contains_key(**k))
        .collect();
    eprintln!(
        "[{}] {} records, {} images restored, {} pages matched on disk, stats: {stats:?}",
        v.name,
        c.wal.records.len(),
        c.images,
        on_disk
    );
    assert!(
        missing.is_empty(),
        "[{}] workload did not produce {missing:?}",
        v.name
    );
    assert!(on_disk > 100, "[{}] only {on_disk} pages compared", v.name);
    if v.compression != "off" {
        let key = format!("{} image", v.compression);
        assert!(
            stats.get(&key).copied().unwrap_or(0) > 100,
            "[{}] few {key}s: {stats:?}",
            v.name
        );
    }
    if v.wal_segsize_mb == 16 {
        // initdb's own WAL survives only with default-sized segments; it zeroes CLOG page 0.
        assert!(stats.contains_key("CLOG ZEROPAGE"), "{stats:?}");
    }
    if v.wal_level == "logical" {
        assert!(stats.contains_key("XLR_BLOCK_ID_TOPLEVEL_XID"), "{stats:?}");
    }
    if v.consistency_checking.is_some() {
        assert!(stats.contains_key("XLR_CHECK_CONSISTENCY"), "{stats:?}");
        assert!(
            stats.contains_key("image without BKPIMAGE_APPLY"),
            "{stats:?}"
        );
    }
}

/// Crash under a load of large records: the end of valid WAL we find is where `pg_waldump`
/// stops and where PostgreSQL's crash recovery ends redo; after recovery (which overwrites a
/// torn continuation with `XLP_FIRST_IS_OVERWRITE_CONTRECORD` when the crash split a record
/// across pages), the whole WAL still decodes exactly as `pg_waldump` reads it.
#[test]
fn oracle_crash_torn_tail() {
    let mut settings = base_settings("replica", "off");
    settings.push(("wal_buffers".into(), "64kB".into()));
    settings.push(("synchronous_commit".into(), "off".into()));
    let mut pg = TestPostgres::builder()
        .wal_segsize_mb(1)
        .confs(&settings)
        .init()
        .unwrap();
    pg.start().unwrap();
    // Bounded (at most 2000 records of 60 kB, at least 4 s of sleeps) in case the crash
    // fails; the crash comes long before the end.
    let load = pg
        .psql_background_running(
            "postgres",
            "DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM pg_logical_emit_message(false, 'strata', repeat('z', 60000)); PERFORM pg_sleep(0.002); END LOOP; END $$",
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    pg.crash().unwrap();
    let load = load.wait_with_output().unwrap();
    assert!(
        !load.status.success(),
        "the load was still running at the crash"
    );
    let seg_size = 1 << 20;

    let before = decode_and_compare("crashed", &pg, seg_size);
    let torn_end = before.end.end_lsn;
    let last = before.end.last_record_lsn.expect("some records");
    eprintln!("[crashed] WAL ends at {torn_end}: {:?}", before.end.reason);

    pg.start().unwrap();
    let log = pg.log().unwrap();
    let redo_done = log
        .split("redo done at ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(parse_lsn)
        .unwrap_or_else(|| panic!("no 'redo done at' in the log:\n{log}"));
    assert_eq!(
        redo_done, last,
        "PostgreSQL's redo ended at the same record"
    );
    pg.stop("fast").unwrap();

    let after = decode_and_compare("recovered", &pg, seg_size);
    assert_eq!(after.first_segment, before.first_segment);
    let overwrite =
        after
            .wal
            .records
            .iter()
            .find_map(|(s, _, r)| match parse_record(r, PgMajorVersion::V15) {
                Ok(Some(RmgrRecord::Xlog(XlogRecord::OverwriteContrecord {
                    overwritten_lsn,
                    ..
                }))) => Some((*s, overwritten_lsn)),
                _ => None,
            });
    eprintln!("[recovered] overwrite contrecord: {overwrite:?}");
    if let Some((at, overwritten)) = overwrite {
        // The aborted record started after the last complete one, and the overwrite record
        // sits at the start of the page where its continuation was missing.
        assert_eq!(
            overwritten, torn_end,
            "the torn record is the one overwritten"
        );
        assert_eq!(
            at.page_offset() as usize,
            postgres_ffi::wal_generate::page_header_size_at(at.page_start(), seg_size)
        );
    }
}

#[test]
fn oracle_uncompressed_16mb_segments() {
    run_variant(Variant {
        name: "off",
        compression: "off",
        wal_segsize_mb: 16,
        wal_level: "replica",
        consistency_checking: None,
    });
}

#[test]
fn oracle_pglz_1mb_segments_logical() {
    run_variant(Variant {
        name: "pglz",
        compression: "pglz",
        wal_segsize_mb: 1,
        wal_level: "logical",
        consistency_checking: None,
    });
}

#[test]
fn oracle_lz4_consistency_checking() {
    run_variant(Variant {
        name: "lz4",
        compression: "lz4",
        wal_segsize_mb: 2,
        wal_level: "replica",
        consistency_checking: Some("heap"),
    });
}

#[test]
fn oracle_zstd() {
    run_variant(Variant {
        name: "zstd",
        compression: "zstd",
        wal_segsize_mb: 4,
        wal_level: "replica",
        consistency_checking: None,
    });
}

/// The page sizes every crate builds on are PostgreSQL's own: the server reports them, and
/// the oracle's deliberately independent copy agrees.
#[test]
fn page_sizes_are_postgres_own() {
    let mut pg = TestPostgres::builder().init().unwrap();
    pg.start().unwrap();
    assert_eq!(pg.psql("SHOW block_size").unwrap(), BLCKSZ.to_string());
    assert_eq!(
        pg.psql("SHOW wal_block_size").unwrap(),
        postgres_ffi::XLOG_BLCKSZ.to_string()
    );
    assert_eq!(pg_oracle::mask::BLCKSZ, BLCKSZ);
    pg.stop("fast").unwrap();
}
