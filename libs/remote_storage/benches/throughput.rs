//! Upload and download throughput of 8 MiB objects (`STRATA_BENCH_OBJECT_MIB` for another
//! size): LocalFs against a plain file copy on the
//! same disk, and S3 (moto) and Azure (Azurite) on loopback. Prints MiB/s and the ratio of
//! each operation's time to the plain copy's (goal: LocalFs within 1.5×).
//!
//! Run: `cargo bench -p remote_storage` (`STRATA_BENCH_ITERATIONS=N` to change the count,
//! `STRATA_SKIP_REMOTE_SERVERS=1` to measure LocalFs only).
//!
//! Every side makes the data durable the same way: the plain copy is `copy` + `fsync` of the
//! destination file; LocalFs uploads fsync the object and its directory; downloads are
//! written to a file that is fsynced.

#![allow(clippy::unwrap_used)] // A benchmark that cannot set up has nothing to report.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use remote_storage::{DownloadOpts, GenericRemoteStorage, RemotePath, UploadSource};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The object size: `STRATA_BENCH_OBJECT_MIB` MiB (8 by default).
fn object_size() -> usize {
    std::env::var("STRATA_BENCH_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(8)
        << 20
}
const MIB: f64 = (1 << 20) as f64;

struct Stats {
    label: String,
    median: Duration,
}

impl Stats {
    fn mib_per_s(&self) -> f64 {
        object_size() as f64 / MIB / self.median.as_secs_f64()
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn measure<F, Fut>(iterations: usize, mut f: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    f(usize::MAX).await; // warm-up
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        f(i).await;
        times.push(started.elapsed());
    }
    median(times)
}

async fn plain_copy(src: &std::path::Path, dst: &std::path::Path) {
    tokio::fs::copy(src, dst).await.unwrap();
    tokio::fs::File::open(dst)
        .await
        .unwrap()
        .sync_all()
        .await
        .unwrap();
}

async fn download_to_file(s: &GenericRemoteStorage, key: &RemotePath, dst: &std::path::Path) {
    let cancel = CancellationToken::new();
    let mut d = s
        .download(key, &DownloadOpts::default(), &cancel)
        .await
        .unwrap();
    let mut f = tokio::fs::File::create(dst).await.unwrap();
    while let Some(chunk) = d.stream.next().await {
        f.write_all(&chunk.unwrap()).await.unwrap();
    }
    f.sync_all().await.unwrap();
}

async fn bench_backend(
    name: &str,
    s: &GenericRemoteStorage,
    src: &std::path::Path,
    scratch: &std::path::Path,
    iterations: usize,
    out: &mut Vec<Stats>,
) {
    let cancel = CancellationToken::new();
    let src_utf8 = camino::Utf8PathBuf::from_path_buf(src.to_owned()).unwrap();
    let up = measure(iterations, |i| {
        let source = UploadSource::from_file(src_utf8.clone());
        let key = RemotePath::new(&format!("bench/obj{}", i % 4)).unwrap();
        let cancel = &cancel;
        async move {
            s.upload(source, object_size() as u64, &key, None, cancel)
                .await
                .unwrap();
        }
    })
    .await;
    out.push(Stats {
        label: format!("{name} upload"),
        median: up,
    });
    let key = RemotePath::new("bench/obj0").unwrap();
    let dst = scratch.join(format!("{name}-download"));
    let down = measure(iterations, |_| download_to_file(s, &key, &dst)).await;
    out.push(Stats {
        label: format!("{name} download"),
        median: down,
    });
}

fn main() {
    let iterations: usize = std::env::var("STRATA_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Same disk for everything: the data, the copies and the LocalFs root.
        let scratch = tempfile::tempdir_in(common::workspace_root().join("target")).unwrap();
        let src = scratch.path().join("source-8mib");
        let data: Vec<u8> = (0..object_size())
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let mut results = Vec::new();

        let dst = scratch.path().join("plain-copy");
        let plain = measure(iterations, |_| plain_copy(&src, &dst)).await;
        results.push(Stats {
            label: "plain file copy".into(),
            median: plain,
        });

        let root = camino::Utf8PathBuf::from_path_buf(scratch.path().join("local-fs")).unwrap();
        let local =
            GenericRemoteStorage::from_config(&remote_storage::RemoteStorageConfig::local_fs(root))
                .await
                .unwrap();
        bench_backend(
            "local_fs",
            &local,
            &src,
            scratch.path(),
            iterations,
            &mut results,
        )
        .await;

        if let Some(s3) = common::s3().await {
            bench_backend(
                "s3 (moto)",
                &s3,
                &src,
                scratch.path(),
                iterations,
                &mut results,
            )
            .await;
        }
        if let Some(az) = common::azure().await {
            bench_backend(
                "azure (Azurite)",
                &az,
                &src,
                scratch.path(),
                iterations,
                &mut results,
            )
            .await;
        }

        println!(
            "\nremote_storage throughput, {} MiB objects, median of {iterations} runs",
            object_size() >> 20
        );
        println!(
            "{:<26} {:>10} {:>10} {:>14}",
            "operation", "median", "MiB/s", "time vs copy"
        );
        for r in &results {
            println!(
                "{:<26} {:>8.1}ms {:>10.1} {:>13.2}x",
                r.label,
                r.median.as_secs_f64() * 1000.0,
                r.mib_per_s(),
                r.median.as_secs_f64() / plain.as_secs_f64()
            );
        }
        for r in results.iter().filter(|r| r.label.starts_with("local_fs")) {
            let ratio = r.median.as_secs_f64() / plain.as_secs_f64();
            println!(
                "goal: {} within 1.5x of the plain copy: {} ({ratio:.2}x)",
                r.label,
                if ratio <= 1.5 { "met" } else { "NOT met" }
            );
        }
    });
}
