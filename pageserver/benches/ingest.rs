//! Ingest benchmarks: `cargo bench -p pageserver --bench ingest`.
//!
//! The cases of Neon's `bench_ingest`, on Strata's in-memory layer and layer files: put
//! 128 MiB of image values at increasing LSNs into a fresh open layer, values of 100 B or
//! 8 KiB, keys sequential, random, or random among 1,024; then (`+delta`) freeze it and
//! write it as a delta layer file (fsynced). `+reader` runs a thread that keeps reading
//! the last 32 keys written while the puts go on. Throughput is MiB/s of values.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pageserver::keyspace::Key;
use pageserver::layers::in_memory::InMemoryLayer;
use pageserver::walingest::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use utils::crashsafe::Sync;
use utils::{Lsn, TenantId, TimelineId};

const TOTAL: usize = 128 * 1024 * 1024;
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug)]
enum Layout {
    Sequential,
    Random,
    RandomReuse1024,
}

fn key(n: u32) -> Key {
    Key {
        f2: 1663,
        f3: 5,
        f4: 16384 + n / 100_000,
        f6: n,
        ..Key::MIN
    }
}

fn run(value_size: usize, layout: Layout, write_delta: bool, reader: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = Arc::new(InMemoryLayer::create(dir.path(), Lsn(0x1000)).expect("layer"));
    let payload = Bytes::from(vec![0x5au8; value_size]);
    let count = TOTAL / value_size;
    let mut rng = StdRng::seed_from_u64(7);
    let last = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = reader.then(|| {
        let (layer, last, stop) = (layer.clone(), last.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let hi = last.load(Ordering::Relaxed);
                for k in hi.saturating_sub(32)..hi {
                    out.clear();
                    let _ = layer.get_values(key(k), Lsn(0)..Lsn(u64::MAX), &mut out);
                }
            }
        })
    });
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..count {
        let k = match layout {
            Layout::Sequential => i as u32,
            Layout::Random => rng.random_range(0..u32::MAX / 2),
            Layout::RandomReuse1024 => rng.random_range(0..1024),
        };
        batch.push((
            key(k),
            Lsn(0x1000 + i as u64 * 8),
            Value::Image(payload.clone()),
        ));
        if batch.len() == BATCH {
            layer.put_batch(&batch).expect("put");
            last.store(k, Ordering::Relaxed);
            batch.clear();
        }
    }
    layer.put_batch(&batch).expect("put");
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = reader_thread {
        let _ = t.join();
    }
    if write_delta {
        layer.freeze(Lsn(0x1000 + count as u64 * 8 + 1));
        layer
            .write_delta(
                dir.path(),
                TenantId::generate(),
                TimelineId::generate(),
                Sync::Yes,
            )
            .expect("write delta");
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(TOTAL as u64));
    let cases = [
        (8192, Layout::Sequential, true, false),
        (100, Layout::Sequential, true, false),
        (100, Layout::Random, true, false),
        (100, Layout::RandomReuse1024, true, false),
        (8192, Layout::Sequential, false, false),
        (100, Layout::Sequential, false, false),
        (8192, Layout::Sequential, false, true),
        (100, Layout::Sequential, false, true),
    ];
    for (size, layout, delta, reader) in cases {
        let name = format!(
            "{size}B-{layout:?}{}{}",
            if delta { "+delta" } else { "" },
            if reader { "+reader" } else { "" }
        );
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| run(size, layout, delta, reader))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
