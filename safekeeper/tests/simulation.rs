//! Deterministic simulation of the consensus protocol: the real walproposer core
//! (`walproposer::Proposer`) against the real acceptors (`safekeeper::acceptor::Acceptor`,
//! real files on tmpfs), over a simulated network and disk, under virtual time, with
//! every random choice drawn from one seeded RNG.
//!
//! Per seed: 3–5 acceptors, 2–3 proposers that compete (each incarnation campaigns, is
//! deposed, crashes, restarts), each elected one with a simulated compute producing valid
//! WAL that continues its donor's log. Faults: acceptor power loss (unflushed WAL lost,
//! whole or by random sectors) and restart, broken connections, partitions, lost and
//! reordered messages, compute crashes. The invariants of `simulation/checker.rs` are
//! checked after every step.
//!
//! * `STRATA_SIM_SEEDS=<n>`: how many seeds (default 200); `STRATA_SIM_FIRST_SEED=<s>`:
//!   where to start (default 1).
//! * `STRATA_SIM_SEED=<seed>`: run only that seed (replay); add `STRATA_SIM_VERBOSE=1` to
//!   print every step to stderr.
//!
//! The summary line `simulation: seeds=<N> violations=<V>` is written straight to stdout
//! (libtest does not capture that), with totals of what the runs exercised.

#![allow(clippy::unwrap_used)]

#[path = "simulation/checker.rs"]
mod checker;
#[path = "simulation/fs.rs"]
mod fs;
#[path = "simulation/network.rs"]
mod network;
#[path = "simulation/nodes.rs"]
mod nodes;
#[path = "simulation/world.rs"]
mod world;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use walproposer::UnsafeRules;
use world::{RunOptions, RunResult, Stats, World, seed_dir};

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// A fresh directory for the run's files: on tmpfs when there is one (fast; RAM, so each
/// seed's files are removed when it ends).
fn sim_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("strata-sim-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().unwrap()
}

fn run_one(root: &Path, seed: u64, opts: RunOptions) -> RunResult {
    let dir: PathBuf = seed_dir(root, seed);
    std::fs::create_dir_all(&dir).unwrap();
    let result = match World::new(seed, &dir, opts) {
        Ok(w) => w.run(seed),
        Err(e) => RunResult {
            seed,
            stats: Stats::default(),
            violation: None,
            harness_error: Some(e),
        },
    };
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

/// What a batch of seeds found.
struct Batch {
    seeds: u64,
    violating: Vec<RunResult>,
    harness_errors: Vec<(u64, String)>,
    totals: Stats,
    seeds_with_commits: u64,
}

/// Runs `seeds`; stops early once `stop_after` seeds violated (if given).
fn run_batch(
    seeds: impl Iterator<Item = u64>,
    opts: RunOptions,
    stop_after: Option<usize>,
) -> Batch {
    let root = sim_root();
    let mut b = Batch {
        seeds: 0,
        violating: Vec::new(),
        harness_errors: Vec::new(),
        totals: Stats::default(),
        seeds_with_commits: 0,
    };
    for seed in seeds {
        let r = run_one(root.path(), seed, opts);
        b.seeds += 1;
        b.totals.add(&r.stats);
        if r.stats.committed_bytes > 0 {
            b.seeds_with_commits += 1;
        }
        if let Some(e) = &r.harness_error {
            b.harness_errors.push((seed, e.clone()));
        }
        if r.violation.is_some() {
            b.violating.push(r);
            if stop_after.is_some_and(|n| b.violating.len() >= n) {
                break;
            }
        }
    }
    b
}

fn totals_line(t: &Stats, with_commits: u64) -> String {
    let errors: Vec<String> = t
        .acceptor_errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "simulation totals: steps={} elections={} commit_advances={} committed_bytes={} seeds_with_commits={} power_losses={} mid_io={} fs_calls={} log_cuts={} proposer_fatals={} compute_crashes={} connection_breaks={} messages={} lost={} donor_fetches={} acceptor_refusals=[{}]",
        t.steps,
        t.elections,
        t.commits,
        t.committed_bytes,
        with_commits,
        t.crashes,
        t.crashes_mid_io,
        t.fs_calls,
        t.cuts,
        t.fatals,
        t.kills,
        t.breaks,
        t.delivered,
        t.lost,
        t.fetches,
        errors.join(" ")
    )
}

fn describe_violation(r: &RunResult) -> String {
    let (step, what, trace) = r.violation.as_ref().unwrap();
    format!(
        "seed {} violated at step {step}: {what}\nlast steps:\n  {}\nreplay: STRATA_SIM_SEED={} STRATA_SIM_VERBOSE=1 cargo test -p safekeeper --test simulation simulation_random_schedules -- --nocapture",
        r.seed,
        trace.join("\n  "),
        r.seed
    )
}

/// Negative control: elect and commit with one safekeeper.
const MINORITY: UnsafeRules = UnsafeRules {
    quorum: Some(1),
    count_acks_before_term_start: false,
    least_advanced_donor: false,
};

/// Negative control: count flush acknowledgements below the term start towards commit.
const OLD_ACKS: UnsafeRules = UnsafeRules {
    quorum: None,
    count_acks_before_term_start: true,
    least_advanced_donor: false,
};

/// Negative control: continue the least advanced voter's log.
const WRONG_DONOR: UnsafeRules = UnsafeRules {
    quorum: None,
    count_acks_before_term_start: false,
    least_advanced_donor: true,
};

#[test]
fn simulation_random_schedules() {
    // Replaying a negative control's seed: STRATA_SIM_UNSAFE=minority|old-acks.
    let unsafe_rules = match std::env::var("STRATA_SIM_UNSAFE").as_deref() {
        Ok("minority") => MINORITY,
        Ok("old-acks") => OLD_ACKS,
        Ok("wrong-donor") => WRONG_DONOR,
        Ok(other) => {
            panic!("STRATA_SIM_UNSAFE={other}: expected minority, old-acks or wrong-donor")
        }
        Err(_) => UnsafeRules::default(),
    };
    let opts = RunOptions {
        unsafe_rules,
        verbose: std::env::var("STRATA_SIM_VERBOSE").is_ok_and(|v| v == "1"),
        lying_fsync: std::env::var("STRATA_SIM_LYING_FSYNC").is_ok_and(|v| v == "1"),
    };
    let seeds: Vec<u64> = match env_u64("STRATA_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("STRATA_SIM_FIRST_SEED").unwrap_or(1);
            let n = env_u64("STRATA_SIM_SEEDS").unwrap_or(200);
            (first..first + n).collect()
        }
    };
    let started = Instant::now();
    let b = run_batch(seeds.into_iter(), opts, None);
    report(&format!(
        "simulation: seeds={} violations={} power_losses={}",
        b.seeds,
        b.violating.len(),
        b.totals.crashes
    ));
    report(&format!(
        "{} elapsed={:.1}s",
        totals_line(&b.totals, b.seeds_with_commits),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        b.harness_errors.is_empty(),
        "the simulation itself failed: {:?}",
        b.harness_errors
    );
    if let Some(first) = b.violating.first() {
        let seeds: Vec<u64> = b.violating.iter().map(|r| r.seed).collect();
        panic!(
            "{} of {} seeds violated invariants (seeds {seeds:?}); the first:\n{}",
            b.violating.len(),
            b.seeds,
            describe_violation(first)
        );
    }
    if b.seeds >= 50 {
        // The checker must have had something to check.
        assert!(
            b.seeds_with_commits * 2 >= b.seeds,
            "only {} of {} seeds committed anything",
            b.seeds_with_commits,
            b.seeds
        );
    }
}

/// A negative control stops after this many violating seeds.
const STOP_AFTER: usize = 4;

/// Runs up to `max_seeds` seeds with a broken rule; the checker must catch it.
fn negative_control(name: &str, rules: UnsafeRules, max_seeds: u64) -> Batch {
    let opts = RunOptions {
        unsafe_rules: rules,
        ..RunOptions::default()
    };
    negative_control_with(name, opts, max_seeds)
}

fn negative_control_with(name: &str, opts: RunOptions, max_seeds: u64) -> Batch {
    let b = run_batch(1..=max_seeds, opts, Some(STOP_AFTER));
    report(&format!(
        "simulation negative control ({name}): seeds={} violations={}",
        b.seeds,
        b.violating.len()
    ));
    for r in &b.violating {
        let (step, what, _) = r.violation.as_ref().unwrap();
        report(&format!("  seed {} step {step}: {what}", r.seed));
    }
    assert!(b.harness_errors.is_empty(), "{:?}", b.harness_errors);
    b
}

#[test]
fn simulation_negative_control_minority_quorum() {
    let b = negative_control("elect and commit with 1 safekeeper", MINORITY, 40);
    assert!(
        !b.violating.is_empty(),
        "a proposer electing and committing with a minority went undetected in {} seeds",
        b.seeds
    );
}

/// Not part of the normal run: this bug (Raft's "commit by counting old-term replicas") needs
/// a rare interleaving to lose committed WAL, because acceptors refuse to truncate below
/// their own commit LSN; run it with `--ignored` (and `STRATA_SIM_NEG_SEEDS`) to hunt for it.
#[test]
#[ignore]
fn simulation_negative_control_commit_counting_old_acks() {
    let n = env_u64("STRATA_SIM_NEG_SEEDS").unwrap_or(100);
    let b = negative_control(
        "commit counts acknowledgements below the term start",
        OLD_ACKS,
        n,
    );
    report(&format!(
        "  {}",
        totals_line(&b.totals, b.seeds_with_commits)
    ));
}

/// A disk whose fsync does nothing (the simulated file system's lying mode): lost
/// acknowledged WAL and forgotten votes must be caught, or the simulation could not tell
/// durable from not.
#[test]
fn simulation_negative_control_lying_fsync() {
    let opts = RunOptions {
        lying_fsync: true,
        ..RunOptions::default()
    };
    let b = negative_control_with("fsync is a no-op", opts, 40);
    assert!(
        !b.violating.is_empty(),
        "a disk that never makes anything durable went undetected in {} seeds",
        b.seeds
    );
}

#[test]
fn simulation_negative_control_wrong_donor() {
    let b = negative_control("the least advanced voter is the donor", WRONG_DONOR, 60);
    assert!(
        !b.violating.is_empty(),
        "a proposer continuing the least advanced log went undetected in {} seeds",
        b.seeds
    );
}

/// Replaying a seed must replay the run: the same seed twice gives the same counters (and
/// so the same schedule), whatever the machine or the temporary directory.
#[test]
fn simulation_is_deterministic() {
    let root = sim_root();
    let opts = RunOptions::default();
    for seed in [3, 17] {
        let a = run_one(root.path(), seed, opts);
        let b = run_one(root.path(), seed, opts);
        assert!(a.stats.steps > 0 && a.stats.elections > 0, "{:?}", a.stats);
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(
            a.violation.as_ref().map(|v| v.0),
            b.violation.as_ref().map(|v| v.0)
        );
    }
}
