//! `cargo bench -p walproposer --bench wal_buffer`: the proposer's in-memory WAL under the
//! commit path's pattern, against the flat-`Vec` buffer it replaced (kept here as the
//! baseline, measured in the same run).
//!
//! Each case streams 256 MiB of compute WAL in 128 KiB messages to three safekeepers
//! (every piece handed to each of them) and trims 1 MiB at a time behind them:
//! - `caught_up`: the buffer stays small (acceptors acknowledge right away);
//! - `lagging`: one acceptor is 120 MiB behind, so the buffer holds ~120 MiB while it is
//!   trimmed at the front, as with an acceptor that came back after a while.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use utils::Lsn;
use walproposer::wal_buffer::WalBuffer;

const TOTAL: u64 = 256 << 20;
const MSG: usize = 128 << 10;
const PIECE: usize = 128 << 10;
const TRIM: u64 = 1 << 20;

/// The buffer as it was: one `Vec`, drained at the front, copied on every get.
struct VecBuffer {
    start: Lsn,
    data: Vec<u8>,
}

impl VecBuffer {
    fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.data.len() as u64)
    }
    fn append(&mut self, b: &[u8]) {
        self.data.extend_from_slice(b);
    }
    fn trim_to(&mut self, lsn: Lsn) {
        let lsn = lsn.min(self.end());
        if lsn > self.start {
            self.data.drain(..(lsn.0 - self.start.0) as usize);
            self.start = lsn;
        }
    }
    fn get(&self, from: Lsn, max: usize) -> Option<Bytes> {
        if from < self.start || from >= self.end() {
            return None;
        }
        let off = (from.0 - self.start.0) as usize;
        let len = max.min(self.data.len() - off);
        Some(Bytes::copy_from_slice(&self.data[off..off + len]))
    }
}

trait Buffer {
    fn append(&mut self, b: &[u8]);
    fn trim_to(&mut self, lsn: Lsn);
    fn get(&self, from: Lsn, max: usize) -> Option<Bytes>;
}

impl Buffer for VecBuffer {
    fn append(&mut self, b: &[u8]) {
        VecBuffer::append(self, b)
    }
    fn trim_to(&mut self, lsn: Lsn) {
        VecBuffer::trim_to(self, lsn)
    }
    fn get(&self, from: Lsn, max: usize) -> Option<Bytes> {
        VecBuffer::get(self, from, max)
    }
}

impl Buffer for WalBuffer {
    fn append(&mut self, b: &[u8]) {
        WalBuffer::append(self, b)
    }
    fn trim_to(&mut self, lsn: Lsn) {
        WalBuffer::trim_to(self, lsn)
    }
    fn get(&self, from: Lsn, max: usize) -> Option<Bytes> {
        WalBuffer::get(self, from, max)
    }
}

/// Streams TOTAL bytes; the slowest acceptor stays `lag` bytes behind the others.
fn run(buf: &mut impl Buffer, lag: u64) -> usize {
    let msg = vec![0x5au8; MSG];
    let mut next = [Lsn(0); 3];
    let mut end = 0u64;
    let mut sent = 0usize;
    let mut trimmed = 0u64;
    while end < TOTAL {
        buf.append(&msg);
        end += MSG as u64;
        for (i, n) in next.iter_mut().enumerate() {
            let target = if i == 2 { end.saturating_sub(lag) } else { end };
            while n.0 < target {
                let piece = buf.get(*n, PIECE).expect("in the buffer");
                sent += piece.len();
                *n = Lsn(n.0 + piece.len() as u64);
            }
        }
        let horizon = next.iter().map(|l| l.0).min().unwrap_or(0);
        if horizon >= trimmed + TRIM {
            buf.trim_to(Lsn(horizon));
            trimmed = horizon;
        }
    }
    sent
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_buffer");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(TOTAL));
    for (case, lag) in [("caught_up", 0u64), ("lagging", 120 << 20)] {
        g.bench_with_input(BenchmarkId::new("vec_baseline", case), &lag, |b, &lag| {
            b.iter(|| {
                run(
                    &mut VecBuffer {
                        start: Lsn(0),
                        data: Vec::new(),
                    },
                    lag,
                )
            })
        });
        g.bench_with_input(BenchmarkId::new("chunked", case), &lag, |b, &lag| {
            b.iter(|| run(&mut WalBuffer::new(Lsn(0)), lag))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
