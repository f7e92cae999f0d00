//! Test harness: real servers (moto for S3, Azurite for Azure) started on free loopback
//! ports, one of each per test binary, and a fresh bucket, container or directory per test.
//!
//! Servers run under a tiny `sh` supervisor whose stdin is a pipe from the test process:
//! when the test binary exits for any reason (even SIGKILL), the pipe closes and the
//! supervisor kills the server, so nothing is left behind. The `ServerProcess` handle also
//! kills the whole process group on drop.
//!
//! In CI (`CI` set) the S3 and Azure tests always run: if a server cannot start, the test
//! fails with the reason. Locally, `STRATA_SKIP_REMOTE_SERVERS=1` skips them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use remote_storage::{GenericRemoteStorage, RemoteStorageConfig};

/// The well-known Azurite development account and key (published by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the S3 and Azure tests may be skipped: only locally, only when asked.
pub fn skip_remote_servers() -> bool {
    let asked =
        std::env::var("STRATA_SKIP_REMOTE_SERVERS").is_ok_and(|v| !v.is_empty() && v != "0");
    asked && std::env::var_os("CI").is_none()
}

/// Writes past libtest's output capture, so every run shows which server a backend used.
pub fn announce(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process under its supervisor; killed on drop and when the test binary exits.
#[derive(Debug)]
pub struct ServerProcess {
    supervisor: Child,
    server_pid: i32,
    pub name: &'static str,
    pub port: u16,
    pub endpoint: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(
        name: &'static str,
        program: &Path,
        args: impl Fn(u16, &Path) -> Vec<String>,
        endpoint: impl Fn(u16) -> String,
        ready_timeout: Duration,
    ) -> Result<ServerProcess, String> {
        if !program.exists() {
            return Err(format!(
                "{name}: {} does not exist (run ./scripts/setup)",
                program.display()
            ));
        }
        let mut last_error = String::new();
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..3 {
            let dir = tempfile::tempdir().map_err(|e| format!("{name}: temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("{name}: no free port: {e}"))?;
            let log = dir.path().join(format!("{name}.log"));
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(r#"log="$1"; shift; "$@" >"$log" 2>&1 & pid=$!; echo "$pid"; read -r _ || true; kill -9 "$pid" 2>/dev/null"#)
                .arg("sh")
                .arg(&log)
                .arg(program)
                .args(args(port, dir.path()))
                .current_dir(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut supervisor = cmd.spawn().map_err(|e| format!("{name}: spawn sh: {e}"))?;
            let mut pid_line = String::new();
            if let Some(out) = supervisor.stdout.take() {
                let _ = BufReader::new(out).read_line(&mut pid_line);
            }
            let server_pid: i32 = pid_line.trim().parse().unwrap_or(0);
            let mut server = ServerProcess {
                supervisor,
                server_pid,
                name,
                port,
                endpoint: endpoint(port),
                log: log.clone(),
                _dir: dir,
            };
            match server.wait_ready(ready_timeout) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = e;
                    server.kill();
                }
            }
        }
        Err(last_error)
    }

    fn alive(&self) -> bool {
        self.server_pid > 0
            && Path::new(&format!("/proc/{}", self.server_pid)).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.server_pid))
                .is_ok_and(|s| s.split(' ').nth(2) == Some("Z"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if !self.alive() {
                return Err(format!(
                    "{} exited before listening on port {}; its log:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                ));
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "{} did not listen on port {} within {timeout:?}; its log:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.supervisor.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        if self.server_pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.server_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.supervisor.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn moto_python() -> PathBuf {
    std::env::var_os("STRATA_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

fn azurite_program() -> (PathBuf, bool) {
    let path = std::env::var_os("STRATA_AZURITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join(".tools/azurite/node_modules/azurite/dist/src/blob/main.js")
        });
    let is_js = path.extension().is_some_and(|e| e == "js");
    (path, is_js)
}

static MOTO: OnceLock<Result<ServerProcess, String>> = OnceLock::new();
static AZURITE: OnceLock<Result<ServerProcess, String>> = OnceLock::new();

/// The shared moto server of this test binary (started on first use).
pub fn moto() -> &'static ServerProcess {
    let server = MOTO.get_or_init(|| {
        let python = moto_python();
        let s = ServerProcess::start(
            "moto",
            &python,
            |port, _| {
                [
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ]
                .map(str::to_owned)
                .to_vec()
            },
            |port| format!("http://127.0.0.1:{port}"),
            Duration::from_secs(60),
        )?;
        announce(&format!(
            "remote_storage tests: s3 backend uses moto at {} (pid {})",
            s.endpoint, s.server_pid
        ));
        Ok(s)
    });
    match server {
        Ok(s) => s,
        Err(e) => panic!("moto (S3) server could not start: {e}"),
    }
}

/// The shared Azurite server of this test binary (started on first use).
pub fn azurite() -> &'static ServerProcess {
    let server = AZURITE.get_or_init(|| {
        let (program, is_js) = azurite_program();
        let (exe, prefix) = if is_js {
            (PathBuf::from("node"), vec![program.display().to_string()])
        } else {
            (program.clone(), vec![])
        };
        if !program.exists() {
            return Err(format!(
                "azurite: {} does not exist (run ./scripts/setup)",
                program.display()
            ));
        }
        let exe = if is_js {
            // scripts/setup puts a Node.js 20 there when the machine's is too old.
            let private = workspace_root().join(".tools/node/bin/node");
            if private.exists() {
                private
            } else {
                which("node").ok_or("azurite: node is not on PATH")?
            }
        } else {
            exe
        };
        let s = ServerProcess::start(
            "azurite",
            &exe,
            // The working directory is a fresh temp dir (in-memory mode refuses --location).
            move |port, _dir| {
                let mut a = prefix.clone();
                a.extend(
                    [
                        "--blobHost",
                        "127.0.0.1",
                        "--blobPort",
                        &port.to_string(),
                        "--inMemoryPersistence",
                        "--skipApiVersionCheck",
                        "--loose",
                        "--silent",
                        "--disableTelemetry",
                    ]
                    .map(str::to_owned),
                );
                a
            },
            |port| format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            Duration::from_secs(60),
        )?;
        announce(&format!(
            "remote_storage tests: azure backend uses Azurite at {} (pid {})",
            s.endpoint, s.server_pid
        ));
        Ok(s)
    });
    match server {
        Ok(s) => s,
        Err(e) => panic!("Azurite (Azure) server could not start: {e}"),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique lowercase name for a bucket or container.
pub fn unique_name(kind: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{kind}-{}-{n}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// One test's storage: a fresh directory, bucket or container.
pub struct TestStorage {
    pub storage: GenericRemoteStorage,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestStorage {
    type Target = GenericRemoteStorage;
    fn deref(&self) -> &GenericRemoteStorage {
        &self.storage
    }
}

pub fn test_timeouts() -> (Duration, Duration) {
    (Duration::from_secs(60), Duration::from_secs(20))
}

/// Data and small timeouts for the slow-link cases: short enough that a transfer of a few
/// seconds outlasts them.
pub const SLOW_LINK: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(2));

pub async fn local_fs() -> Option<TestStorage> {
    local_fs_with(test_timeouts()).await
}

pub async fn local_fs_slow_link() -> Option<TestStorage> {
    local_fs_with(SLOW_LINK).await
}

pub async fn s3_slow_link() -> Option<TestStorage> {
    s3_with(SLOW_LINK).await
}

pub async fn azure_slow_link() -> Option<TestStorage> {
    azure_with(SLOW_LINK).await
}

async fn local_fs_with(timeouts: (Duration, Duration)) -> Option<TestStorage> {
    static ANNOUNCE: std::sync::Once = std::sync::Once::new();
    ANNOUNCE.call_once(|| {
        announce(&format!(
            "remote_storage tests: local_fs backend uses fresh directories under {}",
            std::env::temp_dir().display()
        ))
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let root =
        camino::Utf8PathBuf::from_path_buf(dir.path().join("remote")).expect("utf-8 temp dir");
    let mut config = RemoteStorageConfig::local_fs(root);
    (config.timeout, config.small_timeout) = timeouts;
    let storage = GenericRemoteStorage::from_config(&config)
        .await
        .expect("local fs");
    Some(TestStorage {
        storage,
        backend: "local_fs",
        _dir: Some(dir),
    })
}

pub fn s3_config(endpoint: &str, bucket: &str, prefix: Option<&str>) -> RemoteStorageConfig {
    s3_config_with(endpoint, bucket, prefix, test_timeouts())
}

fn s3_config_with(
    endpoint: &str,
    bucket: &str,
    prefix: Option<&str>,
    (timeout, small): (Duration, Duration),
) -> RemoteStorageConfig {
    let mut text = format!(
        "bucket_name = {bucket:?}\nbucket_region = \"us-east-1\"\nendpoint = {endpoint:?}\n\
         access_key_id = \"test\"\nsecret_access_key = \"test\"\nconcurrency_limit = 32\n\
         timeout = \"{}s\"\nsmall_timeout = \"{}s\"\n",
        timeout.as_secs(),
        small.as_secs()
    );
    if let Some(p) = prefix {
        text.push_str(&format!("prefix_in_bucket = {p:?}\n"));
    }
    RemoteStorageConfig::from_toml(&text).expect("valid S3 test config")
}

pub fn azure_config(endpoint: &str, container: &str, prefix: Option<&str>) -> RemoteStorageConfig {
    azure_config_with(endpoint, container, prefix, test_timeouts())
}

fn azure_config_with(
    endpoint: &str,
    container: &str,
    prefix: Option<&str>,
    (timeout, small): (Duration, Duration),
) -> RemoteStorageConfig {
    let mut text = format!(
        "container_name = {container:?}\nstorage_account = {AZURITE_ACCOUNT:?}\nendpoint = {endpoint:?}\n\
         storage_account_key = {AZURITE_KEY:?}\nconcurrency_limit = 32\n\
         timeout = \"{}s\"\nsmall_timeout = \"{}s\"\n",
        timeout.as_secs(),
        small.as_secs()
    );
    if let Some(p) = prefix {
        text.push_str(&format!("prefix_in_container = {p:?}\n"));
    }
    RemoteStorageConfig::from_toml(&text).expect("valid Azure test config")
}

/// A fresh bucket on the shared moto server; `None` when skipping is allowed and asked for.
pub async fn s3() -> Option<TestStorage> {
    s3_with(test_timeouts()).await
}

async fn s3_with(timeouts: (Duration, Duration)) -> Option<TestStorage> {
    if skip_remote_servers() {
        announce("skipping an S3 test: STRATA_SKIP_REMOTE_SERVERS is set");
        return None;
    }
    let server = tokio::task::spawn_blocking(moto).await.expect("moto start");
    let bucket = unique_name("strata");
    let storage = GenericRemoteStorage::from_config(&s3_config_with(
        &server.endpoint,
        &bucket,
        Some("test-prefix"),
        timeouts,
    ))
    .await
    .expect("S3 storage");
    let GenericRemoteStorage::AwsS3(s3) = &storage else {
        unreachable!()
    };
    s3.client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {bucket} on moto at {}: {e:?}",
                server.endpoint
            )
        });
    Some(TestStorage {
        storage,
        backend: "s3",
        _dir: None,
    })
}

/// A fresh container on the shared Azurite server; `None` when skipping is allowed and
/// asked for.
pub async fn azure() -> Option<TestStorage> {
    azure_with(test_timeouts()).await
}

async fn azure_with(timeouts: (Duration, Duration)) -> Option<TestStorage> {
    if skip_remote_servers() {
        announce("skipping an Azure test: STRATA_SKIP_REMOTE_SERVERS is set");
        return None;
    }
    let server = tokio::task::spawn_blocking(azurite)
        .await
        .expect("azurite start");
    let container = unique_name("strata");
    let storage = GenericRemoteStorage::from_config(&azure_config_with(
        &server.endpoint,
        &container,
        Some("test-prefix"),
        timeouts,
    ))
    .await
    .expect("Azure storage");
    let GenericRemoteStorage::AzureBlob(az) = &storage else {
        unreachable!()
    };
    az.container_client().create().await.unwrap_or_else(|e| {
        panic!(
            "create container {container} on Azurite at {}: {e:?}",
            server.endpoint
        )
    });
    Some(TestStorage {
        storage,
        backend: "azure",
        _dir: None,
    })
}
