//! `pageserver_oracle`: compares every page of a PostgreSQL data directory with what the
//! pageserver serves at an LSN, masked with PostgreSQL's own rules (`libs/pg_oracle`).
//!
//! Run it after the compute has CHECKPOINTed (so its files hold every page as of that
//! LSN) and the pageserver has ingested up to the LSN. It checks:
//! - every relation fork file: the pageserver knows the fork with the same size, and
//!   every block matches after masking (main and init forks by the relation's access
//!   method, VM forks as visibility maps). FSM forks are not compared: PostgreSQL does not
//!   WAL-log free-space updates (nor the creation of the fork), so they differ by design.
//!   A VM fork may be longer locally than on the pageserver (PostgreSQL extends the map
//!   with zero pages without WAL when it pins a page); those local pages must be all
//!   zeros. Sequence pages may be ahead on the pageserver: `nextval` WAL-logs 32 values
//!   ahead, so a replay holds a `last_value` at or above the primary's;
//! - forks of unlogged relations other than the init fork are skipped (never WAL-logged);
//! - every SLRU segment (`pg_xact`, `pg_multixact/*`): byte-equal;
//! - the set of databases.
//!
//! The compute must be idle while it runs (no sessions, `autovacuum = off`): its files
//! must be the state at the LSN.
//!
//! Prints `pageserver_oracle: pages=N mismatches=M relations=R …` and exits 1 when
//! anything differs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use pg_oracle::mask::{AccessMethod, compare_masked};

use postgres_ffi::BLCKSZ;
const RELSEG_BLOCKS: u64 = 131_072;

/// Compare a data directory with the pageserver, page by page.
#[derive(Debug, Parser)]
struct Args {
    /// The compute's data directory (after CHECKPOINT).
    #[arg(long)]
    datadir: PathBuf,
    /// libpq key=value connection string of the running compute (no dbname).
    #[arg(long)]
    connstr: String,
    /// The pageserver's HTTP API, e.g. http://127.0.0.1:9898.
    #[arg(long)]
    pageserver_http: String,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The timeline.
    #[arg(long)]
    timeline: String,
    /// Read at this LSN (X/Y).
    #[arg(long)]
    lsn: String,
    /// A JWT for the pageserver's API.
    #[arg(long)]
    token: Option<String>,
    /// PostgreSQL's binaries (psql).
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Rel {
    spc: u32,
    db: u32,
    rel: u32,
    fork: u8,
}

fn psql(args: &Args, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(args.pg_bin_dir.join("psql"))
        .arg(format!("{} dbname={db}", args.connstr))
        .args(["-AtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A relation with storage, from the catalogs.
#[derive(Debug, Clone, Copy)]
struct RelInfo {
    am: AccessMethod,
    /// `relpersistence = 'u'`: only the init fork is WAL-logged.
    unlogged: bool,
}

/// (spc, db, relfilenode) → what it is, for every relation with storage.
/// The relations by (spc, db, relfilenode), and the databases that take connections.
type Catalog = (HashMap<(u32, u32, u32), RelInfo>, Vec<u32>);

fn catalog(args: &Args) -> anyhow::Result<Catalog> {
    let mut map = HashMap::new();
    let mut connectable = Vec::new();
    for row in psql(
        args,
        "postgres",
        "SELECT oid, datname FROM pg_database WHERE datallowconn",
    )?
    .lines()
    {
        let Some((oid, db)) = row.split_once('|') else {
            continue;
        };
        connectable.extend(oid.parse::<u32>().ok());
        let rows = psql(
            args,
            db,
            "SELECT pg_relation_filenode(c.oid), \
               CASE WHEN c.reltablespace = 0 THEN (SELECT dattablespace FROM pg_database WHERE datname = current_database()) ELSE c.reltablespace END, \
               CASE WHEN c.relisshared THEN 0 ELSE (SELECT oid FROM pg_database WHERE datname = current_database()) END, \
               CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE coalesce(am.amname, '') END, \
               c.relpersistence \
             FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam \
             WHERE pg_relation_filenode(c.oid) IS NOT NULL",
        )?;
        for row in rows.lines() {
            let f: Vec<&str> = row.split('|').collect();
            if f.len() < 5 {
                continue;
            }
            let (Ok(rel), Ok(spc), Ok(dbid)) = (f[0].parse(), f[1].parse(), f[2].parse()) else {
                continue;
            };
            if let Some(am) = AccessMethod::from_name(f[3]) {
                map.insert(
                    (spc, dbid, rel),
                    RelInfo {
                        am,
                        unlogged: f[4] == "u",
                    },
                );
            }
        }
    }
    Ok((map, connectable))
}

fn parse_rel_file(name: &str) -> Option<(u32, u8, u64)> {
    let (base, seg) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse().ok()?),
        None => (name, 0),
    };
    let (node, fork) = match base.split_once('_') {
        Some((n, "fsm")) => (n, 1),
        Some((n, "vm")) => (n, 2),
        Some((n, "init")) => (n, 3),
        Some(_) => return None,
        None => (base, 0),
    };
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node.parse().ok()?, fork, seg))
}

/// Every relation fork file set in the data directory, with its size in blocks.
fn local_rels(datadir: &Path) -> anyhow::Result<BTreeMap<Rel, (Vec<PathBuf>, u64)>> {
    let mut out: BTreeMap<Rel, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    let mut dirs = vec![(1664u32, 0u32, datadir.join("global"))];
    for e in std::fs::read_dir(datadir.join("base"))? {
        let e = e?;
        if let Ok(db) = e.file_name().to_string_lossy().parse::<u32>() {
            dirs.push((1663, db, e.path()));
        }
    }
    for (spc, db, dir) in dirs {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if let Some((rel, fork, seg)) = parse_rel_file(&e.file_name().to_string_lossy()) {
                out.entry(Rel { spc, db, rel, fork })
                    .or_default()
                    .insert(seg, e.path());
            }
        }
    }
    let mut result = BTreeMap::new();
    for (r, segs) in out {
        let files: Vec<PathBuf> = segs.into_values().collect();
        let mut blocks = 0;
        for f in &files {
            blocks += std::fs::metadata(f)?.len() / BLCKSZ as u64;
        }
        result.insert(r, (files, blocks));
    }
    Ok(result)
}

fn read_block(files: &[PathBuf], blkno: u64) -> anyhow::Result<[u8; BLCKSZ]> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(&files[(blkno / RELSEG_BLOCKS) as usize])?;
    let mut page = [0u8; BLCKSZ];
    f.read_exact_at(&mut page, (blkno % RELSEG_BLOCKS) * BLCKSZ as u64)?;
    Ok(page)
}

/// A sequence page whose only difference is the sequence's state, with the replay at or
/// ahead of the primary (`nextval` logs `SEQ_LOG_VALS` values ahead).
fn sequence_ahead(expected: &[u8; BLCKSZ], actual: &[u8; BLCKSZ]) -> bool {
    // One tuple: line pointer 1 gives its offset; the data follows its header.
    let lp = u32::from_le_bytes([expected[24], expected[25], expected[26], expected[27]]);
    let off = (lp & 0x7FFF) as usize;
    if off + 24 > BLCKSZ {
        return false;
    }
    let hoff = expected[off + 22] as usize;
    let data = off + hoff;
    if data + 17 > BLCKSZ {
        return false;
    }
    let outside = (24..BLCKSZ).any(|i| (i < data || i >= data + 17) && expected[i] != actual[i]);
    let last = |p: &[u8; BLCKSZ]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[data..data + 8]);
        i64::from_le_bytes(b)
    };
    !outside && last(actual) >= last(expected)
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    lsn: String,
}

impl Client {
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .query(&[("lsn", self.lsn.clone())]);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pageserver_oracle: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pageserver_oracle: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let (cat, connectable) = catalog(&args)?;
    let local = local_rels(&args.datadir)?;
    let client = Arc::new(Client {
        http: reqwest::Client::new(),
        base: format!(
            "{}/v1/tenant/{}/timeline/{}",
            args.pageserver_http.trim_end_matches('/'),
            args.tenant,
            args.timeline
        ),
        token: args.token.clone(),
        lsn: args.lsn.clone(),
    });
    let (status, body) = client.get("/relations", &[]).await?;
    if status != 200 {
        bail!(
            "GET relations: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let listing: serde_json::Value = serde_json::from_slice(&body)?;
    let mut remote: HashMap<Rel, u64> = HashMap::new();
    for r in listing["relations"].as_array().into_iter().flatten() {
        let g = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
        remote.insert(
            Rel {
                spc: g("spcnode") as u32,
                db: g("dbnode") as u32,
                rel: g("relnode") as u32,
                fork: g("forknum") as u8,
            },
            g("nblocks"),
        );
    }
    let mut mismatches: Vec<String> = Vec::new();
    let mut relations = 0usize;
    let mut fsm_forks = 0usize;
    let mut uncatalogued = 0usize;
    let mut unlogged_forks = 0usize;
    let mut jobs = Vec::new();
    for (rel, (files, blocks)) in &local {
        // Databases that take no connections (template0) are copies of initdb's
        // template: use template1's catalog for them.
        let info = cat
            .get(&(rel.spc, rel.db, rel.rel))
            .or_else(|| {
                cat.get(&(rel.spc, 1, rel.rel))
                    .filter(|_| rel.db != 0 && !connectable.contains(&rel.db))
            })
            .copied();
        if info.is_some_and(|i| i.unlogged) && rel.fork != 3 {
            // Not WAL-logged: a compute rebuilds it from the init fork.
            unlogged_forks += 1;
            continue;
        }
        let am = if rel.fork == 2 {
            Some(AccessMethod::VisibilityMap)
        } else {
            info.map(|i| i.am)
        };
        let remote_size = remote.get(rel).copied();
        if rel.fork == 1 {
            fsm_forks += 1;
            continue;
        }
        let Some(am) = am else {
            // A file PostgreSQL keeps until the next checkpoint after a drop, or a
            // relation of an access method without masking rules.
            uncatalogued += 1;
            continue;
        };
        relations += 1;
        let mut compare_blocks = *blocks;
        if am == AccessMethod::VisibilityMap && remote_size.unwrap_or(0) < *blocks {
            // Pages PostgreSQL added to the map without WAL must still be empty.
            let from = remote_size.unwrap_or(0);
            for blk in from..*blocks {
                match read_block(files, blk) {
                    // New, or initialized in a buffer (a header, no bits).
                    Ok(p) if p[24..].iter().all(|b| *b == 0) => {}
                    Ok(_) => mismatches.push(format!(
                        "{rel:?} blk {blk}: a VM page beyond the pageserver's {from} blocks is not empty"
                    )),
                    Err(e) => mismatches.push(format!("{rel:?} blk {blk}: {e}")),
                }
            }
            compare_blocks = from;
        } else if remote_size != Some(*blocks) {
            mismatches.push(format!(
                "{rel:?}: {blocks} blocks locally, pageserver has {remote_size:?}"
            ));
            continue;
        }
        for blk in 0..compare_blocks {
            jobs.push((*rel, files.clone(), blk, am));
        }
    }
    let pages = jobs.len();
    let results: Vec<Option<String>> = futures::stream::iter(jobs)
        .map(|(rel, files, blk, am)| {
            let client = client.clone();
            async move {
                let expected = match read_block(&files, blk) {
                    Ok(p) => p,
                    Err(e) => return Some(format!("{rel:?} blk {blk}: reading locally: {e}")),
                };
                let q = [
                    ("spcnode", rel.spc.to_string()),
                    ("dbnode", rel.db.to_string()),
                    ("relnode", rel.rel.to_string()),
                    ("forknum", rel.fork.to_string()),
                    ("blkno", blk.to_string()),
                ];
                match client.get("/getpage", &q).await {
                    Ok((200, body)) if body.len() == BLCKSZ => {
                        let mut actual = [0u8; BLCKSZ];
                        actual.copy_from_slice(&body);
                        compare_masked(&expected, &actual, am, blk as u32)
                            .filter(|_| {
                                !(am == AccessMethod::Sequence
                                    && sequence_ahead(&expected, &actual))
                            })
                            .map(|d| format!("{rel:?} blk {blk} ({}): {d}", am.name()))
                    }
                    Ok((status, body)) => Some(format!(
                        "{rel:?} blk {blk}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(e) => Some(format!("{rel:?} blk {blk}: {e}")),
                }
            }
        })
        .buffered(args.parallel.max(1))
        .collect()
        .await;
    mismatches.extend(results.into_iter().flatten());

    // SLRUs: byte-equal segments.
    let mut slru_pages = 0usize;
    for (kind, dir) in [
        ("clog", "pg_xact"),
        ("multixact_offsets", "pg_multixact/offsets"),
        ("multixact_members", "pg_multixact/members"),
    ] {
        for e in std::fs::read_dir(args.datadir.join(dir))? {
            let e = e?;
            let Ok(segno) = u32::from_str_radix(&e.file_name().to_string_lossy(), 16) else {
                continue;
            };
            let local = std::fs::read(e.path())?;
            slru_pages += local.len() / BLCKSZ;
            let (status, body) = client
                .get(
                    "/slru_segment",
                    &[("kind", kind.into()), ("segno", segno.to_string())],
                )
                .await?;
            if status != 200 {
                mismatches.push(format!(
                    "{dir}/{segno:04X}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            } else if body[..] != local[..] {
                let first = body.iter().zip(&local).position(|(a, b)| a != b);
                mismatches.push(format!(
                    "{dir}/{segno:04X}: {} bytes locally, {} from the pageserver, first difference at {first:?}",
                    local.len(),
                    body.len()
                ));
            }
        }
    }

    // Databases.
    let mut local_dbs: Vec<(u64, u64)> = vec![(1664, 0)];
    for e in std::fs::read_dir(args.datadir.join("base"))? {
        if let Ok(db) = e?.file_name().to_string_lossy().parse::<u64>() {
            local_dbs.push((1663, db));
        }
    }
    local_dbs.sort();
    let mut remote_dbs: Vec<(u64, u64)> = listing["databases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["spcnode"].as_u64().unwrap_or(0),
                d["dbnode"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    remote_dbs.sort();
    if local_dbs != remote_dbs {
        mismatches.push(format!(
            "databases: local {local_dbs:?}, pageserver {remote_dbs:?}"
        ));
    }

    for m in mismatches.iter().take(20) {
        println!("mismatch: {m}");
    }
    println!(
        "pageserver_oracle: pages={} mismatches={} relations={relations} slru_pages={slru_pages} fsm_forks={fsm_forks} unlogged_forks={unlogged_forks} uncatalogued={uncatalogued}",
        pages + slru_pages,
        mismatches.len()
    );
    Ok(mismatches.is_empty())
}
