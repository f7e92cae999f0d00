//! `strata tenant size`: the pageserver's synthetic size of a tenant, with branch names.
//!
//! Prints the total, then per branch (by its CLI name) the LSNs the model used, then the
//! choice per segment; `--html FILE` also writes the pageserver's page (the picture and the
//! inputs table), for a browser.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use tenant_size_model::human_bytes as human;
use utils::{Lsn, TenantId};

use crate::branches::{Branches, pageserver_api};
use crate::repo::Repo;

/// `strata tenant size`.
#[derive(clap::Args, Debug)]
pub struct SizeArgs {
    /// The tenant (default: the default tenant).
    #[arg(long)]
    pub tenant_id: Option<TenantId>,
    /// Calculate as if the PITR interval were this, when shorter (`0s`, `10m`, `1h`, `7d`).
    #[arg(long)]
    pub retention_period: Option<String>,
    /// Also write the HTML page (picture and inputs) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Fetches and prints the size (and writes the page with `--html`).
pub async fn tenant_size(repo: &Repo, args: &SizeArgs) -> anyhow::Result<()> {
    let branches = Branches::load(repo)?;
    let tenant = branches.tenant(args.tenant_id)?;
    let mut path = format!("/v1/tenant/{tenant}/synthetic_size");
    if let Some(r) = &args.retention_period {
        path.push_str(&format!("?retention_period={}", urlencode(r)));
    }
    let api = pageserver_api(repo)?;
    let size = api.get(&path).await?;
    let names: BTreeMap<String, String> = branches
        .tenants
        .get(&tenant)
        .map(|b| b.iter().map(|(n, t)| (t.to_string(), n.clone())).collect())
        .unwrap_or_default();
    print!("{}", describe(&size, &names));
    if let Some(file) = &args.html {
        let page = api.get_text(&path, "text/html").await?;
        std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}

/// Percent-encodes what a duration may contain that a query may not.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The report, from the pageserver's JSON and the CLI's branch names.
fn describe(size: &Value, names: &BTreeMap<String, String>) -> String {
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let total = size["size"].as_u64().unwrap_or(0);
    let mut out = format!(
        "tenant {}: synthetic size {total} bytes ({})\n",
        size["id"].as_str().unwrap_or("?"),
        human(total)
    );
    out.push_str("branches:\n");
    for t in size["inputs"]["timelines"].as_array().into_iter().flatten() {
        let id = t["timeline_id"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "  {:<12} start {:<12} retention cutoff {:<12} last record {}\n",
            name(id),
            t["start_lsn"].as_str().unwrap_or("?"),
            t["retention_cutoff"].as_str().unwrap_or("?"),
            t["last_record_lsn"].as_str().unwrap_or("?"),
        ));
    }
    out.push_str("segments (branch, point, LSN, logical size, needed → choice, subtree bytes):\n");
    let segments = size["inputs"]["model"]["segments"].as_array();
    let points = size["inputs"]["points"].as_array();
    let choices = size["segment_sizes"].as_array();
    for (index, segment) in segments.into_iter().flatten().enumerate() {
        let point = points.and_then(|p| p.get(index));
        let choice = choices.and_then(|c| c.get(index));
        let lsn = segment["lsn"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "  {index:>3} {:<12} {:<16} {:<12} {:>12} {:<6} → {:<12} {}\n",
            point.map_or("?".into(), |p| name(
                p["timeline_id"].as_str().unwrap_or("?")
            )),
            point.and_then(|p| p["kind"].as_str()).unwrap_or("?"),
            Lsn(lsn).to_string(),
            segment["size"].as_u64().map_or_else(|| "-".into(), human),
            segment["needed"].as_bool().unwrap_or(false),
            choice.and_then(|c| c["method"].as_str()).unwrap_or("?"),
            choice.and_then(|c| c["accum_size"].as_u64()).unwrap_or(0),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_branches_and_choices() {
        let size = serde_json::json!({
            "id": "aa", "size": 2048,
            "segment_sizes": [{"method": "SnapshotHere", "accum_size": 2048}],
            "inputs": {
                "model": {"branches": [], "segments": [{"parent": null, "branch": 0,
                    "lsn": 0x0100_0028u64, "size": 1024, "needed": true}]},
                "points": [{"timeline_id": "t1", "kind": "BranchStart"}],
                "timelines": [{"timeline_id": "t1", "start_lsn": "0/1000028",
                    "retention_cutoff": "0/1000028", "last_record_lsn": "0/2000000"}],
            },
        });
        let names = BTreeMap::from([("t1".to_string(), "main".to_string())]);
        let text = describe(&size, &names);
        assert!(
            text.contains("synthetic size 2048 bytes (2.0 KiB)"),
            "{text}"
        );
        assert!(
            text.contains("main") && text.contains("0/1000028"),
            "{text}"
        );
        assert!(text.contains("SnapshotHere"), "{text}");
        assert_eq!(urlencode("1 h"), "1%20h");
    }
}
