//! The remote storage section of a service config (TOML), and its validation.
//!
//! One table selects the backend by which fields it has:
//!
//! ```toml
//! remote_storage = { local_path = "/data/remote" }
//! remote_storage = { bucket_name = "b", bucket_region = "us-east-1", prefix_in_bucket = "ps" }
//! remote_storage = { container_name = "c", storage_account = "acct", prefix_in_container = "ps" }
//! ```
//!
//! Invariant: a [`RemoteStorageConfig`] that exists has passed validation. Deserialization
//! goes through a flat raw struct that knows every field, so a typo is an error naming the
//! unknown field, and a mix of two backends' fields or a missing required field is an error
//! naming the field, rather than serde's untagged "did not match any variant".

use std::num::NonZeroUsize;
use std::time::Duration;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

/// Deadline for requests that move data (upload, download, copy).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for small requests (head, delete, one page of a listing).
pub const DEFAULT_SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of requests in flight per S3 or Azure client.
pub const DEFAULT_CONCURRENCY_LIMIT: usize = 100;

/// A validated remote storage configuration: which backend, and the deadlines for its calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig", into = "RawConfig")]
pub struct RemoteStorageConfig {
    /// The backend and its settings.
    pub storage: RemoteStorageKind,
    /// Progress timeout for data transfers: the longest one request of an upload, download
    /// or copy (a whole small object, one part of a multipart upload) may take, and the
    /// longest a download's body or an upload's source may go without delivering a chunk.
    /// Not a bound on the whole transfer, so objects of any size pass a slow but live link.
    pub timeout: Duration,
    /// Deadline for small requests (head, delete, each listing page).
    pub small_timeout: Duration,
}

/// Which backend, with its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStorageKind {
    /// A directory on local disk: the embedded default, and the test double of object storage.
    LocalFs {
        /// Root directory; objects are files under it named by their key.
        local_path: Utf8PathBuf,
    },
    /// Amazon S3 or an S3-compatible server.
    AwsS3(S3Config),
    /// Azure Blob Storage or Azurite.
    AzureContainer(AzureConfig),
}

/// Settings of the S3 backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket; it must exist (a missing bucket is a permanent error naming it).
    pub bucket_name: String,
    /// The bucket's region; requests are signed for it.
    pub bucket_region: String,
    /// Keys are stored under `<prefix_in_bucket>/`, so services can share a bucket.
    pub prefix_in_bucket: Option<String>,
    /// An S3-compatible endpoint (moto, MinIO); path-style addressing is used with it.
    pub endpoint: Option<String>,
    /// Requests in flight at most.
    pub concurrency_limit: NonZeroUsize,
    /// Static credentials; when absent the standard AWS chain (env, profile, web identity,
    /// IMDS) is used. Both or neither.
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    pub secret_access_key: Option<String>,
}

/// Settings of the Azure Blob backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The container; it must exist (a missing container is a permanent error naming it).
    pub container_name: String,
    /// The storage account.
    pub storage_account: String,
    /// Informational (Azure endpoints are per account, not per region).
    pub container_region: Option<String>,
    /// Blobs are stored under `<prefix_in_container>/`.
    pub prefix_in_container: Option<String>,
    /// The blob service base URL, replacing `https://<account>.blob.core.windows.net`. For
    /// Azurite it includes the account: `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// Requests in flight at most (also bounds the concurrent single deletes of a batch).
    pub concurrency_limit: NonZeroUsize,
    /// The account key; when absent, `AZURE_STORAGE_ACCESS_KEY` or `AZURE_STORAGE_SAS_TOKEN`
    /// from the environment.
    pub storage_account_key: Option<String>,
}

impl RemoteStorageConfig {
    /// A LocalFs config with default timeouts (tests, the embedded default).
    pub fn local_fs(path: impl Into<Utf8PathBuf>) -> RemoteStorageConfig {
        RemoteStorageConfig {
            storage: RemoteStorageKind::LocalFs {
                local_path: path.into(),
            },
            timeout: DEFAULT_TIMEOUT,
            small_timeout: DEFAULT_SMALL_TIMEOUT,
        }
    }

    /// Parses a TOML table (the value of a service's `remote_storage` key).
    pub fn from_toml(text: &str) -> Result<RemoteStorageConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.message().to_owned()))
    }
}

/// Why a remote storage config is invalid. The message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid remote_storage config: {0}")]
pub struct ConfigError(pub String);

/// Every field of every backend, flat; see the module docs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_path: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bucket_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_in_bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_in_container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage_account_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrency_limit: Option<usize>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    timeout: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    small_timeout: Option<Duration>,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn required(value: Option<String>, field: &str, backend: &str) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(err(format!("`{field}` must not be empty"))),
        None => Err(err(format!("`{field}` is required for {backend} storage"))),
    }
}

/// A prefix inside a bucket or container: no leading `/`, no `..`, trailing `/` dropped.
fn prefix(value: Option<String>, field: &str) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let trimmed = v.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    crate::RemotePath::new(trimmed).map_err(|e| err(format!("`{field}`: {e}")))?;
    Ok(Some(trimmed.to_owned()))
}

fn endpoint(value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let url = url::Url::parse(&v).map_err(|e| err(format!("`endpoint` {v:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(format!(
            "`endpoint` {v:?}: scheme must be http or https"
        )));
    }
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

fn concurrency(value: Option<usize>) -> Result<NonZeroUsize, ConfigError> {
    match value {
        None => Ok(NonZeroUsize::new(DEFAULT_CONCURRENCY_LIMIT).unwrap_or(NonZeroUsize::MIN)),
        Some(n) => {
            NonZeroUsize::new(n).ok_or_else(|| err("`concurrency_limit` must be at least 1"))
        }
    }
}

fn reject(fields: &[(&str, bool)], backend: &str) -> Result<(), ConfigError> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => Err(err(format!(
            "`{field}` does not apply to {backend} storage"
        ))),
        None => Ok(()),
    }
}

impl TryFrom<RawConfig> for RemoteStorageConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let small_timeout = raw.small_timeout.unwrap_or(DEFAULT_SMALL_TIMEOUT);
        if timeout.is_zero() {
            return Err(err("`timeout` must be positive"));
        }
        if small_timeout.is_zero() {
            return Err(err("`small_timeout` must be positive"));
        }
        let s3_fields = [
            ("bucket_name", raw.bucket_name.is_some()),
            ("bucket_region", raw.bucket_region.is_some()),
            ("prefix_in_bucket", raw.prefix_in_bucket.is_some()),
            ("access_key_id", raw.access_key_id.is_some()),
            ("secret_access_key", raw.secret_access_key.is_some()),
        ];
        let azure_fields = [
            ("container_name", raw.container_name.is_some()),
            ("storage_account", raw.storage_account.is_some()),
            ("container_region", raw.container_region.is_some()),
            ("prefix_in_container", raw.prefix_in_container.is_some()),
            ("storage_account_key", raw.storage_account_key.is_some()),
        ];
        let storage = if let Some(local_path) = raw.local_path {
            reject(&s3_fields, "local_path")?;
            reject(&azure_fields, "local_path")?;
            reject(
                &[
                    ("endpoint", raw.endpoint.is_some()),
                    ("concurrency_limit", raw.concurrency_limit.is_some()),
                ],
                "local_path",
            )?;
            if local_path.as_str().is_empty() {
                return Err(err("`local_path` must not be empty"));
            }
            RemoteStorageKind::LocalFs { local_path }
        } else if raw.bucket_name.is_some() || raw.bucket_region.is_some() {
            reject(&azure_fields, "S3 (bucket_name)")?;
            let bucket_name = required(raw.bucket_name, "bucket_name", "S3")?;
            if bucket_name.contains('/') || bucket_name.chars().any(char::is_whitespace) {
                return Err(err(format!(
                    "`bucket_name` {bucket_name:?} is not a valid bucket name"
                )));
            }
            if raw.access_key_id.is_some() != raw.secret_access_key.is_some() {
                return Err(err(
                    "`access_key_id` and `secret_access_key` must be given together",
                ));
            }
            RemoteStorageKind::AwsS3(S3Config {
                bucket_name,
                bucket_region: required(raw.bucket_region, "bucket_region", "S3")?,
                prefix_in_bucket: prefix(raw.prefix_in_bucket, "prefix_in_bucket")?,
                endpoint: endpoint(raw.endpoint)?,
                concurrency_limit: concurrency(raw.concurrency_limit)?,
                access_key_id: raw.access_key_id,
                secret_access_key: raw.secret_access_key,
            })
        } else if raw.container_name.is_some() || raw.storage_account.is_some() {
            reject(&s3_fields, "Azure (container_name)")?;
            let container_name = required(raw.container_name, "container_name", "Azure")?;
            if container_name.contains('/') {
                return Err(err(format!(
                    "`container_name` {container_name:?} is not a valid container name"
                )));
            }
            RemoteStorageKind::AzureContainer(AzureConfig {
                container_name,
                storage_account: required(raw.storage_account, "storage_account", "Azure")?,
                container_region: raw.container_region,
                prefix_in_container: prefix(raw.prefix_in_container, "prefix_in_container")?,
                endpoint: endpoint(raw.endpoint)?,
                concurrency_limit: concurrency(raw.concurrency_limit)?,
                storage_account_key: raw.storage_account_key,
            })
        } else {
            return Err(err(
                "no backend selected: give `local_path`, or `bucket_name` and `bucket_region`, \
                 or `container_name` and `storage_account`",
            ));
        };
        Ok(RemoteStorageConfig {
            storage,
            timeout,
            small_timeout,
        })
    }
}

impl From<RemoteStorageConfig> for RawConfig {
    fn from(c: RemoteStorageConfig) -> RawConfig {
        let mut raw = RawConfig {
            timeout: Some(c.timeout),
            small_timeout: Some(c.small_timeout),
            ..RawConfig::default()
        };
        match c.storage {
            RemoteStorageKind::LocalFs { local_path } => raw.local_path = Some(local_path),
            RemoteStorageKind::AwsS3(s3) => {
                raw.bucket_name = Some(s3.bucket_name);
                raw.bucket_region = Some(s3.bucket_region);
                raw.prefix_in_bucket = s3.prefix_in_bucket;
                raw.endpoint = s3.endpoint;
                raw.concurrency_limit = Some(s3.concurrency_limit.get());
                raw.access_key_id = s3.access_key_id;
                raw.secret_access_key = s3.secret_access_key;
            }
            RemoteStorageKind::AzureContainer(az) => {
                raw.container_name = Some(az.container_name);
                raw.storage_account = Some(az.storage_account);
                raw.container_region = az.container_region;
                raw.prefix_in_container = az.prefix_in_container;
                raw.endpoint = az.endpoint;
                raw.concurrency_limit = Some(az.concurrency_limit.get());
                raw.storage_account_key = az.storage_account_key;
            }
        }
        raw
    }
}

/// The failure-injection knobs a service config carries next to `remote_storage`
/// (`#[serde(flatten)]` it into the service config). Non-zero wraps the storage in
/// [`crate::UnreliableWrapper`]; tests only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SimulatedFailures {
    /// Fail the first N attempts of each distinct operation.
    #[serde(default)]
    pub test_remote_failures: u64,
    /// Additionally fail each attempt with this probability (0.0–1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_remote_failures_probability: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RemoteStorageConfig, ConfigError> {
        RemoteStorageConfig::from_toml(s)
    }

    #[test]
    fn parses_each_backend() {
        let c = parse(r#"local_path = "/tmp/x""#).unwrap();
        assert_eq!(c, RemoteStorageConfig::local_fs("/tmp/x"));

        let c = parse(
            r#"
            bucket_name = "b"
            bucket_region = "us-east-1"
            prefix_in_bucket = "/ps/"
            endpoint = "http://127.0.0.1:5000"
            concurrency_limit = 7
            timeout = "5s"
            small_timeout = "500ms"
            "#,
        );
        let c = match c {
            Err(e) => {
                // A leading slash in the prefix is refused, naming the field.
                assert!(e.to_string().contains("prefix_in_bucket"), "{e}");
                parse(
                    r#"
                    bucket_name = "b"
                    bucket_region = "us-east-1"
                    prefix_in_bucket = "ps/"
                    endpoint = "http://127.0.0.1:5000"
                    concurrency_limit = 7
                    timeout = "5s"
                    small_timeout = "500ms"
                    "#,
                )
                .unwrap()
            }
            Ok(_) => panic!("absolute prefix accepted"),
        };
        let RemoteStorageKind::AwsS3(s3) = &c.storage else {
            panic!("{c:?}")
        };
        assert_eq!(s3.prefix_in_bucket.as_deref(), Some("ps"));
        assert_eq!(s3.concurrency_limit.get(), 7);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.small_timeout, Duration::from_millis(500));

        let c = parse(
            r#"container_name = "c"
            storage_account = "devstoreaccount1"
            container_region = "westeurope"
            prefix_in_container = "sk"
            endpoint = "http://127.0.0.1:10000/devstoreaccount1""#,
        )
        .unwrap();
        let RemoteStorageKind::AzureContainer(az) = &c.storage else {
            panic!("{c:?}")
        };
        assert_eq!(az.concurrency_limit.get(), DEFAULT_CONCURRENCY_LIMIT);
        // Round trip through serde.
        let text = toml::to_string(&c).unwrap();
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"bucket_name = "b""#, "bucket_region"),
            (r#"bucket_region = "r""#, "bucket_name"),
            (r#"container_name = "c""#, "storage_account"),
            (
                r#"local_path = "/x"
                bucket_name = "b""#,
                "bucket_name",
            ),
            (
                r#"bucket_name = "b"
                bucket_region = "r"
                container_name = "c""#,
                "container_name",
            ),
            (
                r#"bucket_name = "b"
                bucket_region = "r"
                concurrency_limit = 0"#,
                "concurrency_limit",
            ),
            (
                r#"bucket_name = "b"
                bucket_region = "r"
                endpoint = "not a url""#,
                "endpoint",
            ),
            (
                r#"bucket_name = "b"
                bucket_region = "r"
                access_key_id = "k""#,
                "secret_access_key",
            ),
            (
                r#"local_path = "/x"
                timeout = "0s""#,
                "timeout",
            ),
            (r#"local_pth = "/x""#, "local_pth"),
            (r#"bucket_name = """#, "bucket_name"),
            ("", "local_path"),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e:?} does not name {field}");
        }
    }

    #[test]
    fn simulated_failures_flatten() {
        #[derive(Deserialize)]
        struct Service {
            remote_storage: RemoteStorageConfig,
            #[serde(flatten)]
            failures: SimulatedFailures,
        }
        let s: Service = toml::from_str(
            r#"test_remote_failures = 3
            remote_storage = { local_path = "/r" }"#,
        )
        .unwrap();
        assert_eq!(s.failures.test_remote_failures, 3);
        assert_eq!(s.remote_storage, RemoteStorageConfig::local_fs("/r"));
    }
}
