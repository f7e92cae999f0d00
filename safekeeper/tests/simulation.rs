//! Deterministic simulation of the consensus protocol: the real walproposer core
//! (`walproposer::Proposer`) against the real acceptors (`safekeeper::acceptor::Acceptor`
//! with its real WAL storage and control file), over a simulated network and a simulated
//! file system (`simulation/fs.rs`: what was not fsynced is lost on power loss), under
//! virtual time, with every random choice drawn from one seeded RNG.
//!
//! Per seed: 3–5 acceptors, 2–3 proposers that compete (each incarnation campaigns, is
//! deposed, crashes, restarts), each elected one with a simulated compute producing valid
//! WAL that continues its donor's log, read by the production walsender's rule. The
//! acceptors' flushes run the production flush thread's steps (ticket, fdatasync,
//! completion) as separate events. Faults: acceptor power loss — between steps, or armed
//! to fall between two file-system calls of an operation — which keeps only what was
//! fsynced (or, in partial-writeback mode, a random part of the rest) and restart, broken
//! connections, partitions, lost and reordered messages, compute crashes. The invariants
//! of `simulation/checker.rs` are checked after every step.
//!
//! * `STRATA_SIM_SEEDS=<n>`: how many seeds (default 200); `STRATA_SIM_FIRST_SEED=<s>`:
//!   where to start (default 1).
//! * `STRATA_SIM_SEED=<seed>`: run only that seed (replay); add `STRATA_SIM_VERBOSE=1` to
//!   print every step to stderr.
//!
//! * `STRATA_SIM_LYING_FSYNC=1`: the disks' fsync does nothing (replaying the negative
//!   control).
//!
//! The summary line `simulation: seeds=<N> violations=<V> power_losses=<P>` is written
//! straight to stdout (libtest does not capture that), with totals of what the runs
//! exercised. Negative controls (a minority quorum, the least advanced donor, a lying
//! fsync, and Raft's "Figure 8" as a script) must be caught.

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

/// Where the simulated files live: a path on the simulated file systems only (nothing
/// touches the real disk).
fn sim_root() -> PathBuf {
    PathBuf::from("/strata-sim")
}

fn run_one(root: &Path, seed: u64, opts: RunOptions) -> RunResult {
    let dir: PathBuf = seed_dir(root, seed);
    match World::new(seed, &dir, opts) {
        Ok(w) => w.run(seed),
        Err(e) => RunResult {
            seed,
            stats: Stats::default(),
            violation: None,
            harness_error: Some(e),
        },
    }
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
        let r = run_one(root.as_path(), seed, opts);
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

/// Raft's "Figure 8" (commit by counting acknowledgements of older terms' WAL), which
/// random schedules do not find, played as a script (`simulation/figure8.rs`): with the
/// unsafe rule the checker must report the committed WAL that a later election truncates;
/// with the production rule the same script must end clean.
#[test]
fn simulation_negative_control_figure8_old_acks() {
    let root = sim_root();
    let verbose = std::env::var("STRATA_SIM_VERBOSE").is_ok_and(|v| v == "1");
    let unsafe_opts = RunOptions {
        unsafe_rules: OLD_ACKS,
        verbose,
        ..RunOptions::default()
    };
    let bad = World::figure8(&root.as_path().join("unsafe"), unsafe_opts).unwrap();
    report(&format!(
        "simulation negative control (figure 8, acks below the term start count): violation={:?}",
        bad.violation
    ));
    let trace = bad.trace.join("\n  ");
    assert!(
        bad.p2_commit.is_some(),
        "the script did not reach the unsafe commit:\n  {trace}"
    );
    let v = bad
        .violation
        .unwrap_or_else(|| panic!("figure 8 went undetected:\n  {trace}"));
    assert!(v.starts_with("quorum:"), "{v}\n  {trace}");

    let safe_opts = RunOptions {
        verbose,
        ..RunOptions::default()
    };
    let good = World::figure8(&root.as_path().join("safe"), safe_opts).unwrap();
    assert!(
        good.violation.is_none() && good.p2_commit.is_none(),
        "the production rule in the figure 8 script: violation {:?}, P2 committed {:?}\n  {}",
        good.violation,
        good.p2_commit,
        good.trace.join("\n  ")
    );
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
/// so the same schedule), whatever the machine: the files are simulated too.
#[test]
fn simulation_is_deterministic() {
    let root = sim_root();
    let opts = RunOptions::default();
    for seed in [3, 17] {
        let a = run_one(root.as_path(), seed, opts);
        let b = run_one(root.as_path(), seed, opts);
        assert!(a.stats.steps > 0 && a.stats.elections > 0, "{:?}", a.stats);
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(
            a.violation.as_ref().map(|v| v.0),
            b.violation.as_ref().map(|v| v.0)
        );
    }
}
