"""Basebackup: a complete data directory at an LSN, from which stock PostgreSQL 15 starts
without recovery and continues the WAL at exactly that LSN.

The oracle is PostgreSQL itself: `pg_dumpall` of a compute and of a server started from a
basebackup at the compute's final LSN are identical. The steps of an endpoint start
(`walproposer sync` → wait → basebackup → Postgres → sidecar from the LSN) are run by hand
here; the `strata` CLI runs the same steps.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.basebackup import assert_same_dump, postgres_from_basebackup, tar_digest
from fixtures.compute import SLOT, WAL_SEG_SIZE, Compute, connect, segment_name
from fixtures.pageserver import PageserverApiError, PageStreamConnection
from fixtures.pageserver_env import PageserverEnv, current_record_end, page_header_size
from fixtures.pgbench import run_pgbench
from fixtures.safekeeper import int_to_lsn, lsn_to_int, random_id
from fixtures.workdir import TestDir

XLOG_BLCKSZ = 8192


def record_start(lsn: int) -> int:
    """Where PostgreSQL places a record "at" `lsn`: past the page header on a boundary."""
    return lsn + page_header_size(lsn) if lsn % XLOG_BLCKSZ == 0 else lsn


def waldump_across(
    ps_env: PageserverEnv, pg_bindir: Path, tmp: Path, prev: int, lsn: int, end: int
) -> None:
    """The first safekeeper's WAL from `prev` (the history's last record before `lsn`)
    through the synthetic checkpoint at `lsn` to `end` reads cleanly in pg_waldump, which
    checks every xl_prev: the new compute's WAL continues the history exactly."""
    sk = ps_env.safekeepers[0]
    tl_dir = sk.timeline_dir(ps_env.tenant, ps_env.timeline)
    tmp.mkdir()
    for segno in range(prev // WAL_SEG_SIZE, (end - 1) // WAL_SEG_SIZE + 1):
        name = segment_name(segno)
        src = tl_dir / name
        if not src.exists():
            src = tl_dir / f"{name}.partial"
        shutil.copyfile(src, tmp / name)
    out = subprocess.run(
        [
            str(pg_bindir / "pg_waldump"),
            "-p",
            str(tmp),
            "-s",
            int_to_lsn(prev),
            "-e",
            int_to_lsn(end),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    at = f"lsn: {int_to_lsn(record_start(lsn))},"
    ckpt = [line for line in lines if at in line]
    assert ckpt and "CHECKPOINT_SHUTDOWN" in ckpt[0], (at, lines[:3])
    assert f"prev {int_to_lsn(prev)}" in ckpt[0], ckpt[0]
    assert len(lines) > 3, lines


def workload(ps_env: PageserverEnv, pg_bindir: Path, test_dir: TestDir) -> None:
    """Something of everything a data directory holds: heap and index pages with updates,
    deletes and a VACUUM (VM and FSM forks), TOAST, a sequence, an unlogged table, two
    databases (both CREATE DATABASE strategies), pgbench tables, a prepared transaction."""
    assert ps_env.compute is not None
    pg = ps_env.compute.pg
    pg.safe_psql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg.safe_psql(
        "INSERT INTO t SELECT g, repeat(md5(g::text), g % 7) FROM generate_series(1, 20000) g"
    )
    pg.safe_psql("INSERT INTO t VALUES (0, repeat('toast', 5000))")
    pg.safe_psql("UPDATE t SET v = 'updated' WHERE id % 10 = 0")
    pg.safe_psql("DELETE FROM t WHERE id % 13 = 0")
    pg.safe_psql("VACUUM t")
    pg.safe_psql("CREATE SEQUENCE s")
    # PostgreSQL WAL-logs a sequence 32 values ahead, so a server started from WAL (a
    # basebackup, or any crash recovery) resumes after the logged value: 33 calls end
    # exactly on a logged value, and the dumps agree.
    pg.safe_psql("SELECT nextval('s') FROM generate_series(1, 33)")
    pg.safe_psql("CREATE UNLOGGED TABLE u (id int PRIMARY KEY)")
    pg.safe_psql("INSERT INTO u SELECT generate_series(1, 100)")
    pg.safe_psql("CREATE DATABASE db_wal_log")
    pg.safe_psql("CREATE DATABASE db_file_copy STRATEGY FILE_COPY")
    pg.safe_psql("CREATE TABLE x AS SELECT generate_series(1, 1000) AS a", dbname="db_wal_log")
    run_pgbench(pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "1", timeout=300)
    conn = connect(pg)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO t VALUES (-1, 'prepared')")
        cur.execute("PREPARE TRANSACTION 'p1'")
    conn.close()


def test_basebackup_matches_the_compute(ps_env: PageserverEnv, pg_bindir: Path, test_dir: TestDir):
    """A basebackup at the compute's final LSN: a stock server starts on it without
    recovery, at a checkpoint placed at that LSN; pg_dumpall equals the compute's; the
    prepared transaction is there and commits; the unlogged table is empty and usable; the
    server writes and survives a crash restart (recovery from the synthetic checkpoint).
    The page service's basebackup (gzip) holds the same files as the HTTP one."""
    compute = ps_env.import_compute()
    workload(ps_env, pg_bindir, test_dir)
    lsn = current_record_end(compute.pg)
    ps_env.wait_ingested(lsn)
    tar = ps_env.http.basebackup(ps_env.tenant, ps_env.timeline, lsn=lsn)

    pg = postgres_from_basebackup(ps_env.wp, "from-basebackup", tar)
    pg.start()
    log = pg.log_path.read_text()
    assert "database system was shut down at" in log, log[-2000:]
    assert "redo starts" not in log, "the server ran recovery"
    ckpt = pg.safe_psql(
        "SELECT checkpoint_lsn, redo_lsn, timeline_id FROM pg_control_checkpoint()"
    )[0]
    assert lsn_to_int(ckpt[0]) == record_start(lsn) == lsn_to_int(ckpt[1]), ckpt
    assert ckpt[2] == 1

    size = assert_same_dump(pg_bindir, compute.pg, pg)
    print(f"pg_dumpall identical ({size} bytes) at {int_to_lsn(lsn)}; tar {len(tar) >> 20} MiB")

    assert pg.safe_psql("SELECT gid FROM pg_prepared_xacts") == [("p1",)]
    pg.safe_psql("COMMIT PREPARED 'p1'")
    assert pg.safe_psql("SELECT v FROM t WHERE id = -1") == [("prepared",)]
    assert pg.safe_psql("SELECT count(*) FROM u") == [(0,)]
    pg.safe_psql("INSERT INTO u VALUES (1)")
    # New transactions get new xids: the old rows stay visible.
    before = pg.safe_psql("SELECT count(*) FROM t")[0][0]
    for i in range(50):
        pg.safe_psql(f"INSERT INTO t VALUES ({100000 + i}, 'after')")
    assert pg.safe_psql("SELECT count(*) FROM t")[0][0] == before + 50
    pg.stop(mode="immediate")
    pg.start()
    assert pg.safe_psql("SELECT count(*) FROM t")[0][0] == before + 50
    assert pg.safe_psql("SELECT count(*) FROM u") == [(0,)]  # reset by crash recovery

    pg.stop()

    # The page service gives the same files (pg_control and the WAL carry the time).
    ps = ps_env.pageserver
    conn = PageStreamConnection(
        ps.host, ps.pg_port, ps_env.tenant, ps_env.timeline, pagestream=False
    )
    with conn:
        gz = conn.copy_out(f"basebackup {ps_env.tenant} {ps_env.timeline} {int_to_lsn(lsn)} --gzip")
    assert gz[:2] == b"\x1f\x8b"
    skip = ("global/pg_control", "pg_wal/0")
    assert tar_digest(gz, skip) == tar_digest(tar, skip)


def test_basebackup_compute_continues_the_timeline(
    ps_env: PageserverEnv, pg_bindir: Path, test_dir: TestDir
):
    """The endpoint start, by hand: stop the compute, `walproposer sync` → L, wait for the
    pageserver, basebackup at L, start a new compute on it with its sidecar from L. It
    commits through the quorum, the pageserver ingests its WAL (xl_prev of the synthetic
    record checked against the timeline's last record), and a second basebackup at its end
    dumps identically to it. Done twice, so the second start is from WAL the first new
    compute wrote."""
    compute = ps_env.import_compute()
    workload(ps_env, pg_bindir, test_dir)
    wp = ps_env.wp
    expected_rows = None
    for round_ in range(2):
        compute.stop()
        lsn = wp.sync()
        info = ps_env.wait_ingested(lsn)
        assert lsn_to_int(info["last_record_lsn"]) == lsn, info
        prev = lsn_to_int(info["prev_record_lsn"])
        tar = ps_env.http.basebackup(ps_env.tenant, ps_env.timeline, lsn=lsn)
        name = f"compute-{round_ + 2}"
        pg = postgres_from_basebackup(wp, name, tar, settings={})
        pg.start()
        wp.computes.append(new := Compute(wp, name, pg))
        pg.safe_psql(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
        insert = new.insert_lsn()
        assert insert > lsn, f"{name} writes at {int_to_lsn(insert)}, before {int_to_lsn(lsn)}"
        new.start_sidecar(lsn)
        count = pg.safe_psql("SELECT count(*) FROM t")[0][0]
        if expected_rows is not None:
            assert count == expected_rows, f"{name} sees {count} rows of {expected_rows}"
        if round_ == 1:
            pg.safe_psql("COMMIT PREPARED 'p1'")
        run_pgbench(
            pg_bindir,
            pg,
            test_dir.path / f"pgbench-{name}.log",
            "-t",
            "200",
            "-c",
            "2",
            timeout=300,
        )
        first = 200000 + round_ * 1000
        pg.safe_psql(
            f"INSERT INTO t SELECT g, 'r{round_}' FROM generate_series({first}, {first + 999}) g"
        )
        expected_rows = pg.safe_psql("SELECT count(*) FROM t")[0][0]
        end = wp.wait_all_caught_up(new.flush_lsn())
        waldump_across(ps_env, pg_bindir, test_dir.path / f"waldump-{name}", prev, lsn, end)
        compute = new

    end = current_record_end(compute.pg)
    ps_env.wait_ingested(end)
    detail = ps_env.detail()
    assert detail["state"] == "Active", detail
    oracle = postgres_from_basebackup(
        wp, "oracle", ps_env.http.basebackup(ps_env.tenant, ps_env.timeline, lsn=end)
    )
    oracle.start()
    assert_same_dump(pg_bindir, compute.pg, oracle)
    assert oracle.safe_psql("SELECT count(*) FROM t")[0][0] == expected_rows
    oracle.stop()


def test_basebackup_history_branches_and_bad_input(ps_env_factory, pg_bindir: Path):
    """A basebackup at an older LSN, and of a branch at it, sees the state as of that LSN;
    bad requests get clear errors, on HTTP and on the page service."""
    ps_env = ps_env_factory(config={"wait_lsn_timeout": "2s"})
    compute = ps_env.import_compute()
    pg = compute.pg
    pg.safe_psql("CREATE TABLE h (id int)")
    pg.safe_psql("INSERT INTO h SELECT generate_series(1, 100)")
    l1 = current_record_end(pg)
    pg.safe_psql("INSERT INTO h SELECT generate_series(101, 300)")
    l2 = current_record_end(pg)
    ps_env.wait_ingested(l2)
    http, t, tl = ps_env.http, ps_env.tenant, ps_env.timeline

    branch = random_id()
    http.timeline_branch(t, branch, tl, ancestor_start_lsn=l1)
    for name, data in [
        ("at-l1", http.basebackup(t, tl, lsn=l1)),
        ("branch", http.basebackup(t, branch)),
        ("at-l2", http.basebackup(t, tl, lsn=l2)),
    ]:
        old = postgres_from_basebackup(ps_env.wp, name, data)
        old.start()
        want = 300 if name == "at-l2" else 100
        assert old.safe_psql("SELECT count(*) FROM h") == [(want,)], name
        old.stop()

    def http_error(**kwargs) -> tuple[int, str]:
        with pytest.raises(PageserverApiError) as e:
            http.basebackup(**kwargs)
        return e.value.status, str(e.value)

    status, msg = http_error(tenant_id=t, timeline_id=tl, lsn=l1 + 1)
    assert status == 400 and "record boundary" in msg, msg
    status, msg = http_error(tenant_id=t, timeline_id=tl, lsn=ps_env.import_lsn - 8)
    assert status == 404 and "below the timeline's start" in msg, msg
    status, msg = http_error(tenant_id=t, timeline_id=random_id())
    assert status == 404, msg
    status, msg = http_error(tenant_id=t, timeline_id=tl, lsn=l2 + (1 << 30))
    assert status == 409 and "timed out" in msg, msg

    ps = ps_env.pageserver
    for query, want in [
        (f"basebackup {t} {tl} {int_to_lsn(l1 + 1)}", "record boundary"),
        (f"basebackup {t} {random_id()}", "timeline"),
        (f"basebackup {t} {tl} not-an-lsn", "malformed LSN"),
        (f"basebackup {t}", "usage"),
    ]:
        with PageStreamConnection(ps.host, ps.pg_port, t, tl, pagestream=False) as conn:
            with pytest.raises(Exception, match=re.escape(want)):
                conn.copy_out(query)
            # The connection goes on serving.
            assert len(conn.copy_out(f"basebackup {t} {tl} {int_to_lsn(l1)}")) > 0
