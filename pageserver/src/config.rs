//! `pageserver.toml`, `identity.toml` and tenant configuration (`docs/pageserver.md`).
//!
//! Unknown keys and wrong types are errors that name the key and the file: a typo in a
//! config must never be silently ignored. A tenant's overrides live in
//! `tenants/<t>/config.toml` (written crash-safely) on top of `[tenant_config]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utils::NodeId;

/// The configuration file's name in the workdir.
pub const CONFIG_FILE: &str = "pageserver.toml";
/// The node identity file's name in the workdir.
pub const IDENTITY_FILE: &str = "identity.toml";

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse or names an unknown key or a wrong type.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: one_line(&e, text),
    })
}

/// A toml error as one line: the key it is about (from the error's position: the line's
/// key under the last `[table]` header) and the parser's message.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().replace('\n', " ").trim().to_string();
    let Some(span) = e.span() else {
        return msg;
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return msg;
    };
    let table = before[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && l.ends_with(']')).then(|| l.trim_matches(['[', ']']).to_string())
    });
    let key = key.trim();
    match table {
        Some(t) => format!("key `{t}.{key}`: {msg}"),
        None => format!("key `{key}`: {msg}"),
    }
}

/// Per-tenant settings (defaults in `[tenant_config]`, overrides per tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Freeze the open layer when it holds this many bytes of WAL.
    #[schema(minimum = 1)]
    pub checkpoint_distance: u64,
    /// Freeze the open layer when it is this old.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "10m")]
    pub checkpoint_timeout: Duration,
    /// History kept below the last record for GC (a later issue uses it).
    pub gc_horizon: u64,
    /// Point-in-time-recovery window (a later issue uses it).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "7d")]
    pub pitr_interval: Duration,
    /// How often GC runs (a later issue).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "1h")]
    pub gc_period: Duration,
    /// How often compaction runs (a later issue).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "20s")]
    pub compaction_period: Duration,
    /// L0 layers that trigger compaction (a later issue).
    pub compaction_threshold: u32,
    /// Target size of compacted layers (a later issue).
    pub compaction_target_size: u64,
    /// Deltas above an image that trigger a new image layer (a later issue).
    pub image_creation_threshold: u32,
    /// Switch safekeepers when the current one sends nothing for this long.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "10s")]
    pub walreceiver_connect_timeout: Duration,
    /// Switch safekeepers when another is ahead by more than this many bytes.
    pub max_lsn_wal_lag: u64,
    /// Safekeepers (libpq `host:port`) to stream from when no broker is configured.
    pub safekeepers: Vec<String>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            checkpoint_distance: 256 * 1024 * 1024,
            checkpoint_timeout: Duration::from_secs(600),
            gc_horizon: 64 * 1024 * 1024,
            pitr_interval: Duration::from_secs(7 * 24 * 3600),
            gc_period: Duration::from_secs(3600),
            compaction_period: Duration::from_secs(20),
            compaction_threshold: 10,
            compaction_target_size: 128 * 1024 * 1024,
            image_creation_threshold: 3,
            walreceiver_connect_timeout: Duration::from_secs(10),
            max_lsn_wal_lag: 1024 * 1024 * 1024,
            safekeepers: Vec::new(),
        }
    }
}

impl TenantConfig {
    /// Checks values the types allow but the engine does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.checkpoint_distance == 0 {
            return Err("checkpoint_distance must be positive".into());
        }
        if self.checkpoint_timeout.is_zero() {
            return Err("checkpoint_timeout must be positive".into());
        }
        Ok(())
    }

    /// Parses a tenant's `config.toml`.
    pub fn load(path: &Path) -> Result<TenantConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let c: TenantConfig = parse_toml(path, &text)?;
        c.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(c)
    }

    /// The TOML form.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Parses a duration of the API's form `^[0-9]{1,9}(ms|s|m|h|d)$` (`250ms`, `10s`, `5m`, `2h`,
/// `7d`): one number, one unit, so the schema's pattern and the handler agree.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 9 {
        return Err(format!("{text:?}: at most 9 digits"));
    }
    let (n, unit) = text.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (ms, s, m, h, d)"))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?}: too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(format!(
            "{text:?}: expected a number and a unit (ms, s, m, h, d)"
        )),
    }
}

/// The shortest [`parse_duration`] form of `d` (whole milliseconds).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s > 0 && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// A tenant's own settings: every key of [`TenantConfig`], each optional (absent or null:
/// the `[tenant_config]` default applies). What `POST /v1/tenant` and
/// `PUT /v1/tenant/{id}/config` take, and what `config.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfigOverrides {
    /// See [`TenantConfig::checkpoint_distance`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub checkpoint_distance: Option<u64>,
    /// See [`TenantConfig::checkpoint_timeout`] (positive). The pattern spells out "1 to 9
    /// digits, not all zero" without a lookahead, which not every schema tool supports.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[schema(value_type = Option<String>, pattern = "^(?:[1-9][0-9]{0,8}|0[1-9][0-9]{0,7}|0{2}[1-9][0-9]{0,6}|0{3}[1-9][0-9]{0,5}|0{4}[1-9][0-9]{0,4}|0{5}[1-9][0-9]{0,3}|0{6}[1-9][0-9]{0,2}|0{7}[1-9][0-9]?|0{8}[1-9])(ms|s|m|h|d)$")]
    pub checkpoint_timeout: Option<Duration>,
    /// See [`TenantConfig::gc_horizon`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub gc_horizon: Option<u64>,
    /// See [`TenantConfig::pitr_interval`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,9}(ms|s|m|h|d)$")]
    pub pitr_interval: Option<Duration>,
    /// See [`TenantConfig::gc_period`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,9}(ms|s|m|h|d)$")]
    pub gc_period: Option<Duration>,
    /// See [`TenantConfig::compaction_period`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,9}(ms|s|m|h|d)$")]
    pub compaction_period: Option<Duration>,
    /// See [`TenantConfig::compaction_threshold`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub compaction_threshold: Option<u32>,
    /// See [`TenantConfig::compaction_target_size`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub compaction_target_size: Option<u64>,
    /// See [`TenantConfig::image_creation_threshold`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub image_creation_threshold: Option<u32>,
    /// See [`TenantConfig::walreceiver_connect_timeout`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,9}(ms|s|m|h|d)$")]
    pub walreceiver_connect_timeout: Option<Duration>,
    /// See [`TenantConfig::max_lsn_wal_lag`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_int"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub max_lsn_wal_lag: Option<u64>,
    /// See [`TenantConfig::safekeepers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safekeepers: Option<Vec<String>>,
}

/// An optional integer that also accepts a JSON number with a zero fraction (`5.0`), as
/// JSON Schema's `integer` does.
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    let Some(n) = Option::<Num>::deserialize(d)? else {
        return Ok(None);
    };
    let v = match n {
        Num::Int(v) => v,
        Num::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => {
            f as u64
        }
        Num::Float(f) => {
            return Err(serde::de::Error::custom(format!(
                "{f} is not a non-negative integer"
            )));
        }
    };
    T::try_from(v)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
}

/// `Option<Duration>` in the [`parse_duration`] form.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl TenantConfigOverrides {
    /// The overrides applied to `defaults`. Integers must fit the schema's signed types
    /// (`i64`, `i32`), so the document and the handler agree on what is valid.
    pub fn apply(&self, defaults: &TenantConfig) -> Result<TenantConfig, String> {
        for (key, v) in [
            ("checkpoint_distance", self.checkpoint_distance),
            ("gc_horizon", self.gc_horizon),
            ("compaction_target_size", self.compaction_target_size),
            ("max_lsn_wal_lag", self.max_lsn_wal_lag),
        ] {
            if v.is_some_and(|v| v > i64::MAX as u64) {
                return Err(format!("{key}: {} is too large", v.unwrap_or(0)));
            }
        }
        for (key, v) in [
            ("compaction_threshold", self.compaction_threshold),
            ("image_creation_threshold", self.image_creation_threshold),
        ] {
            if v.is_some_and(|v| v > i32::MAX as u32) {
                return Err(format!("{key}: {} is too large", v.unwrap_or(0)));
            }
        }
        let mut c = defaults.clone();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        set!(
            checkpoint_distance,
            checkpoint_timeout,
            gc_horizon,
            pitr_interval,
            gc_period,
            compaction_period,
            compaction_threshold,
            compaction_target_size,
            image_creation_threshold,
            walreceiver_connect_timeout,
            max_lsn_wal_lag,
            safekeepers
        );
        c.validate()?;
        Ok(c)
    }

    /// Reads a tenant's `config.toml`.
    pub fn load(path: &Path) -> Result<TenantConfigOverrides, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse_toml(path, &text)
    }

    /// The `config.toml` form.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// `[disk_usage_based_eviction]` in `pageserver.toml`: when the workdir's file system is
/// fuller than `max_usage_pct`, or has less than `min_avail_bytes` free, uploaded layers
/// are evicted, least recently read first, until it is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsageEvictionConfig {
    /// Usage (percent of the file system) above which layers are evicted.
    pub max_usage_pct: u64,
    /// Free bytes below which layers are evicted.
    #[serde(default)]
    pub min_avail_bytes: u64,
    /// How often usage is checked.
    #[serde(with = "humantime_serde", default = "default_eviction_period")]
    pub period: Duration,
}

fn default_eviction_period() -> Duration {
    Duration::from_secs(10)
}

/// `pageserver.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageserverConfig {
    /// libpq page service.
    pub listen_pg_addr: String,
    /// HTTP management API.
    pub listen_http_addr: String,
    /// NATS broker (`nats://host:port`); without it, tenants' static `safekeepers` are used.
    pub broker_endpoint: Option<String>,
    /// PostgreSQL 15's installation (`bin/initdb`, `bin/postgres`).
    pub pg_distrib_dir: PathBuf,
    /// The unprivileged user that runs initdb and redo when the pageserver is root.
    pub pg_user: String,
    /// The superuser `initdb` creates in a bootstrapped cluster.
    pub superuser: String,
    /// Ed25519 public key(s) for JWTs on the HTTP API; without it, no HTTP auth.
    pub http_auth_public_key_path: Option<PathBuf>,
    /// Ed25519 public key(s) for JWTs on the page service; without it, no libpq auth.
    pub pg_auth_public_key_path: Option<PathBuf>,
    /// A file holding the JWT sent to safekeepers.
    pub safekeeper_auth_token_path: Option<PathBuf>,
    /// Entries (8 KiB each) in the page cache.
    pub page_cache_size: usize,
    /// How long a read above the last ingested LSN waits.
    #[serde(with = "humantime_serde")]
    pub wait_lsn_timeout: Duration,
    /// The longest `timeout` a `GET …/wait_lsn` may ask for (longer ones are cut to this):
    /// a long poll must not hold a connection for as long as any client likes.
    #[serde(with = "humantime_serde")]
    pub wait_lsn_max_timeout: Duration,
    /// How often every tenant's synthetic size is recalculated for
    /// `pageserver_tenant_synthetic_size_bytes` (`0s`: never).
    #[serde(with = "humantime_serde")]
    pub synthetic_size_calculation_interval: Duration,
    /// Redo processes in the pool.
    pub walredo_processes: usize,
    /// Skip fsyncs (tests only: survives kill -9, not power loss).
    pub no_sync: bool,
    /// Object storage, the source of truth for layers and indexes; without it the local
    /// disk is all there is (and `remote_consistent_lsn` is `disk_consistent_lsn`).
    pub remote_storage: Option<remote_storage::RemoteStorageConfig>,
    /// The control plane's generations API (for example
    /// `http://127.0.0.1:1234/upcall/v1/`): re-attach at start-up, validation before
    /// deletions. Without it the generations `location_config` gives are trusted as they
    /// are (one pageserver per tenant). Needs `remote_storage`.
    pub control_plane_api: Option<String>,
    /// A file holding the JWT (scope `generations_api`) sent to the control plane.
    pub control_plane_api_token_path: Option<PathBuf>,
    /// Evict layers (least recently read first) when the workdir's file system fills up;
    /// none: never. Needs `remote_storage`.
    pub disk_usage_based_eviction: Option<DiskUsageEvictionConfig>,
    /// Tests: fail the first N attempts of each distinct remote operation.
    pub test_remote_failures: u64,
    /// Tests: also fail each remote attempt with this probability (0.0–1.0).
    pub test_remote_failures_probability: Option<f64>,
    /// Defaults for every tenant.
    pub tenant_config: TenantConfig,
}

impl Default for PageserverConfig {
    fn default() -> Self {
        PageserverConfig {
            listen_pg_addr: "127.0.0.1:64000".into(),
            listen_http_addr: "127.0.0.1:9898".into(),
            broker_endpoint: None,
            pg_distrib_dir: PathBuf::from("/usr/lib/postgresql/15"),
            pg_user: "strata".into(),
            superuser: "postgres".into(),
            http_auth_public_key_path: None,
            pg_auth_public_key_path: None,
            safekeeper_auth_token_path: None,
            page_cache_size: 8192,
            wait_lsn_timeout: Duration::from_secs(300),
            wait_lsn_max_timeout: Duration::from_secs(600),
            synthetic_size_calculation_interval: Duration::from_secs(600),
            walredo_processes: 2,
            no_sync: false,
            remote_storage: None,
            control_plane_api: None,
            control_plane_api_token_path: None,
            disk_usage_based_eviction: None,
            test_remote_failures: 0,
            test_remote_failures_probability: None,
            tenant_config: TenantConfig::default(),
        }
    }
}

/// `identity.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// This pageserver's node id.
    pub id: NodeId,
}

impl PageserverConfig {
    /// Reads and checks `workdir/pageserver.toml`.
    pub fn load(workdir: &Path) -> Result<PageserverConfig, ConfigError> {
        let path = workdir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let c: PageserverConfig = parse_toml(&path, &text)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        for (key, addr) in [
            ("listen_pg_addr", &c.listen_pg_addr),
            ("listen_http_addr", &c.listen_http_addr),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(format!("{key}: {addr:?}: {e}")))?;
        }
        if c.page_cache_size == 0 {
            return Err(invalid("page_cache_size must be positive".into()));
        }
        if c.walredo_processes == 0 {
            return Err(invalid("walredo_processes must be positive".into()));
        }
        if let Some(p) = c.test_remote_failures_probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err(invalid(format!(
                "test_remote_failures_probability {p} is not between 0 and 1"
            )));
        }
        if let Some(api) = &c.control_plane_api {
            if !(api.starts_with("http://") || api.starts_with("https://")) {
                return Err(invalid(format!(
                    "control_plane_api: {api:?} is not an http:// or https:// URL"
                )));
            }
            if c.remote_storage.is_none() {
                return Err(invalid(
                    "control_plane_api needs remote_storage: generations guard objects in a bucket"
                        .into(),
                ));
            }
        }
        if let Some(e) = &c.disk_usage_based_eviction {
            if c.remote_storage.is_none() {
                return Err(invalid(
                    "disk_usage_based_eviction needs remote_storage: only uploaded layers can be evicted"
                        .into(),
                ));
            }
            if !(1..=100).contains(&e.max_usage_pct) {
                return Err(invalid(format!(
                    "disk_usage_based_eviction.max_usage_pct {} is not between 1 and 100",
                    e.max_usage_pct
                )));
            }
            if e.period.is_zero() {
                return Err(invalid(
                    "disk_usage_based_eviction.period must be positive".into(),
                ));
            }
        }
        c.tenant_config
            .validate()
            .map_err(|m| invalid(format!("tenant_config: {m}")))?;
        Ok(c)
    }

    /// Applies `key=value` overrides (TOML values; a bare word is taken as a string).
    pub fn with_overrides(overrides: &[String]) -> Result<String, String> {
        let mut table = toml::Table::new();
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| format!("-c {o:?}: expected key=value"))?;
            let doc = format!("{} = {}", k.trim(), v.trim());
            let parsed: toml::Table = toml::from_str(&doc)
                .or_else(|_| toml::from_str(&format!("{} = {:?}", k.trim(), v.trim())))
                .map_err(|e| format!("-c {o:?}: {}", e.message()))?;
            merge(&mut table, parsed);
        }
        Ok(toml::to_string(&table).unwrap_or_default())
    }

    /// The directory of PostgreSQL's binaries.
    pub fn pg_bin_dir(&self) -> PathBuf {
        self.pg_distrib_dir.join("bin")
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Identity {
    /// Reads `workdir/identity.toml`.
    pub fn load(workdir: &Path) -> Result<Identity, ConfigError> {
        let path = workdir.join(IDENTITY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        parse_toml(&path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CONFIG_FILE);
        std::fs::write(&p, "bogus_key = 1\n").unwrap();
        let e = PageserverConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bogus_key") && e.contains(CONFIG_FILE), "{e}");
        assert!(!e.contains('\n'));
        std::fs::write(&p, "page_cache_size = \"many\"\n").unwrap();
        let e = PageserverConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("page_cache_size"), "{e}");
        std::fs::write(&p, "[tenant_config]\ncheckpoint_distanse = 5\n").unwrap();
        let e = PageserverConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("checkpoint_distanse"), "{e}");
        std::fs::write(&p, "listen_http_addr = \"nowhere\"\n").unwrap();
        let e = PageserverConfig::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("listen_http_addr"), "{e}");
    }

    #[test]
    fn durations_in_the_api_form() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("7d", Duration::from_secs(7 * 86400)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d);
            assert_eq!(format_duration(d), text);
        }
        for bad in [
            "",
            "10",
            "s",
            "1h 30m",
            "-1s",
            "10x",
            "99999999999999999999d",
            "1000000000s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        let o: TenantConfigOverrides =
            serde_json::from_str(r#"{"checkpoint_timeout": "5m", "gc_horizon": null}"#).unwrap();
        assert_eq!(o.checkpoint_timeout, Some(Duration::from_secs(300)));
        assert!(serde_json::from_str::<TenantConfigOverrides>(r#"{"bogus": 1}"#).is_err());
        let applied = o.apply(&TenantConfig::default()).unwrap();
        assert_eq!(applied.checkpoint_timeout, Duration::from_secs(300));
        let zero = TenantConfigOverrides {
            checkpoint_distance: Some(0),
            ..Default::default()
        };
        assert!(zero.apply(&TenantConfig::default()).is_err());
    }

    #[test]
    fn defaults_overrides_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let text = PageserverConfig::with_overrides(&[
            "listen_http_addr=127.0.0.1:1234".into(),
            "no_sync=true".into(),
            "tenant_config.checkpoint_distance=1000".into(),
        ])
        .unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        let c = PageserverConfig::load(dir.path()).unwrap();
        assert_eq!(c.listen_http_addr, "127.0.0.1:1234");
        assert!(c.no_sync);
        assert_eq!(c.tenant_config.checkpoint_distance, 1000);
        assert_eq!(c.listen_pg_addr, "127.0.0.1:64000");
        let t = TenantConfig {
            safekeepers: vec!["127.0.0.1:5454".into()],
            ..Default::default()
        };
        let p = dir.path().join("tenant.toml");
        std::fs::write(&p, t.to_toml()).unwrap();
        assert_eq!(TenantConfig::load(&p).unwrap(), t);
    }
}
