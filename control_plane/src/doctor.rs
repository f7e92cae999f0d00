//! `strata doctor`: checks the machine for what a local cluster needs and says how to fix
//! what is missing. Everything it checks is installed by `scripts/setup`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Options of `strata doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Directory with PostgreSQL 15's server binaries.
    #[arg(
        long,
        env = "STRATA_PG_BIN",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pg_bin: PathBuf,
    /// The unprivileged user that runs Postgres processes when Strata runs as root.
    #[arg(long, env = "STRATA_PG_USER", default_value = "strata")]
    pg_user: String,
}

/// One line of the report.
struct Check {
    what: &'static str,
    result: Result<String, String>,
    essential: bool,
}

fn command_output(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The version number at the end of `postgres (PostgreSQL) 15.18 (Debian …)`-style output.
fn pg_version_number(text: &str) -> Option<&str> {
    let after = text
        .split_once("PostgreSQL")?
        .1
        .trim_start_matches(')')
        .trim();
    after.split_whitespace().next()
}

fn checks(args: &DoctorArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    let postgres = command_output(&args.pg_bin.join("postgres"), &["--version"]);
    let pg_config = command_output(&args.pg_bin.join("pg_config"), &["--version"]);
    checks.push(Check {
        what: "PostgreSQL 15 server",
        result: postgres.clone().and_then(|v| {
            if pg_version_number(&v).is_some_and(|n| n.starts_with("15.")) {
                Ok(v)
            } else {
                Err(format!("{v}: Strata needs PostgreSQL 15"))
            }
        }),
        essential: true,
    });
    checks.push(Check {
        what: "server headers (PGXS) match the server",
        result: match (&postgres, &pg_config) {
            (Ok(server), Ok(config)) => {
                match (pg_version_number(server), pg_version_number(config)) {
                    (Some(a), Some(b)) if a == b => command_output(
                        &args.pg_bin.join("pg_config"),
                        &["--includedir-server"],
                    )
                    .and_then(|includes| {
                        if Path::new(&includes).join("postgres.h").is_file() {
                            Ok(format!("{config}, headers in {includes}"))
                        } else {
                            Err(format!(
                                "{includes}/postgres.h missing: install postgresql-server-dev-15"
                            ))
                        }
                    }),
                    _ => Err(format!(
                        "pg_config says {config:?} but the server is {server:?}"
                    )),
                }
            }
            (_, Err(e)) => Err(e.clone()),
            (Err(e), _) => Err(e.clone()),
        },
        essential: true,
    });
    checks.push(Check {
        what: "nats-server (broker)",
        result: std::env::var_os("STRATA_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| find_on_path("nats-server"))
            // Debian installs it in /usr/sbin, which is not on every user's PATH.
            .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
            .ok_or_else(|| "not found (PATH, /usr/sbin, STRATA_NATS_SERVER)".to_string())
            .and_then(|p| command_output(&p, &["--version"])),
        essential: true,
    });
    let is_root = nix::unistd::Uid::effective().is_root();
    checks.push(Check {
        what: "unprivileged user for Postgres",
        result: if !is_root {
            Ok("not running as root: Postgres runs as the current user".into())
        } else {
            match nix::unistd::User::from_name(&args.pg_user) {
                Ok(Some(u)) => Ok(format!("{} (uid {})", u.name, u.uid)),
                Ok(None) => Err(format!("user {:?} does not exist", args.pg_user)),
                Err(e) => Err(format!("cannot look up user {:?}: {e}", args.pg_user)),
            }
        },
        essential: true,
    });
    checks
}

/// Prints the report; exits non-zero when an essential piece is missing.
pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = checks(args);
    let mut missing = 0;
    for c in &checks {
        match &c.result {
            Ok(detail) => println!("ok      {:<42} {detail}", c.what),
            Err(why) => {
                if c.essential {
                    missing += 1;
                }
                println!("MISSING {:<42} {why}", c.what);
            }
        }
    }
    if missing > 0 {
        println!("\n{missing} essential piece(s) missing: run ./scripts/setup");
        return Ok(ExitCode::FAILURE);
    }
    println!("\nthis machine can run a local Strata cluster");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert_eq!(
            pg_version_number("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some("15.18")
        );
        assert_eq!(
            pg_version_number("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"),
            Some("15.18")
        );
        assert_eq!(pg_version_number("nats-server: v2.9"), None);
    }

    #[test]
    fn missing_binaries_are_reported_not_fatal() {
        let args = DoctorArgs {
            pg_bin: PathBuf::from("/nonexistent/bin"),
            pg_user: "no-such-user-strata-test".into(),
        };
        let checks = checks(&args);
        let pg = &checks[0];
        let e = pg.result.as_ref().unwrap_err();
        assert!(e.contains("/nonexistent/bin/postgres"), "{e}");
    }
}
