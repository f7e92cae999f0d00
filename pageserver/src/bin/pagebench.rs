//! `pagebench`: GetPage@latest throughput and latency over the page service.
//!
//! Discovers relation blocks through the HTTP API (`…/relations`), then N clients each
//! open a `pagestream` and keep `--depth` requests in flight for `--seconds`, asking for
//! random blocks of the main forks at the latest LSN. Prints requests/s and latency
//! percentiles (µs, from an HdrHistogram) as one line per run and a JSON summary.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use pageserver::page_service::{PageRequest, Request};
use pageserver_api::reltag::RelTag;
use pq_proto::StartupParams;
use pq_proto::client::ClientConnection;
use rand::{Rng, SeedableRng};
use utils::Lsn;

/// GetPage@latest load against a pageserver.
#[derive(Debug, Parser)]
struct Args {
    /// The pageserver's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:9898")]
    pageserver_http: String,
    /// The page service (host:port).
    #[arg(long, default_value = "127.0.0.1:64000")]
    page_service: String,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The timeline.
    #[arg(long)]
    timeline: String,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Only relations with at least this many blocks (skips the tiny catalogs).
    #[arg(long, default_value_t = 1)]
    min_blocks: u32,
    /// A JWT (HTTP and page service).
    #[arg(long)]
    token: Option<String>,
}

struct Target {
    rels: Vec<(RelTag, u32)>,
    total_blocks: u64,
    lsn: Lsn,
}

impl Target {
    fn pick(&self, rng: &mut impl Rng) -> (RelTag, u32) {
        let mut at = rng.random_range(0..self.total_blocks);
        for (rel, n) in &self.rels {
            if at < u64::from(*n) {
                return (*rel, at as u32);
            }
            at -= u64::from(*n);
        }
        let (rel, n) = self.rels[self.rels.len() - 1];
        (rel, n - 1)
    }
}

async fn discover(args: &Args) -> anyhow::Result<Target> {
    let base = format!(
        "{}/v1/tenant/{}/timeline/{}",
        args.pageserver_http.trim_end_matches('/'),
        args.tenant,
        args.timeline
    );
    let client = reqwest::Client::new();
    let get = |path: String| {
        let mut r = client.get(path);
        if let Some(t) = &args.token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let info: serde_json::Value = get(base.clone()).await?.error_for_status()?.json().await?;
    let lsn: Lsn = info["last_record_lsn"]
        .as_str()
        .context("last_record_lsn")?
        .parse()
        .map_err(|e| anyhow::anyhow!("last_record_lsn: {e:?}"))?;
    let listing: serde_json::Value = get(format!("{base}/relations"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut rels = Vec::new();
    for r in listing["relations"].as_array().into_iter().flatten() {
        let g = |k: &str| r[k].as_u64().unwrap_or(0) as u32;
        if g("forknum") == 0 && g("nblocks") >= args.min_blocks {
            rels.push((
                RelTag {
                    spcnode: g("spcnode"),
                    dbnode: g("dbnode"),
                    relnode: g("relnode"),
                    forknum: 0,
                },
                g("nblocks"),
            ));
        }
    }
    let total_blocks = rels.iter().map(|(_, n)| u64::from(*n)).sum();
    if total_blocks == 0 {
        bail!("no relation blocks to read");
    }
    Ok(Target {
        rels,
        total_blocks,
        lsn,
    })
}

async fn client(
    args: Arc<Args>,
    target: Arc<Target>,
    until: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut conn = ClientConnection::connect_tcp(&args.page_service).await?;
    conn.startup(
        &StartupParams::new().with("user", "pagebench"),
        args.token.as_deref(),
    )
    .await?;
    conn.start_copy_both(&format!("pagestream {} {}", args.tenant, args.timeline))
        .await?;
    let (mut reader, mut writer) = conn.into_split();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut sent: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    loop {
        let running = Instant::now() < until;
        while running && sent.len() < args.depth {
            let (rel, blk) = target.pick(&mut rng);
            let req = Request {
                request_lsn: Lsn(u64::MAX),
                not_modified_since: target.lsn,
                req: PageRequest::GetPage(rel, blk),
            };
            writer.write_copy_data(&req.encode());
            sent.push_back(Instant::now());
        }
        writer.flush().await?;
        let Some(start) = sent.pop_front() else {
            return Ok(hist);
        };
        let resp = reader
            .read_copy_data(1 << 20)
            .await?
            .context("the page service closed the stream")?;
        if resp.first() != Some(&102) {
            bail!("error response: {}", String::from_utf8_lossy(&resp[1..]));
        }
        hist.record(start.elapsed().as_micros().max(1) as u64)?;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = Arc::new(discover(&args).await?);
    let args = Arc::new(args);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(args.clone(), target.clone(), until)))
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let q = |p: f64| all.value_at_quantile(p);
    println!(
        "pagebench: clients={} depth={} requests={} rps={:.0} mean_us={:.1} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} blocks={}",
        args.clients,
        args.depth,
        all.len(),
        all.len() as f64 / secs,
        all.mean(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        all.max(),
        target.total_blocks
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pagebench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pagebench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
