//! Disk-pressure eviction: a background task that keeps the workdir's file system below
//! `disk_usage_based_eviction.max_usage_pct` (and above `min_avail_bytes` free) by
//! evicting layers, least recently read first, across every tenant.
//!
//! Only layers the uploaded index names are candidates (the same rule as any eviction,
//! `timeline::eviction`): what is not in object storage yet is never dropped, so a disk
//! that fills with not-yet-uploaded layers stays full (and says so in a warning) rather
//! than losing data. Each round measures usage (`statvfs`), plans the evictions that free
//! enough ([`plan`], pure), and evicts them; the next round measures again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::DiskUsageEvictionConfig;
use crate::layers::residence::Layer;
use crate::metrics;
use crate::remote_timeline_client::index::LayerFileMeta;
use crate::tenant_manager::TenantManager;

/// The file system's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the file system.
    pub total: u64,
    /// Bytes free to unprivileged users.
    pub avail: u64,
}

impl Usage {
    /// What `statvfs` says of the file system holding `path`.
    pub fn of(path: &Path) -> std::io::Result<Usage> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let frag = s.fragment_size();
        Ok(Usage {
            total: s.blocks() * frag,
            avail: s.blocks_available() * frag,
        })
    }

    /// Bytes to free for `conf` to hold (0: it holds).
    pub fn shortfall(&self, conf: &DiskUsageEvictionConfig) -> u64 {
        let used = self.total.saturating_sub(self.avail);
        let allowed = self.total / 100 * conf.max_usage_pct;
        let over_pct = used.saturating_sub(allowed);
        let under_avail = conf.min_avail_bytes.saturating_sub(self.avail);
        over_pct.max(under_avail)
    }
}

/// An eviction candidate.
#[derive(Debug, Clone)]
pub struct Candidate<L> {
    /// Seconds since the epoch of its last read.
    pub last_access: u64,
    /// Bytes it frees.
    pub size: u64,
    /// The layer (and what the index says of it).
    pub layer: L,
}

/// The least recently read candidates that together free at least `need` bytes (all of
/// them when they do not suffice).
pub fn plan<L>(mut candidates: Vec<Candidate<L>>, need: u64) -> Vec<Candidate<L>> {
    candidates.sort_by_key(|c| c.last_access);
    let mut freed = 0;
    let mut out = Vec::new();
    for c in candidates {
        if freed >= need {
            break;
        }
        freed += c.size;
        out.push(c);
    }
    out
}

/// Every resident layer the uploaded indexes name, with what they say of it.
fn candidates(tenants: &TenantManager) -> Vec<Candidate<(Arc<Layer>, LayerFileMeta)>> {
    tenants
        .list()
        .iter()
        .flat_map(|t| t.timelines())
        .flat_map(|tl| tl.evictable_layers())
        .map(|(layer, meta)| Candidate {
            last_access: layer.last_access(),
            size: layer.file_size(),
            layer: (layer, meta),
        })
        .collect()
}

/// One round: measure, plan, evict. Returns the bytes evicted.
pub fn run_once(tenants: &TenantManager, workdir: &Path, conf: &DiskUsageEvictionConfig) -> u64 {
    let usage = match usage_of(workdir) {
        Ok(u) => u,
        Err(e) => {
            warn!("disk usage of {}: {e}", workdir.display());
            return 0;
        }
    };
    let need = usage.shortfall(conf);
    if need == 0 {
        return 0;
    }
    let all = candidates(tenants);
    let available: u64 = all.iter().map(|c| c.size).sum();
    let chosen = plan(all, need);
    let mut freed = 0;
    let mut evicted = 0;
    for c in chosen {
        let (layer, meta) = c.layer;
        match layer.evict(meta) {
            Ok(true) => {
                freed += c.size;
                evicted += 1;
            }
            Ok(false) => {}
            Err(e) => warn!(layer = %layer.name(), "disk-pressure eviction: {e}"),
        }
    }
    metrics::DISK_USAGE_EVICTED_BYTES.inc_by(freed);
    if freed < need && warn_now() {
        warn!(
            "disk usage: {need} bytes over the limit, but only {available} bytes of uploaded layers were resident; evicted {evicted} layers ({freed} bytes)"
        );
    } else if evicted > 0 {
        info!("disk usage: {need} bytes over the limit; evicted {evicted} layers ({freed} bytes)");
    }
    freed
}

/// Whether to warn that eviction cannot free enough: at most once a minute (the
/// condition persists round after round).
fn warn_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// The measured usage; tests replace it with the failpoint `disk-usage-eviction-avail`
/// (`return(BYTES)`: that many bytes free on a file system of the real size).
fn usage_of(workdir: &Path) -> std::io::Result<Usage> {
    let mut u = Usage::of(workdir)?;
    if utils::failpoint::supported()
        && let Some(Some(v)) = utils::failpoint::eval("disk-usage-eviction-avail")
        && let Ok(avail) = v.parse::<u64>()
    {
        u.avail = avail.min(u.total);
    }
    Ok(u)
}

/// Runs rounds every `conf.period` until `cancel`.
pub async fn run(
    tenants: Arc<TenantManager>,
    workdir: PathBuf,
    conf: DiskUsageEvictionConfig,
    cancel: CancellationToken,
) {
    info!(
        "disk-pressure eviction: above {}% used or below {} bytes free, every {:?}",
        conf.max_usage_pct, conf.min_avail_bytes, conf.period
    );
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(conf.period) => {}
        }
        let (t, w, c) = (tenants.clone(), workdir.clone(), conf.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || run_once(&t, &w, &c)).await {
            warn!("disk-pressure eviction round failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(pct: u64, min_avail: u64) -> DiskUsageEvictionConfig {
        DiskUsageEvictionConfig {
            max_usage_pct: pct,
            min_avail_bytes: min_avail,
            period: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn shortfall_is_the_larger_of_the_two_limits() {
        let u = Usage {
            total: 1000,
            avail: 150,
        };
        assert_eq!(u.shortfall(&conf(90, 0)), 0);
        assert_eq!(u.shortfall(&conf(80, 0)), 50);
        assert_eq!(u.shortfall(&conf(90, 300)), 150);
        assert_eq!(u.shortfall(&conf(80, 300)), 150);
        assert_eq!(u.shortfall(&conf(100, 0)), 0);
    }

    #[test]
    fn plan_takes_the_least_recently_read_until_enough_is_freed() {
        let c = |last_access, size, id| Candidate {
            last_access,
            size,
            layer: id,
        };
        let all = vec![
            c(30, 10, 'a'),
            c(10, 10, 'b'),
            c(20, 10, 'c'),
            c(40, 10, 'd'),
        ];
        let ids = |p: Vec<Candidate<char>>| p.into_iter().map(|c| c.layer).collect::<String>();
        assert_eq!(ids(plan(all.clone(), 0)), "");
        assert_eq!(ids(plan(all.clone(), 1)), "b");
        assert_eq!(ids(plan(all.clone(), 15)), "bc");
        assert_eq!(ids(plan(all.clone(), 20)), "bc");
        assert_eq!(ids(plan(all, 1000)), "bcad");
    }
}
