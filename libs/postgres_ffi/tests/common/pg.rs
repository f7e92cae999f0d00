//! A scratch PostgreSQL 15 cluster for oracle tests: initdb, start, run SQL, stop, and the
//! oracle tools (`pg_waldump`, `pg_controldata`).
//!
//! PostgreSQL refuses to run as root, so when the test runs as root every server process
//! runs as the unprivileged `strata` user (created by `scripts/setup`), in a directory under
//! `/tmp` that user owns. The postmaster is a child process and a [`Drop`] guard kills it even
//! if the test panics. Nothing is skipped: if PostgreSQL cannot run, the test fails saying why.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where Debian's PostgreSQL 15 binaries are (override with `STRATA_PG_BIN`).
pub fn pg_bin() -> PathBuf {
    std::env::var_os("STRATA_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The user to run PostgreSQL as: `Some((uid, gid))` of `strata` when we are root.
fn run_as() -> Option<(u32, u32)> {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("parse Uid from /proc/self/status");
    if euid != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with("strata:")).expect(
        "running as root needs the `strata` user (run scripts/setup): PostgreSQL refuses root",
    );
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

fn command(program: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(program.as_ref());
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("TZ", "UTC").env("LC_ALL", "C").env_remove("PGDATA");
    cmd
}

fn check(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Cluster options.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `initdb --wal-segsize` in MiB.
    pub wal_segsize_mb: u32,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
}

/// A scratch cluster; dropped = server killed and files removed.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub datadir: PathBuf,
    sockdir: PathBuf,
    pub port: u16,
    postmaster: Option<Child>,
}

impl PgCluster {
    /// Runs initdb in a fresh directory under `/tmp`.
    pub fn init(opts: &PgOptions) -> PgCluster {
        let initdb = pg_bin().join("initdb");
        assert!(
            initdb.exists(),
            "PostgreSQL 15 is not installed at {} (run scripts/setup or set STRATA_PG_BIN)",
            initdb.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("strata-ffi-test-")
            .tempdir_in("/tmp")
            .expect("create temp dir");
        let datadir = dir.path().join("data");
        let sockdir = dir.path().join("sock");
        fs::create_dir(&sockdir).expect("create socket dir");
        if let Some((uid, gid)) = run_as() {
            for p in [dir.path(), sockdir.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown to strata");
            }
        }
        let out = command(&initdb)
            .arg("-D")
            .arg(&datadir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["--locale=C", "-E", "UTF8"])
            .arg(format!("--wal-segsize={}", opts.wal_segsize_mb))
            .output()
            .expect("spawn initdb");
        check("initdb", out);
        let mut conf = String::from("\n# strata postgres_ffi oracle test\n");
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(datadir.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
        PgCluster {
            dir,
            datadir,
            sockdir,
            port: free_port(),
            postmaster: None,
        }
    }

    /// Starts the postmaster and waits until it accepts connections.
    pub fn start(&mut self) {
        let log = fs::File::create(self.dir.path().join("postgres.log")).expect("create log");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(self.dir.path().join("postgres.log"), Some(uid), Some(gid))
                .expect("chown log");
        }
        let child = command(pg_bin().join("postgres"))
            .arg("-D")
            .arg(&self.datadir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.sockdir)
            .args(["-c", "listen_addresses="])
            // Its own process group, so a simulated crash can kill every backend at once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.postmaster = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .psql_output("SELECT 1")
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(child) = self.postmaster.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited with {status} at startup:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections in 60 s:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// The server log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn psql_output(&self, sql: &str) -> std::io::Result<Output> {
        let mut child = command(pg_bin().join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("psql stdin")
            .write_all(sql.as_bytes())?;
        child.wait_with_output()
    }

    /// Runs a SQL script through psql (stop at the first error) and returns its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_output(sql).expect("spawn psql");
        check("psql", out)
    }

    /// Fast shutdown (the server writes a shutdown checkpoint), waiting for it to finish.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("postgres did not shut down in 60 s:\n{}", self.log());
                    }
                    _ => sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Simulates a crash: SIGKILL to the postmaster and every backend at the same instant.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            // Give the killed backends a moment to disappear.
            sleep(Duration::from_millis(200));
        }
    }

    /// Starts a psql running `sql` in the background (e.g. a load to crash under).
    pub fn psql_background(&self, sql: &str) -> Child {
        let mut child = command(pg_bin().join("psql"))
            .args(["-X", "-q", "-U", "postgres", "-d", "postgres"])
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql");
        // Wait until it is running its statement.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let active = self.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            );
            if active.trim() != "0" {
                return child;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("background psql exited early: {status}");
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("background psql never became active");
    }

    /// `pg_wal` of the cluster.
    pub fn wal_dir(&self) -> PathBuf {
        self.datadir.join("pg_wal")
    }

    /// A scratch directory owned by the test user for extra files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("create scratch dir");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown scratch");
        }
        p
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            // Immediate shutdown: backends exit with the postmaster.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `pg_waldump -b` over `wal_dir` from `start` and returns its stdout and the final
/// error line (pg_waldump stops at the end of valid WAL with an error).
pub fn pg_waldump(wal_dir: &Path, start: &str) -> (String, String) {
    let out = command(pg_bin().join("pg_waldump"))
        .arg("-b")
        .arg("-p")
        .arg(wal_dir)
        .args(["-s", start])
        .output()
        .expect("spawn pg_waldump");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pg_controldata` of a data directory as `key → value`.
pub fn pg_controldata(datadir: &Path) -> (Vec<(String, String)>, String) {
    let out = command(pg_bin().join("pg_controldata"))
        .arg(datadir)
        .output()
        .expect("spawn pg_controldata");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = check("pg_controldata", out);
    let kv = stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (kv, stderr)
}
