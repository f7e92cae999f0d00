//! Parsing `pg_waldump -b` output, and PostgreSQL's text formats for LSNs and timestamps.

#![allow(dead_code)]

use postgres_ffi::Lsn;

/// A page image as `pg_waldump -b` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpImage {
    /// `(FPW)` rather than `(FPW for WAL verification)`.
    pub apply: bool,
    pub hole_offset: u32,
    pub hole_length: u32,
    /// `(compression saved, method)` for compressed images.
    pub compression: Option<(u32, String)>,
}

/// One `blkref` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpBlock {
    pub id: u8,
    /// `spc/db/rel`.
    pub rel: String,
    pub fork: String,
    pub blk: u32,
    pub image: Option<DumpImage>,
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRecord {
    pub rmgr: String,
    pub rec_len: u32,
    pub tot_len: u32,
    pub xid: u32,
    pub lsn: Lsn,
    pub prev: Lsn,
    /// The record type (first word after `desc:`).
    pub identify: String,
    /// The rest of the description, trimmed.
    pub desc: String,
    pub blocks: Vec<DumpBlock>,
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    let j = rest.find(end)?;
    Some(rest[..j].trim())
}

/// Parses `X/Y` in PostgreSQL's unpadded hex form.
pub fn parse_lsn(s: &str) -> Lsn {
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad LSN {s:?}: {e}"))
}

/// `%X/%X`, PostgreSQL's LSN format (no zero padding).
pub fn pg_lsn(lsn: Lsn) -> String {
    let (hi, lo) = lsn.halves();
    format!("{hi:X}/{lo:X}")
}

fn parse_record_line(line: &str) -> DumpRecord {
    let rmgr = between(line, "rmgr: ", " ").expect("rmgr").to_string();
    let lens = between(line, "len (rec/tot):", ",").expect("len");
    let (rec, tot) = lens.split_once('/').expect("rec/tot");
    let xid = between(line, "tx:", ",").expect("tx");
    let lsn = between(line, "lsn: ", ",").expect("lsn");
    let prev = between(line, "prev ", ",").expect("prev");
    let desc_all = &line[line.find("desc: ").expect("desc") + 6..];
    let (identify, desc) = match desc_all.split_once(' ') {
        Some((i, d)) => (i.to_string(), d.trim().to_string()),
        None => (desc_all.trim().to_string(), String::new()),
    };
    DumpRecord {
        rmgr,
        rec_len: rec.trim().parse().expect("rec len"),
        tot_len: tot.trim().parse().expect("tot len"),
        xid: xid.parse().expect("xid"),
        lsn: parse_lsn(lsn),
        prev: parse_lsn(prev),
        identify,
        desc,
        blocks: Vec::new(),
    }
}

fn parse_block_line(line: &str) -> DumpBlock {
    // blkref #0: rel 1663/1/6117 fork main blk 0 (FPW); hole: offset: 72, length: 8104
    let line = line.trim();
    let id = between(line, "blkref #", ":").expect("block id");
    let rel = between(line, " rel ", " ").expect("rel");
    let fork = between(line, " fork ", " ").expect("fork");
    let after_blk = &line[line.find(" blk ").expect("blk") + 5..];
    let blk = after_blk.split_whitespace().next().expect("blk number");
    let image = line.find(" (FPW").map(|_| {
        let apply = !line.contains("(FPW for WAL verification)");
        let hole_offset = between(line, "hole: offset: ", ",").expect("hole offset");
        let hole_length = line[line.find("length: ").expect("hole length") + 8..]
            .split(',')
            .next()
            .expect("hole length value");
        let compression = line.find("compression saved: ").map(|i| {
            let rest = &line[i + "compression saved: ".len()..];
            let (saved, rest) = rest.split_once(',').expect("saved");
            let method = rest.trim().strip_prefix("method: ").expect("method");
            (
                saved.trim().parse().expect("saved"),
                method.trim().to_string(),
            )
        });
        DumpImage {
            apply,
            hole_offset: hole_offset.parse().expect("hole offset"),
            hole_length: hole_length.trim().parse().expect("hole length"),
            compression,
        }
    });
    DumpBlock {
        id: id.parse().expect("block id"),
        rel: rel.to_string(),
        fork: fork.to_string(),
        blk: blk.parse().expect("blk"),
        image,
    }
}

/// Parses `pg_waldump -b` output.
pub fn parse_waldump(out: &str) -> Vec<DumpRecord> {
    let mut records: Vec<DumpRecord> = Vec::new();
    for line in out.lines() {
        if line.starts_with("rmgr: ") {
            records.push(parse_record_line(line));
        } else if line.trim_start().starts_with("blkref #") {
            let block = parse_block_line(line);
            records
                .last_mut()
                .expect("blkref before any record")
                .blocks
                .push(block);
        }
    }
    records
}

/// `timestamptz_to_str` in UTC: `YYYY-MM-DD HH:MM:SS.ffffff UTC`.
pub fn pg_timestamp(ts: i64) -> String {
    let unix_us = ts + 946_684_800_000_000;
    let secs = unix_us.div_euclid(1_000_000);
    let usecs = unix_us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{usecs:06} UTC",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[test]
fn timestamp_format() {
    assert_eq!(pg_timestamp(0), "2000-01-01 00:00:00.000000 UTC");
    // 2024-01-02 03:04:05.000006 UTC
    assert_eq!(
        pg_timestamp(757_479_845_000_006),
        "2024-01-02 03:04:05.000006 UTC"
    );
}
