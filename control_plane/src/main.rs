//! `strata`: the command line for a local Strata cluster.
//!
//! Today it checks the machine (`strata doctor`); the local cluster commands (`init`,
//! `start`, `tenant`, `timeline`, `endpoint`, …) arrive with the pageserver.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod doctor;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Run and inspect a local Strata cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this machine has everything a local cluster needs.
    Doctor(doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
