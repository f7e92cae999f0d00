//! Builds `pgxn/strata_walredo` with PGXS and hands the shared object to the crate, which
//! embeds it: the pageserver binary always carries the redo module built from the same
//! commit, against the PostgreSQL headers of this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest.join("../pgxn/strata_walredo");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("strata_walredo");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/strata_walredo");
    for file in ["Makefile", "strata_walredo.c"] {
        let from = src.join(file);
        println!("cargo:rerun-if-changed={}", from.display());
        std::fs::copy(&from, out.join(file))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    println!("cargo:rerun-if-env-changed=PG_CONFIG");
    let pg_config = std::env::var("PG_CONFIG")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".to_string());
    if !Path::new(&pg_config).exists() {
        panic!(
            "{pg_config} not found: run ./scripts/setup (needs postgresql-15 and postgresql-server-dev-15)"
        );
    }
    // A clean environment: cargo exports PROFILE, DEBUG, OPT_LEVEL…, and PGXS reads
    // PROFILE as extra compiler flags.
    let output = Command::new("make")
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .arg("-C")
        .arg(&out)
        .arg("with_llvm=no")
        .arg(format!("PG_CONFIG={pg_config}"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run make (install build-essential via ./scripts/setup): {e}")
        });
    if !output.status.success() {
        panic!(
            "building pgxn/strata_walredo failed (is postgresql-server-dev-15 installed? run ./scripts/setup):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!(
        "cargo:rustc-env=STRATA_WALREDO_SO={}",
        out.join("strata_walredo.so").display()
    );
}
