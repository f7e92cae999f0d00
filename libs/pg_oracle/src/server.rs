//! A throwaway PostgreSQL 15 server for tests.
//!
//! The server lives in `/tmp/strata-pg-<pid>-<random>/` (traversable by any user), listens on
//! a free loopback port and a private socket directory, and trusts local connections. When
//! the test runs as root, `initdb` and the server run as the unprivileged user (`strata`, or
//! `STRATA_PG_USER`), since PostgreSQL refuses root. `psql` connects over TCP as `postgres`.
//! Drop stops the server immediately and removes its directory (kept when
//! `STRATA_KEEP_TEST_PG` is set, for debugging).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A failure to set up or talk to the test server; messages carry the command's stderr.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Something on the machine is missing or unusable.
    #[error("test postgres setup: {0}")]
    Setup(String),
    /// A command (initdb, pg_ctl, psql) failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// What ran.
        command: String,
        /// Its stderr.
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
    running: bool,
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

impl TestPostgres {
    /// `initdb` a new cluster and append `conf` lines (`name = value`) to postgresql.conf.
    pub fn init(conf: &[(&str, &str)]) -> Result<Self, PgError> {
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
        let datadir = root.join("data");
        let sockdir = root.join("sock");
        for d in [&root, &sockdir] {
            std::fs::create_dir_all(d).map_err(|e| setup(format!("create {}", d.display()), e))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| setup(format!("chmod {}", d.display()), e))?;
            if let Some(ids) = ids {
                std::os::unix::fs::chown(d, Some(ids.uid), Some(ids.gid))
                    .map_err(|e| setup(format!("chown {}", d.display()), e))?;
            }
        }
        let pg = TestPostgres {
            root,
            datadir,
            sockdir,
            bin,
            port: free_port()?,
            ids,
            running: false,
        };
        pg.run_as_owner(
            "initdb",
            &[
                "-D",
                &pg.datadir.display().to_string(),
                "--no-sync",
                "--no-instructions",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let mut text = format!(
            "\n# test_postgres\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            pg.port,
            pg.sockdir.display()
        );
        for (k, v) in conf {
            text.push_str(&format!("{k} = {v}\n"));
        }
        pg.append_conf(&text)?;
        Ok(pg)
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

    fn owner_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/bin:/bin");
        if let Some(ids) = self.ids {
            cmd.uid(ids.uid).gid(ids.gid);
        }
        cmd
    }

    fn run_as_owner(&self, program: &str, args: &[&str]) -> Result<String, PgError> {
        let out = self
            .owner_command(program)
            .args(args)
            .output()
            .map_err(|e| setup(format!("run {program}"), e))?;
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned()
                    + &String::from_utf8_lossy(&out.stdout),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) -> Result<(), PgError> {
        let log = self.root.join("postgres.log").display().to_string();
        self.run_as_owner(
            "pg_ctl",
            &[
                "-D",
                &self.datadir.display().to_string(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| match e {
            PgError::Command { command, stderr } => PgError::Command {
                command,
                stderr: format!(
                    "{stderr}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            },
            other => other,
        })?;
        self.running = true;
        Ok(())
    }

    /// Stops the server: `fast` (clean, with a shutdown checkpoint) or `immediate`.
    pub fn stop(&mut self, mode: &str) -> Result<(), PgError> {
        if !self.running {
            return Ok(());
        }
        self.run_as_owner(
            "pg_ctl",
            &[
                "-D",
                &self.datadir.display().to_string(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
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
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a script of statements, one by one (each autocommits unless the script opens a
    /// transaction), stopping at the first error.
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
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A binary of the PostgreSQL installation (`pg_waldump`, `pg_controldata`, …).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop("immediate");
        }
        if std::env::var_os("STRATA_KEEP_TEST_PG").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("keeping test postgres at {}", self.root.display());
        }
    }
}
