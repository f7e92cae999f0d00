//! Background service processes: started detached (own process group, stdin closed,
//! output appended to `<dir>/<name>.log`, cwd = its directory), recorded in
//! `<dir>/<name>.pid`, awaited on an HTTP readiness URL (or `pg_isready`), stopped with
//! its clean-stop signal (SIGKILL with `--immediate`, or when that is not obeyed in time).
//!
//! A pid file is trusted only while the process it names is alive *and* runs the
//! recorded binary (`/proc/<pid>/exe`), so a stale file after a reboot or a reused pid never
//! makes `stop` signal a stranger.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One service of the cluster.
#[derive(Debug, Clone)]
pub struct Service {
    /// `pageserver-1`, `safekeeper-2`, `nats`.
    pub name: String,
    /// The binary.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its directory (cwd, log, pid file).
    pub dir: PathBuf,
    /// Answers 200 once the service is ready (`pg_isready:<port>` for PostgreSQL).
    pub ready_url: String,
    /// Run as this (uid, gid) (PostgreSQL when we are root).
    pub run_as: Option<(u32, u32)>,
    /// The signal of a clean stop (SIGINT is PostgreSQL's "fast" shutdown).
    pub stop_signal: Signal,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running with this pid.
    Running(u32),
    /// Not running.
    Stopped,
}

impl Service {
    /// `<dir>/<name>.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    /// Running (per the pid file and `/proc`) or not.
    pub fn state(&self) -> State {
        let Ok(text) = std::fs::read_to_string(self.pid_path()) else {
            return State::Stopped;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return State::Stopped;
        };
        if is_running(pid, &self.binary) {
            State::Running(pid)
        } else {
            State::Stopped
        }
    }

    /// Starts the service (unless running) and waits until it is ready. On failure the
    /// process is killed and the error carries the tail of its log.
    pub async fn start(&self, timeout: Duration) -> anyhow::Result<u32> {
        if let State::Running(pid) = self.state() {
            return Ok(pid);
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.binary);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            let _ = nix::unistd::chown(&self.log_path(), Some(uid.into()), Some(gid.into()));
        }
        let mut child = cmd
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.binary.display()))?;
        let pid = child.id();
        utils::crashsafe::overwrite(
            &self.pid_path(),
            format!("{pid}\n").as_bytes(),
            utils::crashsafe::Sync::No,
        )
        .with_context(|| format!("writing {}", self.pid_path().display()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("HTTP client")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the child")? {
                let _ = std::fs::remove_file(self.pid_path());
                bail!(
                    "{} exited during startup ({status}); the end of {}:\n{}",
                    self.name,
                    self.log_path().display(),
                    log_tail(&self.log_path(), log_start, 30)
                );
            }
            if self.is_ready(&client).await {
                // Detached: the child outlives us; nothing waits for it (init reaps it).
                drop(child);
                return Ok(pid);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(self.pid_path());
                bail!(
                    "{} was not ready at {} after {timeout:?}; the end of {}:\n{}",
                    self.name,
                    self.ready_url,
                    self.log_path().display(),
                    log_tail(&self.log_path(), log_start, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn is_ready(&self, client: &reqwest::Client) -> bool {
        if let Some(port) = self.ready_url.strip_prefix("pg_isready:") {
            let isready = self.binary.with_file_name("pg_isready");
            return tokio::process::Command::new(isready)
                // As the compute's superuser: a probe under the caller's OS user name makes
                // the server log `FATAL: role "root" does not exist`.
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    port,
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .status()
                .await
                .is_ok_and(|s| s.success());
        }
        matches!(client.get(&self.ready_url).send().await, Ok(r) if r.status().is_success())
    }

    /// Stops the service: SIGTERM and up to `grace` to exit (then SIGKILL), or SIGKILL at
    /// once when `immediate`. Returns whether it was running.
    pub async fn stop(&self, immediate: bool, grace: Duration) -> anyhow::Result<bool> {
        let State::Running(pid) = self.state() else {
            let _ = std::fs::remove_file(self.pid_path());
            return Ok(false);
        };
        let target = Pid::from_raw(pid as i32);
        let first = if immediate {
            Signal::SIGKILL
        } else {
            self.stop_signal
        };
        kill(target, first).with_context(|| format!("signalling {} (pid {pid})", self.name))?;
        let deadline = Instant::now() + grace;
        while is_running(pid, &self.binary) {
            if Instant::now() > deadline {
                eprintln!(
                    "strata: {} (pid {pid}) did not exit within {grace:?}; killing it",
                    self.name
                );
                let _ = kill(target, Signal::SIGKILL);
                let kill_deadline = Instant::now() + Duration::from_secs(10);
                while is_running(pid, &self.binary) && Instant::now() < kill_deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if is_running(pid, &self.binary) {
            bail!("{} (pid {pid}) is still running after SIGKILL", self.name);
        }
        let _ = std::fs::remove_file(self.pid_path());
        Ok(true)
    }
}

/// True if `pid` is alive (not a zombie) and runs `binary`.
fn is_running(pid: u32, binary: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(exe) = std::fs::read_link(proc.join("exe")) else {
        return false;
    };
    let same = match (exe.canonicalize(), binary.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        // The binary was rebuilt (the running one shows " (deleted)"): compare names.
        _ => {
            exe.file_name()
                .map(|n| n.to_string_lossy().replace(" (deleted)", ""))
                == binary.file_name().map(|n| n.to_string_lossy().into_owned())
        }
    };
    if !same {
        return false;
    }
    // A zombie (exited, not yet reaped) is not running.
    match std::fs::read_to_string(proc.join("stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The last `lines` lines of `path` written after byte `from`.
pub fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path) -> Service {
        Service {
            name: "sleeper".into(),
            binary: PathBuf::from("/bin/sleep"),
            args: vec!["30".into()],
            dir: dir.to_path_buf(),
            ready_url: "http://127.0.0.1:1/never".into(),
            run_as: None,
            stop_signal: Signal::SIGTERM,
        }
    }

    #[tokio::test]
    async fn a_service_that_never_gets_ready_is_killed_and_its_log_shown() {
        let dir = tempfile::tempdir().unwrap();
        let s = Service {
            binary: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo starting up; sleep 30".into()],
            ..sleeper(dir.path())
        };
        let e = s
            .start(Duration::from_millis(500))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("was not ready") && e.contains("starting up"),
            "{e}"
        );
        assert_eq!(s.state(), State::Stopped);
    }

    #[tokio::test]
    async fn a_service_that_exits_at_startup_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = Service {
            binary: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo bad config >&2; exit 3".into()],
            ..sleeper(dir.path())
        };
        let e = s
            .start(Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exited during startup") && e.contains("bad config"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn stop_on_a_stale_pid_file_signals_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let s = sleeper(dir.path());
        // Our own pid runs the test binary, not /bin/sleep: not "running".
        std::fs::write(
            dir.path().join("sleeper.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(s.state(), State::Stopped);
        assert!(!s.stop(false, Duration::from_secs(1)).await.unwrap());
        assert!(!dir.path().join("sleeper.pid").exists());
    }
}
