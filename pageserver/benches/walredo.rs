//! WAL redo benchmarks: `cargo bench -p pageserver --bench walredo`.
//!
//! - `ping`: the bare pipe round trip to a redo process (the floor).
//! - `heap_insert_round_trip`: one heap-insert record on an 8 KiB base image, one request
//!   at a time (latency).
//! - `pipelined/N`: the same request with N in flight on one process (throughput: the
//!   reported elements/s are pages/s).
//! - `chain_200`: a 200-record heap-insert chain onto one page (records/s = 200 × pages/s).
//! - `image_only`: a history that is just an image (the Rust fast path, no process).

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
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

    g.throughput(Throughput::Elements(long.len() as u64));
    g.bench_function("chain_200", |b| {
        b.to_async(&rt).iter(|| async {
            m.request_redo(tag(), Some((Lsn(0x1000), &base[..])), &long)
                .await
                .expect("redo")
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
