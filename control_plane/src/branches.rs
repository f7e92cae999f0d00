//! `strata tenant …` and `strata timeline …`: tenants and named branches.
//!
//! A branch is a pageserver timeline plus a safekeeper timeline (on every safekeeper) that
//! starts at the branch's start LSN. Names are the CLI's: `<repo>/branches.toml` maps
//! (tenant, name) → timeline id, and records the default tenant.
//!
//! Invariant: a branch is recorded only after the pageserver and every safekeeper have it;
//! if a safekeeper refuses, the pageserver timeline (and a tenant this command created) is
//! deleted again, so a failed command leaves nothing half-created.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TenantId, TimelineId};

use utils::auth::{Claims, Scope};

use crate::auth;
use crate::repo::{Repo, ServiceConfig};

/// `PG_VERSION_NUM` sent to the safekeepers (they compare the major version only).
const PG_VERSION_NUM: u32 = 150000;
/// How long a bootstrap (initdb + import) may take.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(300);

/// `<repo>/branches.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branches {
    /// The tenant commands use without `--tenant-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tenant: Option<TenantId>,
    /// tenant → branch name → timeline.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, BTreeMap<String, TimelineId>>,
}

impl Branches {
    /// Reads `branches.toml` (empty if absent).
    pub fn load(repo: &Repo) -> anyhow::Result<Branches> {
        let path = repo.dir.join("branches.toml");
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t).with_context(|| format!("{}: not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Branches::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, repo: &Repo) -> anyhow::Result<()> {
        let path = repo.dir.join("branches.toml");
        let text = toml::to_string_pretty(self).context("encoding branches.toml")?;
        crashsafe::overwrite(&path, text.as_bytes(), Sync::Yes)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Refuses a branch name the tenant already uses.
    fn check_new(&self, tenant: TenantId, name: &str) -> anyhow::Result<()> {
        if self.timeline(tenant, name).is_ok() {
            bail!("branch {name:?} already exists in tenant {tenant}");
        }
        Ok(())
    }

    /// Records `name` → `timeline` in the tenant and saves the file.
    fn record(
        &mut self,
        repo: &Repo,
        tenant: TenantId,
        name: &str,
        timeline: TimelineId,
    ) -> anyhow::Result<()> {
        self.tenants
            .entry(tenant)
            .or_default()
            .insert(name.to_string(), timeline);
        self.save(repo)
    }

    /// The tenant to act on.
    pub fn tenant(&self, arg: Option<TenantId>) -> anyhow::Result<TenantId> {
        arg.or(self.default_tenant).context(
            "no tenant given and no default tenant (create one with `strata tenant create`)",
        )
    }

    /// The timeline a branch name stands for.
    pub fn timeline(&self, tenant: TenantId, name: &str) -> anyhow::Result<TimelineId> {
        self.tenants
            .get(&tenant)
            .and_then(|b| b.get(name))
            .copied()
            .with_context(|| {
                let known: Vec<&String> = self
                    .tenants
                    .get(&tenant)
                    .map(|b| b.keys().collect())
                    .unwrap_or_default();
                format!(
                    "no branch {name:?} in tenant {tenant} (branches: {}; `strata timeline list`)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            })
    }
}

/// A small JSON client for the services' HTTP APIs with one-line errors; with auth on, it
/// signs every call with a token of the service's management scope.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    name: String,
    token: Option<String>,
}

impl Api {
    /// The API of the service `name` at `http://127.0.0.1:<port>`, sending `token`.
    fn new(name: &str, port: u16, token: Option<String>) -> anyhow::Result<Api> {
        Ok(Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .context("HTTP client")?,
            base: format!("http://127.0.0.1:{port}"),
            name: name.to_string(),
            token,
        })
    }

    /// The pageserver `p`'s API (a `pageserverapi` token when auth is on).
    pub fn pageserver(repo: &Repo, p: &ServiceConfig) -> anyhow::Result<Api> {
        let token = auth::token(repo, &Claims::new(Scope::PageServerApi))?;
        Api::new(&format!("pageserver-{}", p.id), p.http_port, token)
    }

    /// The storage controller's API (an `admin` token when auth is on), when the cluster
    /// has one.
    pub fn storage_controller(repo: &Repo) -> anyhow::Result<Option<Api>> {
        let Some(c) = &repo.config.storage_controller else {
            return Ok(None);
        };
        let token = auth::token(repo, &Claims::new(Scope::Admin))?;
        Api::new("storage_controller", c.port, token).map(Some)
    }

    /// The safekeeper `s`'s API (a `safekeeperdata` token when auth is on).
    pub fn safekeeper(repo: &Repo, s: &ServiceConfig) -> anyhow::Result<Api> {
        let token = auth::token(repo, &Claims::new(Scope::SafekeeperData))?;
        Api::new(&format!("safekeeper-{}", s.id), s.http_port, token)
    }

    /// Sends a request; a non-2xx answer is an error carrying the service's message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let text = self.request(method, path, body, None).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A GET whose answer is text of the type `accept` names (an HTML page).
    pub async fn get_text(&self, path: &str, accept: &str) -> anyhow::Result<String> {
        self.request(reqwest::Method::GET, path, None, Some(accept))
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        accept: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "{} is not reachable at {} (is the cluster started? `strata start`)",
                    self.name,
                    self.base
                )
            } else {
                anyhow::anyhow!("{} {method} {path}: {e}", self.name)
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or(text);
            bail!("{} refused {method} {path} ({status}): {msg}", self.name);
        }
        Ok(text)
    }

    /// A GET returning JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The pageserver's `wait_lsn` (up to `timeout`, e.g. "60s"); while it waits, prints
    /// where the timeline is every PROGRESS_EVERY, so a slow ingest is visible instead of a
    /// silent pause.
    pub async fn wait_lsn(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        lsn: Lsn,
        timeout: &str,
    ) -> anyhow::Result<()> {
        let info_path = format!("/v1/tenant/{tenant}/timeline/{timeline}");
        let wait_path = format!("{info_path}/wait_lsn?lsn={lsn}&timeout={timeout}");
        let wait = self.get(&wait_path);
        tokio::pin!(wait);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            tokio::select! {
                r = &mut wait => return r.map(|_| ()),
                _ = ticks.tick() => {
                    let at = match self.get(&info_path).await {
                        Ok(info) => info["last_record_lsn"].as_str().unwrap_or("?").to_string(),
                        Err(e) => format!("unknown ({e})"),
                    };
                    println!("        waiting for the pageserver: at {at}, needs {lsn}");
                }
            }
        }
    }
}

/// How often a long step prints its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn pageserver_api(repo: &Repo) -> anyhow::Result<Api> {
    Api::pageserver(repo, repo.pageserver(None)?)
}

/// Parses `key=value` (the value as TOML; a bare word is a string) into JSON.
fn parse_setting(s: &str) -> anyhow::Result<(String, Value)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("-c {s:?}: expected key=value"))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
        Ok(mut t) => serde_json::to_value(t.remove("v")).context("setting value")?,
        Err(_) => Value::String(v.to_string()),
    };
    Ok((k.trim().to_string(), value))
}

/// Options of `strata tenant create`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  strata tenant create --set-default\n  strata tenant create -c checkpoint_distance=268435456"
)]
pub struct TenantCreateArgs {
    /// The tenant id (default: a new random one).
    #[arg(long)]
    tenant_id: Option<TenantId>,
    /// The id of its first timeline, the branch `main` (default: random).
    #[arg(long)]
    timeline_id: Option<TimelineId>,
    /// Make it the default tenant (the first tenant always becomes the default).
    #[arg(long)]
    set_default: bool,
    /// Tenant config overrides, `key=value` (values are TOML).
    #[arg(short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
}

/// `strata tenant create`.
pub async fn tenant_create(repo: &Repo, args: &TenantCreateArgs) -> anyhow::Result<()> {
    let mut branches = Branches::load(repo)?;
    let tenant = args.tenant_id.unwrap_or_else(TenantId::generate);
    let timeline = args.timeline_id.unwrap_or_else(TimelineId::generate);
    let mut config = serde_json::Map::new();
    for c in &args.config {
        let (k, v) = parse_setting(c)?;
        config.insert(k, v);
    }
    let ps_config = repo.pageserver(None)?;
    let ps = Api::pageserver(repo, ps_config)?;
    // With a storage controller, the tenant is placed first: the pageserver creates it in
    // generation 1 only if the controller says so.
    let controller = Api::storage_controller(repo)?;
    if let Some(sc) = &controller {
        // Attaching a tenant the controller knows would supersede its current attachment.
        if sc
            .get(&format!("/control/v1/tenant/{tenant}"))
            .await
            .is_ok()
        {
            bail!("tenant {tenant} already exists (the storage controller has placed it)");
        }
        sc.call(
            reqwest::Method::POST,
            "/control/v1/attach-hook",
            Some(json!({"tenant_id": tenant, "node_id": ps_config.id})),
        )
        .await
        .context("placing the tenant with the storage controller")?;
    }
    let created = ps
        .call(
            reqwest::Method::POST,
            "/v1/tenant",
            Some(json!({"tenant_id": tenant, "config": config})),
        )
        .await;
    if let Err(e) = created {
        if let Some(sc) = &controller {
            let _ = sc
                .call(
                    reqwest::Method::POST,
                    "/control/v1/attach-hook",
                    Some(json!({"tenant_id": tenant, "node_id": null})),
                )
                .await;
        }
        return Err(e);
    }
    let created = create_branch(
        repo,
        &ps,
        tenant,
        timeline,
        json!({"new_timeline_id": timeline, "pg_version": 15}),
    )
    .await;
    let lsn = match created {
        Ok(lsn) => lsn,
        Err(e) => {
            let _ = ps
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/tenant/{tenant}"),
                    None,
                )
                .await;
            return Err(e.context("tenant creation undone"));
        }
    };
    if args.set_default || branches.default_tenant.is_none() {
        branches.default_tenant = Some(tenant);
    }
    branches.record(repo, tenant, "main", timeline)?;
    println!("strata: tenant {tenant} created; branch main = timeline {timeline} at {lsn}");
    Ok(())
}

/// Creates the pageserver timeline (`body`), waits until Active, then the safekeeper
/// timelines at its start; undoes the pageserver timeline if a safekeeper fails. Returns
/// the start LSN.
async fn create_branch(
    repo: &Repo,
    ps: &Api,
    tenant: TenantId,
    timeline: TimelineId,
    body: Value,
) -> anyhow::Result<Lsn> {
    ps.call(
        reqwest::Method::POST,
        &format!("/v1/tenant/{tenant}/timeline"),
        Some(body),
    )
    .await?;
    let path = format!("/v1/tenant/{tenant}/timeline/{timeline}");
    let started = Instant::now();
    let info = loop {
        let info = ps.get(&path).await?;
        match info["state"].as_str() {
            Some("Active") => break info,
            Some("Broken") => bail!("timeline {timeline} is Broken: {}", info["broken_reason"]),
            _ if started.elapsed() > BOOTSTRAP_TIMEOUT => {
                bail!("timeline {timeline} not Active after {BOOTSTRAP_TIMEOUT:?}: {info}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let lsn: Lsn = info["last_record_lsn"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("timeline {timeline}: no last_record_lsn in {info}"))?;
    let mut done = Vec::new();
    for sk in &repo.config.safekeepers {
        let api = Api::safekeeper(repo, sk)?;
        let r = api
            .call(
                reqwest::Method::POST,
                "/v1/tenant/timeline",
                Some(json!({
                    "tenant_id": tenant,
                    "timeline_id": timeline,
                    "pg_version": PG_VERSION_NUM,
                    "start_lsn": lsn.to_string(),
                })),
            )
            .await;
        if let Err(e) = r {
            for d in &done {
                let _ = Api::call(
                    d,
                    reqwest::Method::DELETE,
                    &format!("/v1/tenant/{tenant}/timeline/{timeline}"),
                    None,
                )
                .await;
            }
            let _ = ps.call(reqwest::Method::DELETE, &path, None).await;
            return Err(e.context(format!(
                "timeline {timeline} not created (undone on the pageserver)"
            )));
        }
        done.push(api);
    }
    Ok(lsn)
}

/// Options of `strata timeline branch`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  strata timeline branch --branch-name dev\n  strata timeline branch --branch-name before-migration --ancestor-start-lsn 0/1A2B3C8"
)]
pub struct BranchArgs {
    /// The new branch's name.
    #[arg(long)]
    branch_name: String,
    /// The branch to branch from.
    #[arg(long, default_value = "main")]
    ancestor_branch_name: String,
    /// Where to branch (default: the ancestor's last record LSN).
    #[arg(long)]
    ancestor_start_lsn: Option<Lsn>,
    /// The tenant (default: the default tenant).
    #[arg(long)]
    tenant_id: Option<TenantId>,
    /// The new timeline's id (default: random).
    #[arg(long)]
    timeline_id: Option<TimelineId>,
}

/// `strata timeline branch`.
pub async fn branch(repo: &Repo, args: &BranchArgs) -> anyhow::Result<()> {
    let mut branches = Branches::load(repo)?;
    let tenant = branches.tenant(args.tenant_id)?;
    branches.check_new(tenant, &args.branch_name)?;
    let ancestor = branches.timeline(tenant, &args.ancestor_branch_name)?;
    let timeline = args.timeline_id.unwrap_or_else(TimelineId::generate);
    let mut body = json!({"new_timeline_id": timeline, "ancestor_timeline_id": ancestor});
    let ps = pageserver_api(repo)?;
    // Without an LSN, "the ancestor's last record" means everything committed on it: the
    // pageserver may not have ingested the last commits of a running endpoint yet, so branch
    // at the safekeepers' commit LSN (once the pageserver has it), not at whatever it has.
    let start_lsn = match args.ancestor_start_lsn {
        Some(at) => Some(at),
        None => committed_lsn(repo, tenant, ancestor).await,
    };
    if let Some(lsn) = start_lsn {
        body["ancestor_start_lsn"] = json!(lsn.to_string());
    }
    if let Some(at) = start_lsn {
        // An LSN just read from a compute (or committed on the safekeepers) may not be
        // ingested yet: wait for it.
        ps.wait_lsn(tenant, ancestor, at, "60s")
            .await
            .with_context(|| {
                format!(
                    "waiting for branch {} to reach {at}",
                    args.ancestor_branch_name
                )
            })?;
    }
    let lsn = create_branch(repo, &ps, tenant, timeline, body).await?;
    branches.record(repo, tenant, &args.branch_name, timeline)?;
    println!(
        "strata: branch {} = timeline {timeline}, from {} at {lsn}",
        args.branch_name, args.ancestor_branch_name
    );
    Ok(())
}

/// The highest commit LSN the safekeepers report for a timeline (every one of them is
/// quorum-committed); `None` when none answers or none has WAL for it.
async fn committed_lsn(repo: &Repo, tenant: TenantId, timeline: TimelineId) -> Option<Lsn> {
    let mut best: Option<Lsn> = None;
    for sk in &repo.config.safekeepers {
        let Ok(api) = Api::safekeeper(repo, sk) else {
            continue;
        };
        let Ok(status) = api
            .get(&format!("/v1/tenant/{tenant}/timeline/{timeline}"))
            .await
        else {
            continue;
        };
        let commit = status["commit_lsn"]
            .as_str()
            .and_then(|s| s.parse::<Lsn>().ok());
        if let Some(lsn) = commit.filter(|l| l.is_valid()) {
            best = Some(best.map_or(lsn, |b| b.max(lsn)));
        }
    }
    best
}

/// Options of `strata timeline create`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  strata timeline create --branch-name scratch")]
pub struct CreateRootArgs {
    /// The new branch's name.
    #[arg(long)]
    branch_name: String,
    /// The tenant (default: the default tenant).
    #[arg(long)]
    tenant_id: Option<TenantId>,
    /// The new timeline's id (default: random).
    #[arg(long)]
    timeline_id: Option<TimelineId>,
}

/// `strata timeline create`: a second root in the tenant, bootstrapped by initdb like
/// `main` (an empty cluster that shares nothing with the tenant's other branches).
pub async fn create_root(repo: &Repo, args: &CreateRootArgs) -> anyhow::Result<()> {
    let mut branches = Branches::load(repo)?;
    let tenant = branches.tenant(args.tenant_id)?;
    branches.check_new(tenant, &args.branch_name)?;
    let timeline = args.timeline_id.unwrap_or_else(TimelineId::generate);
    let ps = pageserver_api(repo)?;
    let body = json!({"new_timeline_id": timeline, "pg_version": 15});
    let lsn = create_branch(repo, &ps, tenant, timeline, body).await?;
    branches.record(repo, tenant, &args.branch_name, timeline)?;
    println!(
        "strata: branch {} = timeline {timeline}, a new root (initdb) at {lsn}",
        args.branch_name
    );
    Ok(())
}

/// Options naming a tenant.
#[derive(clap::Args, Debug)]
pub struct TenantArg {
    /// The tenant (default: the default tenant).
    #[arg(long)]
    pub tenant_id: Option<TenantId>,
}

/// `strata tenant list`.
pub async fn tenant_list(repo: &Repo) -> anyhow::Result<()> {
    let branches = Branches::load(repo)?;
    let list = pageserver_api(repo)?.get("/v1/tenant").await?;
    for t in list.as_array().into_iter().flatten() {
        let id = t["id"].as_str().unwrap_or("?");
        let default = branches.default_tenant.map(|d| d.to_string()).as_deref() == Some(id);
        println!(
            "{id}  {}  {} timeline(s){}",
            t["state"].as_str().unwrap_or("?"),
            t["timelines"],
            if default { "  (default)" } else { "" }
        );
    }
    Ok(())
}

/// `strata tenant config`.
pub async fn tenant_config(repo: &Repo, args: &TenantArg) -> anyhow::Result<()> {
    let tenant = Branches::load(repo)?.tenant(args.tenant_id)?;
    let c = pageserver_api(repo)?
        .get(&format!("/v1/tenant/{tenant}/config"))
        .await?;
    println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
    Ok(())
}

/// `strata timeline list`: the branches as a tree, with their LSNs.
pub async fn timeline_list(repo: &Repo, args: &TenantArg) -> anyhow::Result<()> {
    let branches = Branches::load(repo)?;
    let tenant = branches.tenant(args.tenant_id)?;
    let list = pageserver_api(repo)?
        .get(&format!("/v1/tenant/{tenant}/timeline"))
        .await?;
    let names: BTreeMap<String, String> = branches
        .tenants
        .get(&tenant)
        .map(|b| b.iter().map(|(n, t)| (t.to_string(), n.clone())).collect())
        .unwrap_or_default();
    let mut children: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for t in list.as_array().into_iter().flatten() {
        let parent = t["ancestor_timeline_id"].as_str().unwrap_or("").to_string();
        children.entry(parent).or_default().push(t);
    }
    for v in children.values_mut() {
        v.sort_by_key(|t| t["ancestor_lsn"].as_str().unwrap_or("").to_string());
    }
    fn draw(
        parent: &str,
        depth: usize,
        children: &BTreeMap<String, Vec<&Value>>,
        names: &BTreeMap<String, String>,
    ) {
        for t in children.get(parent).into_iter().flatten() {
            let id = t["timeline_id"].as_str().unwrap_or("?");
            let name = names.get(id).map(String::as_str).unwrap_or("(unnamed)");
            let from = match t["ancestor_lsn"].as_str() {
                Some(l) => format!(" from {l}"),
                None => String::new(),
            };
            println!(
                "{}{name} [{id}]{from}, last record {}",
                if depth == 0 {
                    String::new()
                } else {
                    format!("{}┗━ ", "   ".repeat(depth - 1))
                },
                t["last_record_lsn"].as_str().unwrap_or("?")
            );
            draw(id, depth + 1, children, names);
        }
    }
    draw("", 0, &children, &names);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_toml_values() {
        assert_eq!(parse_setting("a=3").unwrap(), ("a".into(), json!(3)));
        assert_eq!(
            parse_setting("a=\"10m\"").unwrap(),
            ("a".into(), json!("10m"))
        );
        assert_eq!(parse_setting("a=10m").unwrap(), ("a".into(), json!("10m")));
        assert!(parse_setting("novalue").is_err());
    }

    #[test]
    fn unknown_branches_name_the_known_ones() {
        let mut b = Branches::default();
        let t = TenantId::generate();
        b.tenants
            .entry(t)
            .or_default()
            .insert("main".into(), TimelineId::generate());
        let e = b.timeline(t, "dev").unwrap_err().to_string();
        assert!(e.contains("main") && e.contains("dev"), "{e}");
        assert!(Branches::default().tenant(None).is_err());
    }
}
