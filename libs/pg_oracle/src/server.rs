//! A throwaway PostgreSQL 15 server for tests.
//!
//! The server lives in `/tmp/strata-pg-<pid>-<random>/` (traversable by any user), listens on
//! a free loopback port and a private socket directory, and trusts local connections. When
//! the test runs as root, `initdb` and the server run as the unprivileged user (`strata`, or
//! `STRATA_PG_USER`), since PostgreSQL refuses root. `psql` connects over TCP as `postgres`.
//!
//! The postmaster is a child of the test process (no `pg_ctl`), in the test's process group,
//! so the test reaps it and a Ctrl-C reaches it too. [`TestPostgres::crash`] simulates a power
//! loss: it kills the postmaster *and every process under it* (each backend is the leader of
//! its own session, so a signal to the postmaster's process group would miss them, and an
//! orphaned backend running a loop would go on writing WAL). Drop stops the server
//! immediately (killing the whole tree if that fails) and removes its directory (kept when
//! `STRATA_KEEP_TEST_PG` is set, for debugging).

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long startup (including crash recovery) and a clean shutdown may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a killed process tree may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a background statement may take to show up as running.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start when the chosen port turns out to be taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A failure to set up or talk to the test server; messages carry the command's stderr.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Something on the machine is missing or unusable.
    #[error("test postgres setup: {0}")]
    Setup(String),
    /// A command (initdb, postgres, psql, a tool) failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// What ran.
        command: String,
        /// Its stderr (and, for the server, its log).
        stderr: String,
    },
}

fn setup(what: impl std::fmt::Display, e: impl std::fmt::Display) -> PgError {
    PgError::Setup(format!("{what}: {e}"))
}

/// The user and group PostgreSQL runs as.
#[derive(Debug, Clone, Copy)]
struct Ids {
    uid: u32,
    gid: u32,
}

/// A stock PostgreSQL 15 cluster owned by one test.
#[derive(Debug)]
pub struct TestPostgres {
    root: PathBuf,
    datadir: PathBuf,
    sockdir: PathBuf,
    bin: PathBuf,
    port: u16,
    ids: Option<Ids>,
    /// The running postmaster, our child.
    postmaster: Option<Child>,
    /// Where the current run's output starts in `postgres.log`.
    log_start: u64,
}

/// Options for a new cluster: `initdb` arguments and `postgresql.conf` lines. Build with
/// [`TestPostgres::builder`], finish with [`TestPostgresBuilder::init`].
#[derive(Debug, Clone, Default)]
pub struct TestPostgresBuilder {
    wal_segsize_mb: Option<u32>,
    initdb_args: Vec<String>,
    conf: Vec<(String, String)>,
}

impl TestPostgresBuilder {
    /// `initdb --wal-segsize` in MiB (a power of two from 1 to 1024; default 16).
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Another `initdb` argument (e.g. `--data-checksums`).
    pub fn initdb_arg(mut self, arg: impl Into<String>) -> Self {
        self.initdb_args.push(arg.into());
        self
    }

    /// A `name = value` line for postgresql.conf; `value` is written verbatim, so quote
    /// values that need it (lists, paths).
    pub fn conf(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.conf.push((name.into(), value.into()));
        self
    }

    /// Several [`conf`](Self::conf) lines.
    pub fn confs<K: AsRef<str>, V: AsRef<str>>(mut self, lines: &[(K, V)]) -> Self {
        for (k, v) in lines {
            self.conf
                .push((k.as_ref().to_string(), v.as_ref().to_string()));
        }
        self
    }

    /// Runs `initdb` in a new directory and appends the configuration. The server is not
    /// started.
    pub fn init(&self) -> Result<TestPostgres, PgError> {
        TestPostgres::create(self)
    }
}

/// What a PostgreSQL tool printed, whatever its exit status.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// `pg_controldata`'s report: its `name: value` lines, in order, and its stderr (where it
/// warns about a CRC mismatch).
#[derive(Debug, Clone)]
pub struct ControlData {
    /// `(name, value)`, both trimmed.
    pub fields: Vec<(String, String)>,
    /// Warnings.
    pub stderr: String,
}

impl ControlData {
    /// The value of field `name` (e.g. `"Latest checkpoint location"`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn pg_bin() -> PathBuf {
    std::env::var_os("STRATA_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| setup("bind a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| setup("read port", e))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pid_of(child: &Child) -> Result<Pid, PgError> {
    i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|e| setup("postmaster pid", e))
}

impl TestPostgres {
    /// `initdb` a new cluster and append `conf` lines (`name = value`, value verbatim) to
    /// postgresql.conf. For `initdb` options use [`TestPostgres::builder`].
    pub fn init(conf: &[(&str, &str)]) -> Result<Self, PgError> {
        Self::builder().confs(conf).init()
    }

    /// Options for a new cluster, beyond configuration lines.
    pub fn builder() -> TestPostgresBuilder {
        TestPostgresBuilder::default()
    }

    fn create(opts: &TestPostgresBuilder) -> Result<Self, PgError> {
        let bin = pg_bin();
        if !bin.join("postgres").exists() {
            return Err(PgError::Setup(format!(
                "{} not found: run ./scripts/setup",
                bin.join("postgres").display()
            )));
        }
        let ids = if nix::unistd::Uid::effective().is_root() {
            let name = std::env::var("STRATA_PG_USER").unwrap_or_else(|_| "strata".into());
            let user = nix::unistd::User::from_name(&name)
                .map_err(|e| setup(format!("look up user {name}"), e))?
                .ok_or_else(|| {
                    PgError::Setup(format!("user {name:?} missing: run ./scripts/setup"))
                })?;
            Some(Ids {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        } else {
            None
        };
        let root = std::env::temp_dir().join(format!(
            "strata-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let pg = TestPostgres {
            datadir: root.join("data"),
            sockdir: root.join("sock"),
            root,
            bin,
            port: free_port()?,
            ids,
            postmaster: None,
            log_start: 0,
        };
        // From here on, Drop removes the directory if anything fails.
        pg.owned_dir(&pg.root)?;
        pg.owned_dir(&pg.sockdir)?;
        let mut args = vec![
            "-D".to_string(),
            pg.datadir.display().to_string(),
            "--no-sync".into(),
            "--no-instructions".into(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
        ];
        if let Some(mb) = opts.wal_segsize_mb {
            args.push(format!("--wal-segsize={mb}"));
        }
        args.extend(opts.initdb_args.iter().cloned());
        let out = pg
            .owner_command("initdb")
            .args(&args)
            .output()
            .map_err(|e| setup("run initdb", e))?;
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("initdb {}", args.join(" ")),
                stderr: lossy(&out.stderr) + &lossy(&out.stdout),
            });
        }
        // The port is given on the command line at each start.
        let mut text = format!(
            "\n# test_postgres\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            pg.sockdir.display()
        );
        for (k, v) in &opts.conf {
            text.push_str(&format!("{k} = {v}\n"));
        }
        pg.append_conf(&text)?;
        Ok(pg)
    }

    /// Creates `dir` (mode 0755) owned by the user PostgreSQL runs as.
    fn owned_dir(&self, dir: &Path) -> Result<(), PgError> {
        std::fs::create_dir_all(dir).map_err(|e| setup(format!("create {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| setup(format!("chmod {}", dir.display()), e))?;
        if let Some(ids) = self.ids {
            std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid))
                .map_err(|e| setup(format!("chown {}", dir.display()), e))?;
        }
        Ok(())
    }

    fn append_conf(&self, text: &str) -> Result<(), PgError> {
        use std::io::Write;
        let path = self.datadir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| setup(format!("open {}", path.display()), e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| setup(format!("write {}", path.display()), e))
    }

    /// A command of the installation with a clean environment (C locale, UTC).
    fn tool_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env_clear()
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("PATH", "/usr/bin:/bin");
        cmd
    }

    /// [`tool_command`](Self::tool_command), run as the user that owns the cluster.
    fn owner_command(&self, program: &str) -> Command {
        let mut cmd = self.tool_command(program);
        if let Some(ids) = self.ids {
            cmd.uid(ids.uid).gid(ids.gid);
        }
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Starts the server and waits (up to 60 s, crash recovery included) until it accepts
    /// connections. If the port was taken meanwhile, retries on another one.
    pub fn start(&mut self) -> Result<(), PgError> {
        if self.postmaster.is_some() {
            return Err(PgError::Setup(
                "start: the server is already running".into(),
            ));
        }
        let mut attempt = 1;
        loop {
            match self.start_once() {
                Err(PgError::Command { stderr, .. })
                    if attempt < PORT_ATTEMPTS && stderr.contains("Address already in use") =>
                {
                    attempt += 1;
                    self.port = free_port()?;
                }
                other => return other,
            }
        }
    }

    fn start_once(&mut self) -> Result<(), PgError> {
        let path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| setup(format!("open {}", path.display()), e))?;
        self.log_start = log
            .metadata()
            .map_err(|e| setup(format!("stat {}", path.display()), e))?
            .len();
        let log2 = log
            .try_clone()
            .map_err(|e| setup(format!("dup {}", path.display()), e))?;
        let child = self
            .owner_command("postgres")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| setup("spawn postgres", e))?;
        let pid = child.id();
        self.postmaster = Some(child);
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            // Like `pg_ctl -w`: ready when *our* postmaster says so in postmaster.pid (a
            // connection could reach another server that took the port meanwhile).
            if self.pid_file_says_ready(pid) {
                return Ok(());
            }
            let exited = match self.postmaster.as_mut() {
                Some(child) => child
                    .try_wait()
                    .map_err(|e| setup("wait for postgres", e))?,
                None => None,
            };
            if let Some(status) = exited {
                self.postmaster = None;
                return Err(PgError::Command {
                    command: format!(
                        "postgres -D {} (exited with {status})",
                        self.datadir.display()
                    ),
                    stderr: self.log().unwrap_or_default(),
                });
            }
            if Instant::now() > deadline {
                let _ = self.crash();
                return Err(PgError::Command {
                    command: format!(
                        "postgres -D {} (not accepting connections after {SERVER_TIMEOUT:?})",
                        self.datadir.display()
                    ),
                    stderr: self.log().unwrap_or_default(),
                });
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Whether `postmaster.pid` is postmaster `pid`'s and says it accepts connections.
    fn pid_file_says_ready(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(self.datadir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.first() == Some(&pid.to_string().as_str())
            && matches!(lines.get(7), Some(&("ready" | "standby")))
    }

    /// Stops the server and waits (up to 60 s) for the postmaster to exit: `smart` (after
    /// the sessions end), `fast` (clean, with a shutdown checkpoint) or `immediate` (no
    /// checkpoint, like `pg_ctl -m`). A no-op when it is not running.
    pub fn stop(&mut self, mode: &str) -> Result<(), PgError> {
        let signal = match mode {
            "smart" | "s" => Signal::SIGTERM,
            "fast" | "f" => Signal::SIGINT,
            "immediate" | "i" => Signal::SIGQUIT,
            _ => return Err(PgError::Setup(format!("unknown shutdown mode {mode:?}"))),
        };
        let Some(child) = self.postmaster.as_mut() else {
            return Ok(());
        };
        let pid = pid_of(child)?;
        if let Some(status) = child
            .try_wait()
            .map_err(|e| setup("wait for postgres", e))?
        {
            self.postmaster = None;
            return Err(PgError::Command {
                command: format!("stop ({mode}): postgres had already exited with {status}"),
                stderr: self.log().unwrap_or_default(),
            });
        }
        kill(pid, signal).map_err(|e| setup(format!("signal postgres {pid}"), e))?;
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            if child
                .try_wait()
                .map_err(|e| setup("wait for postgres", e))?
                .is_some()
            {
                self.postmaster = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                // Still running: Drop (or the caller) kills it.
                return Err(PgError::Command {
                    command: format!(
                        "stop ({mode}): postgres still running after {SERVER_TIMEOUT:?}"
                    ),
                    stderr: self.log().unwrap_or_default(),
                });
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Simulates a crash: stops (`SIGSTOP`) the postmaster and then every process under it,
    /// so none runs on or forks, then `SIGKILL`s them all and waits until they are gone. No
    /// orphan is left writing WAL. A no-op when the server is not running.
    pub fn crash(&mut self) -> Result<(), PgError> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        let killed = pid_of(&child).and_then(kill_tree);
        // Reap the postmaster (already dead unless kill_tree failed early).
        let _ = child.kill();
        let _ = child.wait();
        killed
    }

    /// Whether the postmaster is running (it may have exited on its own since).
    pub fn is_running(&mut self) -> bool {
        match self.postmaster.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server log since the last [`start`](Self::start) (or of the last run, once it
    /// stopped).
    pub fn log(&self) -> Result<String, PgError> {
        let path = self.log_path();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(setup(format!("open {}", path.display()), e)),
        };
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(self.log_start))
            .and_then(|_| f.read_to_end(&mut bytes))
            .map_err(|e| setup(format!("read {}", path.display()), e))?;
        Ok(lossy(&bytes))
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .arg("-d")
        .arg(db)
        .env_clear()
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs SQL (one or more statements) in database `db`; returns psql's unaligned output.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String, PgError> {
        let out = self
            .psql_command(db)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| setup("run psql", e))?;
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("psql -d {db} -c {sql:?}"),
                stderr: lossy(&out.stderr),
            });
        }
        Ok(lossy(&out.stdout).trim().to_string())
    }

    /// Runs a script of statements, one by one (each autocommits unless the script opens a
    /// transaction), stopping at the first error. The script may use psql meta-commands
    /// (`\c db`) and `COPY … FROM stdin` with its data inline.
    pub fn psql_script(&self, db: &str, script: &str) -> Result<String, PgError> {
        let path = self
            .root
            .join(format!("script-{:08x}.sql", rand::random::<u32>()));
        std::fs::write(&path, script).map_err(|e| setup(format!("write {}", path.display()), e))?;
        let out = self
            .psql_command(db)
            .arg("-f")
            .arg(&path)
            .output()
            .map_err(|e| setup("run psql", e))?;
        let _ = std::fs::remove_file(&path);
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("psql -d {db} -f <script>"),
                stderr: lossy(&out.stderr),
            });
        }
        Ok(lossy(&out.stdout).trim().to_string())
    }

    /// Runs SQL in the `postgres` database.
    pub fn psql(&self, sql: &str) -> Result<String, PgError> {
        self.psql_db("postgres", sql)
    }

    /// Starts SQL in the background (for concurrent sessions); wait on the child.
    pub fn psql_background(&self, db: &str, sql: &str) -> Result<Child, PgError> {
        self.psql_command(db)
            .arg("-c")
            .arg(sql)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| setup("spawn psql", e))
    }

    /// [`psql_background`](Self::psql_background) that returns once the statement is
    /// running on the server (e.g. a load to [`crash`](Self::crash) under), or fails if
    /// psql exits first or it does not show up within 30 s.
    pub fn psql_background_running(&self, db: &str, sql: &str) -> Result<Child, PgError> {
        let app = format!("strata-bg-{:08x}", rand::random::<u32>());
        let mut child = self
            .psql_command(db)
            .env("PGAPPNAME", &app)
            .arg("-c")
            .arg(sql)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| setup("spawn psql", e))?;
        let deadline = Instant::now() + BACKGROUND_TIMEOUT;
        let probe = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND state = 'active'"
        );
        loop {
            match self.psql(&probe) {
                Ok(n) if n != "0" => return Ok(child),
                Ok(_) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
            if let Some(status) = child.try_wait().map_err(|e| setup("wait for psql", e))? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(PgError::Command {
                    command: format!("background psql -d {db} -c {sql:?} (exited with {status})"),
                    stderr,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PgError::Setup(format!(
                    "background psql -c {sql:?} not running after {BACKGROUND_TIMEOUT:?}"
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The WAL directory, `pg_wal` in the data directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.datadir.join("pg_wal")
    }

    /// A directory `name` next to the data directory, owned by the user PostgreSQL runs as
    /// and removed with the cluster; created if missing.
    pub fn scratch(&self, name: &str) -> Result<PathBuf, PgError> {
        let name = Path::new(name);
        let mut parts = name.components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(PgError::Setup(format!(
                "scratch: {} is not a plain directory name",
                name.display()
            )));
        }
        let dir = self.root.join("scratch").join(name);
        self.owned_dir(&self.root.join("scratch"))?;
        self.owned_dir(&dir)?;
        Ok(dir)
    }

    /// The TCP port (it may change at a [`start`](Self::start) if the port was taken).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A binary of the PostgreSQL installation (`pg_waldump`, `pg_controldata`, …).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Runs a tool of the installation (as the test's own user, C locale, UTC) and returns
    /// what it printed, whatever its exit status.
    pub fn run_tool<I, S>(&self, name: &str, args: I) -> Result<ToolOutput, PgError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .tool_command(name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| setup(format!("run {name}"), e))?;
        Ok(ToolOutput {
            status: out.status,
            stdout: lossy(&out.stdout),
            stderr: lossy(&out.stderr),
        })
    }

    /// `pg_waldump -p <wal_dir> <args>`. Its exit status is not checked: it ends with an
    /// error at the end of valid WAL, which is how it normally stops (see `stderr`).
    pub fn pg_waldump(&self, wal_dir: &Path, args: &[&str]) -> Result<ToolOutput, PgError> {
        let mut all: Vec<&OsStr> = vec![OsStr::new("-p"), wal_dir.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        self.run_tool("pg_waldump", all)
    }

    /// `pg_controldata <datadir>` (any directory with `global/pg_control`); fails if it
    /// does.
    pub fn pg_controldata(&self, datadir: &Path) -> Result<ControlData, PgError> {
        let out = self.run_tool("pg_controldata", [datadir])?;
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("pg_controldata {}", datadir.display()),
                stderr: out.stderr + &out.stdout,
            });
        }
        let fields = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(ControlData {
            fields,
            stderr: out.stderr,
        })
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.postmaster.is_some()
            && self.stop("immediate").is_err()
            && let Err(e) = self.crash()
        {
            eprintln!("test postgres at {}: {e}", self.root.display());
        }
        if std::env::var_os("STRATA_KEEP_TEST_PG").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("keeping test postgres at {}", self.root.display());
        }
    }
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    state: char,
    /// Start time in clock ticks after boot: tells a process from a later one with its pid.
    start: u64,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    fn all() -> Result<Vec<ProcStat>, PgError> {
        let dir = std::fs::read_dir("/proc").map_err(|e| setup("read /proc", e))?;
        Ok(dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(ProcStat::read)
            .collect())
    }

    /// Stopped by a signal (or a tracer), dead, or gone (its pid reused or free).
    fn is_stopped_or_gone(&self) -> bool {
        match ProcStat::read(self.pid) {
            Some(now) if now.start == self.start => matches!(now.state, 'T' | 't' | 'Z' | 'X'),
            _ => true,
        }
    }

    fn is_gone(&self) -> bool {
        match ProcStat::read(self.pid) {
            Some(now) if now.start == self.start => matches!(now.state, 'Z' | 'X'),
            _ => true,
        }
    }
}

/// Waits until every process in `procs` satisfies `done`, up to [`KILL_TIMEOUT`]; returns
/// the ones that do not.
fn wait_all(procs: &[ProcStat], done: impl Fn(&ProcStat) -> bool) -> Vec<ProcStat> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let left: Vec<ProcStat> = procs.iter().filter(|p| !done(p)).copied().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        sleep(Duration::from_millis(5));
    }
}

/// Freezes the process tree under `root` (its root first, so nothing new is forked, then each
/// new generation of children once their parents are stopped), then kills it all and waits
/// until every process is dead.
fn kill_tree(root: Pid) -> Result<(), PgError> {
    let Some(first) = ProcStat::read(root.as_raw()) else {
        return Ok(());
    };
    let mut tree = vec![first];
    let mut newest = vec![first];
    while !newest.is_empty() {
        for p in &newest {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGSTOP);
        }
        // A stop takes effect when the process next leaves the kernel, e.g. after a fork it
        // was in: look for children only once the parents are really stopped.
        let _ = wait_all(&newest, ProcStat::is_stopped_or_gone);
        newest = ProcStat::all()?
            .into_iter()
            .filter(|p| {
                tree.iter().any(|t| t.pid == p.ppid) && !tree.iter().any(|t| t.pid == p.pid)
            })
            .collect();
        tree.extend(&newest);
    }
    for p in &tree {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    let left = wait_all(&tree, ProcStat::is_gone);
    if left.is_empty() {
        Ok(())
    } else {
        Err(PgError::Setup(format!(
            "processes of the killed server still alive after {KILL_TIMEOUT:?}: {left:?}"
        )))
    }
}
