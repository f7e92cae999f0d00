//! The test server itself: options, tools, logs, and a crash that leaves no process behind.

#![allow(clippy::unwrap_used)]

use std::io::Read;

use pg_oracle::TestPostgres;

/// Whether `pid` is still a live process (a zombie counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

fn process_group(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[2].parse().unwrap()
}

fn postmaster_pid(pg: &TestPostgres) -> i32 {
    std::fs::read_to_string(pg.datadir().join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn options_tools_scratch_and_log() {
    let mut pg = TestPostgres::builder()
        .wal_segsize_mb(1)
        .conf("fsync", "off")
        .confs(&[("max_wal_size", "'64MB'")])
        .init()
        .unwrap();
    pg.start().unwrap();
    assert_eq!(pg.psql("SHOW wal_segment_size").unwrap(), "1MB");
    assert_eq!(pg.psql("SHOW max_wal_size").unwrap(), "64MB");
    assert_eq!(pg.psql("SHOW TimeZone").unwrap(), "UTC");
    // Meta-commands and inline COPY data in a script.
    let out = pg
        .psql_script(
            "postgres",
            "CREATE DATABASE other;\n\\c other\nCREATE TABLE t (a int, b text);\n\
             COPY t FROM stdin;\n1\tone\n2\ttwo\n\\.\nSELECT count(*) FROM t;\n",
        )
        .unwrap();
    assert_eq!(out, "2");
    assert_eq!(
        pg.psql_db("other", "SELECT b FROM t WHERE a = 2").unwrap(),
        "two"
    );
    assert!(pg.log().unwrap().contains("ready to accept connections"));
    pg.stop("fast").unwrap();
    assert!(!pg.is_running());
    pg.stop("fast").unwrap();
    assert!(pg.log().unwrap().contains("database system is shut down"));

    let cd = pg.pg_controldata(pg.datadir()).unwrap();
    assert_eq!(cd.get("Bytes per WAL segment"), Some("1048576"));
    assert_eq!(cd.get("Database cluster state"), Some("shut down"));
    let checkpoint = cd.get("Latest checkpoint location").unwrap();
    let dump = pg
        .pg_waldump(&pg.wal_dir(), &["-s", checkpoint, "-n", "1"])
        .unwrap();
    assert!(dump.status.success(), "{}", dump.stderr);
    assert!(
        dump.stdout.contains("CHECKPOINT_SHUTDOWN"),
        "{}",
        dump.stdout
    );
    let tool = pg.run_tool("pg_waldump", ["--version"]).unwrap();
    assert!(tool.stdout.contains("15."), "{}", tool.stdout);

    let scratch = pg.scratch("copy").unwrap();
    assert!(scratch.is_dir());
    assert!(scratch.starts_with(pg.datadir().parent().unwrap()));
    for bad in ["..", ".", "a/b", "/tmp"] {
        assert!(pg.scratch(bad).is_err(), "{bad}");
    }
    assert!(pg.pg_controldata(&scratch).is_err(), "no pg_control there");

    // A restart logs afresh.
    pg.start().unwrap();
    let log = pg.log().unwrap();
    assert!(!log.contains("database system is shut down"), "{log}");
    assert!(log.contains("ready to accept connections"), "{log}");
}

/// A crash kills the postmaster and every backend, including one busy in a loop that never
/// checks for the postmaster's death; restart runs crash recovery.
#[test]
fn crash_leaves_no_backend() {
    let mut pg = TestPostgres::init(&[("fsync", "off"), ("autovacuum", "off")]).unwrap();
    pg.start().unwrap();
    pg.psql("CREATE TABLE t (a int)").unwrap();
    let postmaster = postmaster_pid(&pg);
    // Bounded: at most 300k small rows (~20 MB of WAL) if the crash failed to stop it.
    let mut load = pg
        .psql_background_running(
            "postgres",
            "DO $$ BEGIN FOR i IN 1..300000 LOOP INSERT INTO t VALUES (i); END LOOP; END $$",
        )
        .unwrap();
    let pids: Vec<i32> = pg
        .psql("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        pids.len() >= 4,
        "backends and auxiliary processes: {pids:?}"
    );
    assert!(pids.iter().chain([&postmaster]).all(|p| alive(*p)));

    // Every backend leads a process group of its own: killing the postmaster's group (what
    // an earlier crash did) leaves them running.
    for p in &pids {
        assert_ne!(process_group(*p), process_group(postmaster), "pid {p}");
    }
    pg.crash().unwrap();
    assert!(!pg.is_running());
    let survivors: Vec<i32> = pids
        .iter()
        .chain([&postmaster])
        .copied()
        .filter(|p| alive(*p))
        .collect();
    assert!(survivors.is_empty(), "still running: {survivors:?}");
    let status = load.wait().unwrap();
    assert!(!status.success(), "the load was cut off");
    let mut stderr = String::new();
    load.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("closed the connection"), "{stderr}");

    pg.start().unwrap();
    let log = pg.log().unwrap();
    assert!(
        log.contains("database system was interrupted")
            || log.contains("was not properly shut down"),
        "{log}"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM t").unwrap(), "0");
    pg.crash().unwrap();
    // Crashing a stopped server does nothing.
    pg.crash().unwrap();
}

#[test]
fn failures_carry_the_reason() {
    let mut pg = TestPostgres::init(&[("shared_buffers", "'lots'")]).unwrap();
    assert!(pg.stop("sideways").is_err());
    let err = pg.start().unwrap_err().to_string();
    assert!(err.contains("shared_buffers"), "{err}");
    assert!(!pg.is_running());
    let err = pg.psql("SELECT 1").unwrap_err().to_string();
    assert!(err.contains("psql"), "{err}");

    let err = TestPostgres::builder()
        .wal_segsize_mb(3)
        .init()
        .unwrap_err()
        .to_string();
    assert!(err.contains("wal-segsize"), "{err}");
}

/// A port taken between `init` and `start` (by anything, even another test server) is
/// noticed, and the server starts on another one.
#[test]
fn start_moves_off_a_taken_port() {
    let mut pg = TestPostgres::init(&[("fsync", "off")]).unwrap();
    let taken = pg.port();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    pg.start().unwrap();
    assert_ne!(pg.port(), taken);
    assert_eq!(pg.psql("SHOW port").unwrap(), pg.port().to_string());
    assert!(pg.log().unwrap().contains("ready to accept connections"));
}
