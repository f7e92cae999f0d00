//! WAL redo benchmarks: `cargo bench -p pageserver --bench walredo`.
//!
//! - `pipe_baseline`: 8 KiB + a reply header through a `cat` child and back, over the same
//!   tokio pipes: what the machine charges for a round trip at all (on an idle VM whose
//!   vCPUs halt, tens of microseconds). Report redo latency as a ratio to this.
//! - `ping`: the bare protocol round trip to a redo process.
//! - `heap_insert_round_trip`: one heap-insert record on an 8 KiB base image, one request
//!   at a time (latency).
//! - `pipelined/N`: the same request with N in flight on one process (throughput: the
//!   reported elements/s are pages/s).
//! - `pipelined_default_pool/16`: the same with the default pool of two processes.
//! - `chain_200`: a 200-record heap-insert chain onto one page (records/s = 200 × pages/s).
//! - `btree_chain`: the longest btree leaf history from a real PostgreSQL 15 (sequential
//!   inserts into an index), replayed from its initializing record (records/s).
//! - `image_only`: a history that is just an image (the Rust fast path, no process).

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use pageserver::wal_import::PageReplay;
use pageserver::walrecord::WalRecord;
use pageserver::walredo::synthetic::{empty_heap_page, heap_insert};
use pageserver::walredo::{WalRedoConfig, WalRedoManager};
use pageserver_api::reltag::{BufferTag, RelTag};
use utils::Lsn;

fn tag() -> BufferTag {
    BufferTag {
        rel: RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        },
        blkno: 0,
    }
}

fn chain(n: u16) -> Vec<(Lsn, WalRecord)> {
    (1..=n)
        .map(|i| {
            let start = 0x1000 + u64::from(i) * 0x100;
            let rec: Bytes = heap_insert(tag(), 700, i, i32::from(i));
            (
                Lsn(start + 0x40),
                WalRecord::Postgres {
                    start_lsn: Lsn(start),
                    will_init: false,
                    rec,
                },
            )
        })
        .collect()
}

/// The longest btree page history in the WAL of a real PostgreSQL 15 run, replayable from
/// an image or an initializing record.
fn real_btree_chain() -> (BufferTag, PageReplay) {
    const RM_BTREE_ID: u8 = 11;
    let mut pg = pg_oracle::TestPostgres::init(&[("fsync", "off"), ("wal_keep_size", "1GB")])
        .expect("test postgres (run ./scripts/setup)");
    pg.start().expect("start postgres");
    pg.psql("CHECKPOINT").expect("checkpoint");
    let start: Lsn = pg
        .psql("SELECT redo_lsn FROM pg_control_checkpoint()")
        .expect("redo lsn")
        .parse()
        .expect("lsn");
    pg.psql_script(
        "postgres",
        "CREATE TABLE t (k int); CREATE INDEX t_k ON t (k);\n\
         INSERT INTO t SELECT g FROM generate_series(1, 5000) g;",
    )
    .expect("workload");
    pg.stop("fast").expect("stop");
    let h = pageserver::wal_import::read_wal_dir(&pg.datadir().join("pg_wal"), start, 16 << 20)
        .expect("read WAL");
    let is_btree = |r: &WalRecord| matches!(r, WalRecord::Postgres { rec, .. } if rec.get(17) == Some(&RM_BTREE_ID));
    h.pages
        .iter()
        .filter_map(|(key, history)| match key {
            pageserver::walingest::PageKey::Rel(tag) => {
                Some((*tag, PageReplay::from_history(history)))
            }
            _ => None,
        })
        .filter(|(_, replay)| {
            !replay.records.is_empty() && replay.records.iter().all(|(_, r)| is_btree(r))
        })
        .max_by_key(|(_, replay)| replay.records.len())
        .expect("a btree page history")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let m = rt
        .block_on(async {
            WalRedoManager::new(WalRedoConfig {
                processes: 1,
                ..Default::default()
            })
        })
        .expect("walredo manager: run ./scripts/setup first");
    let base = empty_heap_page(0x1000);
    let one = chain(1);
    let long = chain(200);

    let mut g = c.benchmark_group("walredo");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut child, mut stdin, mut stdout) = rt.block_on(async {
            let mut child = tokio::process::Command::new("cat")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn cat");
            let stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            (child, stdin, stdout)
        });
        let out = vec![7u8; 8192 + 13];
        let mut back = vec![0u8; 8192 + 13];
        g.bench_function("pipe_baseline", |b| {
            b.iter(|| {
                rt.block_on(async {
                    stdin.write_all(&out).await.expect("write");
                    stdout.read_exact(&mut back).await.expect("read");
                })
            })
        });
        rt.block_on(async {
            drop(stdin);
            let _ = child.wait().await;
        });
    }

    g.bench_function("ping", |b| {
        b.to_async(&rt)
            .iter(|| async { m.ping().await.expect("ping") })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("heap_insert_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            m.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &one)
                .await
                .expect("redo")
        })
    });

    const BATCH: u64 = 512;
    for in_flight in [1usize, 4, 16] {
        g.throughput(Throughput::Elements(BATCH));
        g.bench_with_input(
            BenchmarkId::new("pipelined", in_flight),
            &in_flight,
            |b, &k| {
                b.to_async(&rt).iter(|| async {
                    futures::stream::iter(0..BATCH)
                        .map(|_| m.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &one))
                        .buffer_unordered(k)
                        .for_each(|r| async move {
                            r.expect("redo");
                        })
                        .await
                })
            },
        );
    }

    // The default pool (two processes), 16 in flight: what the pageserver gets.
    let pool = rt
        .block_on(async { WalRedoManager::new(WalRedoConfig::default()) })
        .expect("walredo pool");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("pipelined_default_pool/16", |b| {
        b.to_async(&rt).iter(|| async {
            futures::stream::iter(0..BATCH)
                .map(|_| pool.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &one))
                .buffer_unordered(16)
                .for_each(|r| async move {
                    r.expect("redo");
                })
                .await
        })
    });
    rt.block_on(pool.shutdown());

    g.throughput(Throughput::Elements(long.len() as u64));
    g.bench_function("chain_200", |b| {
        b.to_async(&rt).iter(|| async {
            m.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &long)
                .await
                .expect("redo")
        })
    });

    let (bt_tag, bt) = real_btree_chain();
    eprintln!("btree_chain: {} records on {bt_tag}", bt.records.len());
    g.throughput(Throughput::Elements(bt.records.len() as u64));
    g.bench_function("btree_chain", |b| {
        b.to_async(&rt).iter(|| async {
            m.request_redo(bt_tag, bt.base_ref(), &bt.records)
                .await
                .expect("btree redo")
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("image_only", |b| {
        b.to_async(&rt).iter(|| async {
            m.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &[])
                .await
                .expect("image")
        })
    });
    g.finish();
    rt.block_on(m.shutdown());
}

criterion_group!(walredo, benches);
criterion_main!(walredo);
