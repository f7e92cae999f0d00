//! Append throughput and latency of the real `safekeeper` binary, with fsync on, against
//! the disk's own sequential write + fdatasync measured in the same run.
//!
//! `cargo bench -p safekeeper --bench wal_append` prints a table:
//!
//! * **disk**: a preallocated file (as WAL segments are) written sequentially in chunks of
//!   the append size with an fdatasync after every chunk — what the disk gives when every
//!   chunk must be durable before the next; in 1 MiB writes with an fdatasync after each;
//!   and in 1 MiB writes with one fdatasync at the end — its plain sequential bandwidth.
//! * **throughput**: a proposer pipelines appends of 8 KiB or 128 KiB (cut at WAL record
//!   boundaries) over TCP while reading AppendResponses; MiB/s from the first send to the
//!   response that reports the last byte flushed.
//! * **latency**: one append at a time, from sending it to the AppendResponse whose flush
//!   LSN covers it (p50/p99).
//!
//! Everything is bounded (at most 128 MiB per measurement) and lives in cargo's target tmp
//! directory, on the same file system as the build. `SK_BENCH_NO_SYNC=1` runs the
//! safekeeper with `--no-sync`, which shows how much of the time is CPU (server and client
//! share the machine).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::*;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriter, XLogRecordBuilder};
use safekeeper_api::AcceptorMessage;
use utils::{Lsn, TenantTimelineId};

const MIB: f64 = 1024.0 * 1024.0;
const START: Lsn = Lsn(SEG);

/// WAL from START with records of `payload` bytes; returns the bytes and record ends.
fn wal(total: usize, payload: usize) -> (Vec<u8>, Vec<Lsn>) {
    let mut w = WalWriter::new(writer_config(), START, Lsn::INVALID);
    let mut ends = Vec::new();
    let data = vec![0x5Au8; payload];
    while w.position().0 - START.0 < total as u64 {
        ends.push(
            w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&data))
                .1,
        );
    }
    let end = *ends.last().unwrap();
    w.zero_until(end);
    (w.into_bytes(), ends)
}

/// Cuts the stream at record ends into chunks of at most `size` bytes.
fn chunks(ends: &[Lsn], size: u64) -> Vec<(Lsn, Lsn)> {
    let mut out = Vec::new();
    let mut begin = START;
    let mut last = START;
    for &e in ends {
        if e.0 - begin.0 > size && last > begin {
            out.push((begin, last));
            begin = last;
        }
        last = e;
    }
    out.push((begin, last));
    out
}

fn disk_baseline(dir: &std::path::Path, chunk: usize, total: usize, per_chunk_sync: bool) -> f64 {
    let path = dir.join(format!("baseline-{chunk}"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(total as u64).unwrap();
    let _ = nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, total as i64);
    f.sync_all().unwrap();
    let buf = vec![0xA5u8; chunk];
    let t = Instant::now();
    for off in (0..total).step_by(chunk) {
        f.write_all_at(&buf, off as u64).unwrap();
        if per_chunk_sync {
            f.sync_data().unwrap();
        }
    }
    f.sync_data().unwrap();
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    total as f64 / MIB / secs
}

async fn elect(sk: &Sk, ttid: TenantTimelineId) -> Proposer {
    let mut p = Proposer::connect(&sk.pg_addr(), ttid).await.unwrap();
    p.greet().await;
    assert!(p.vote(1).await.vote_given);
    p.send(&Proposer::elected(1, START, &[(1, START)]))
        .await
        .unwrap();
    p
}

/// Pipelined appends, with replies read by a task of their own (as a real proposer does);
/// returns MiB/s and the number of appends.
async fn throughput(sk: &Sk, size: u64, total: usize) -> (f64, usize) {
    let (bytes, ends) = wal(total, 900);
    let parts = chunks(&ends, size);
    let end = parts.last().unwrap().1;
    let Proposer { mut r, mut w, .. } = elect(sk, TenantTimelineId::generate()).await;
    let t = Instant::now();
    let replies = tokio::spawn(async move {
        loop {
            let data = r.read_copy_data(1 << 20).await.unwrap().unwrap();
            if let AcceptorMessage::AppendResponse(resp) = AcceptorMessage::decode(&data).unwrap()
                && resp.flush_lsn >= end
            {
                return;
            }
        }
    });
    for (i, &(b, e)) in parts.iter().enumerate() {
        let slice = &bytes[(b.0 - START.0) as usize..(e.0 - START.0) as usize];
        w.write_copy_data_with(|buf| Proposer::append(1, b, slice, Lsn::INVALID).encode(buf))
            .unwrap();
        if i % 4 == 3 {
            w.flush().await.unwrap();
        }
    }
    w.flush().await.unwrap();
    replies.await.unwrap();
    let mib_s = (end.0 - START.0) as f64 / MIB / t.elapsed().as_secs_f64();
    (mib_s, parts.len())
}

/// One append at a time; returns the latencies.
async fn latency(sk: &Sk, size: u64, count: usize) -> Vec<Duration> {
    let (bytes, ends) = wal(size as usize * (count + 2), 900);
    let parts = chunks(&ends, size);
    let mut p = elect(sk, TenantTimelineId::generate()).await;
    let mut out = Vec::with_capacity(count);
    for &(b, e) in parts.iter().take(count) {
        let slice = &bytes[(b.0 - START.0) as usize..(e.0 - START.0) as usize];
        let t = Instant::now();
        p.send(&Proposer::append(1, b, slice, Lsn::INVALID))
            .await
            .unwrap();
        loop {
            match p.recv().await.unwrap() {
                AcceptorMessage::AppendResponse(r) if r.flush_lsn >= e => break,
                AcceptorMessage::AppendResponse(_) => {}
                other => panic!("{other:?}"),
            }
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// fdatasyncs of WAL so far (the flush histogram's count).
fn fsync_count(sk: &Sk) -> u64 {
    let (_, metrics) = sk.http("GET", "/metrics", None);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("safekeeper_flush_wal_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs benches as tests: keep
    // that quick by measuring only with --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wal_append: run with `cargo bench -p safekeeper --bench wal_append`");
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("sk-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nosync = std::env::var("SK_BENCH_NO_SYNC").is_ok();
    let sk = Sk::start(
        &root.path().join("sk"),
        if nosync { &["--no-sync"] } else { &[] },
    );

    println!(
        "safekeeper WAL append benchmark (fsync on), in {}",
        root.path().display()
    );
    let disk_seq = disk_baseline(root.path(), 1024 * 1024, 64 << 20, false);
    let disk_1m = disk_baseline(root.path(), 1024 * 1024, 64 << 20, true);
    let disk_128 = disk_baseline(root.path(), 128 * 1024, 32 << 20, true);
    let disk_8 = disk_baseline(root.path(), 8 * 1024, 4 << 20, true);
    println!("disk: sequential 1 MiB writes + one fdatasync        {disk_seq:8.1} MiB/s");
    println!("disk:   1 MiB write + fdatasync each                 {disk_1m:8.1} MiB/s");
    println!("disk: 128 KiB write + fdatasync each                 {disk_128:8.1} MiB/s");
    println!("disk:   8 KiB write + fdatasync each                 {disk_8:8.1} MiB/s");

    for (size, total, disk) in [
        (128 * 1024u64, 128 << 20, disk_128),
        (8 * 1024, 32 << 20, disk_8),
    ] {
        let fsyncs_before = fsync_count(&sk);
        let (tput, appends) = rt.block_on(throughput(&sk, size, total));
        let fsyncs = fsync_count(&sk) - fsyncs_before;
        let lat = rt.block_on(latency(&sk, size, 500));
        println!(
            "safekeeper: {:>3} KiB appends  {tput:8.1} MiB/s  ({:5.0}% of write+fdatasync per append, {:5.0}% of sequential)  latency p50 {:6.2} ms  p99 {:6.2} ms",
            size / 1024,
            100.0 * tput / disk,
            100.0 * tput / disk_seq,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
        );
        println!(
            "            {fsyncs} fdatasyncs for {} appends ({:.1} appends per fdatasync)",
            appends,
            appends as f64 / fsyncs.max(1) as f64
        );
    }
    if std::env::var("SK_BENCH_DEBUG").is_ok() {
        let (_, m) = sk.http("GET", "/metrics", None);
        for l in m
            .lines()
            .filter(|l| l.contains("_count") || l.contains("bytes_total"))
        {
            println!("{l}");
        }
    }
    drop(sk);
}
