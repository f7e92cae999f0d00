"""The pageserver with real processes: 3 safekeepers, a stock PostgreSQL 15 compute with its
walproposer sidecar, NATS where the test says so, and the pageserver ingesting the compute's
WAL from the safekeepers.

A compute and its pageserver timeline agree by import (fixtures/pageserver_env.py): the
compute is initdb'ed locally, stopped cleanly, its data directory imported at the end of its
shutdown checkpoint, and it goes on writing from exactly there through the safekeepers.

The oracles: `pageserver_oracle` compares every page of every relation fork and SLRU of the
compute's data directory (after a CHECKPOINT) with GetPage at that LSN, masked by
libs/pg_oracle; `compare_relations` compares relation sizes and the database list with the
compute's catalogs; the history tests compare heap pages recorded with pageinspect, masked
as PostgreSQL's heap_mask() does (fixtures/pg_pages.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import toml

from fixtures.compute import SAFEKEEPER_DOWN, SK_TORN_TAIL, connect
from fixtures.pageserver import (
    DEFAULTTABLESPACE_OID,
    PAGE_SIZE,
    POSTGRES_DB_OID,
    RESP_DBSIZE,
    RESP_EXISTS,
    RESP_GETPAGE,
    RESP_NBLOCKS,
    RESP_SLRU,
    Pageserver,
    PageserverApiError,
    PageserverFactory,
    PageserverHttpClient,
    RelTag,
    pagestream,
    req_dbsize,
    req_exists,
    req_getpage,
    req_nblocks,
    req_slru,
    wait_timeline_state,
)
from fixtures.pageserver_env import (
    PageserverEnv,
    current_record_end,
    parse_relation_path,
)
from fixtures.pg_pages import describe_heap_difference, heap_mask, page_lsn
from fixtures.pgbench import pgbench_argv, pgbench_env, run_pgbench
from fixtures.postgres import VanillaPostgres
from fixtures.safekeeper import int_to_lsn, lsn_to_int, random_id
from fixtures.schemathesis import run_schemathesis
from fixtures.utils import pick, wait_until
from fixtures.workdir import TestDir

MiB = 1 << 20
FLUSH_FAILPOINT = "flush-after-layer-write"
# On restart the pageserver removes layer files newer than disk_consistent_lsn (a flush cut
# short); saying so at WARN level is expected after a kill.
LAYER_DISCARDED = r"(?i)\b(removing|deleting|discarding|ignoring)\b.*\blayer"


def run_sql(pg: VanillaPostgres, *statements: str, dbname: str = "postgres") -> None:
    """Each statement in its own transaction (autocommit), on one connection without a
    statement timeout (a COMMIT waits for the safekeepers' quorum)."""
    conn = connect(pg, dbname)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def lsn_of(info: dict, key: str) -> int:
    return lsn_to_int(info[key])


def expect_error(status: int | None, fn: Callable[..., Any], *args: Any, **kwargs: Any):
    """Call `fn`, which must raise PageserverApiError with `status` (None: any 4xx)."""
    with pytest.raises(PageserverApiError) as e:
        fn(*args, **kwargs)
    err = e.value
    if status is None:
        assert 400 <= err.status < 500, f"expected a 4xx, got {err}"
    else:
        assert err.status == status, f"expected {status}, got {err}"
    assert err.msg.strip(), f"HTTP {err.status} without a message"
    return err


def names_field(msg: str, field: str) -> bool:
    """`msg` names `field` (`tenant_id`, or in words: `tenant id`)."""
    return re.search(re.escape(field).replace("_", "[_ ]"), msg, re.IGNORECASE) is not None


def mentions_lsn(msg: str, lsn: int) -> bool:
    """`msg` names `lsn` (in any X/Y spelling)."""
    return any(
        lsn_to_int(m) == lsn for m in re.findall(r"\b[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}\b", msg)
    )


def check_layers_within(http: PageserverHttpClient, tenant: str, timeline: str, dcl: int) -> int:
    """No layer file beyond disk_consistent_lsn: every delta/image layer's (exclusive)
    lsn_end is at most dcl + 1. Returns the number of layers on disk."""
    layers = [layer for layer in http.layers(tenant, timeline) if layer["kind"] != "in_memory"]
    for layer in layers:
        end = lsn_to_int(layer["lsn_end"])
        assert end <= dcl + 1, (
            f"layer {layer['name']} ends at {layer['lsn_end']}, beyond disk_consistent_lsn "
            f"{int_to_lsn(dcl)}"
        )
    return len(layers)


# --- the workload of the page comparison -----------------------------------------------------

AM_ROWS = (
    "SELECT g, point(g % 100, g / 100), int4range(g, g + 10), ARRAY[g % 7, g % 11, g % 13], "
    "to_tsvector('simple', 'w' || (g % 50) || ' x' || (g % 17)), md5(g::text) "
    "FROM generate_series({lo}, {hi}) g"
)


def access_methods_sql(rows: int) -> list[str]:
    """An index of every built-in access method, built, then changed (inserts, updates,
    deletes, VACUUM) so that each method's redo runs too, not only its build's page images."""
    return [
        "CREATE TABLE am (id int NOT NULL, p point, r int4range, arr int[], doc tsvector, t text)",
        "INSERT INTO am " + AM_ROWS.format(lo=1, hi=rows),
        "CREATE INDEX am_btree ON am USING btree (id)",
        "CREATE INDEX am_hash ON am USING hash (id)",
        "CREATE INDEX am_gist_point ON am USING gist (p)",
        "CREATE INDEX am_gist_range ON am USING gist (r)",
        "CREATE INDEX am_gin_array ON am USING gin (arr)",
        "CREATE INDEX am_gin_tsvector ON am USING gin (doc)",
        "CREATE INDEX am_spgist_text ON am USING spgist (t)",
        "CREATE INDEX am_spgist_point ON am USING spgist (p)",
        "CREATE INDEX am_brin ON am USING brin (id) WITH (pages_per_range = 4)",
        "INSERT INTO am " + AM_ROWS.format(lo=rows + 1, hi=rows + rows // 2),
        "UPDATE am SET t = t || 'u', arr = arr || 99 WHERE id % 15 = 0",
        "DELETE FROM am WHERE id % 10 = 0",
        "VACUUM am",
        "SELECT brin_summarize_new_values('am_brin')",
    ]


TOAST_SQL = [
    "CREATE TABLE toasty (id int PRIMARY KEY, big text, compressible text)",
    # Out of line and uncompressed (EXTERNAL), and inline compressed.
    "ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL",
    "INSERT INTO toasty SELECT g, "
    "(SELECT string_agg(md5(g::text || '-' || s::text), '') FROM generate_series(1, 200) s), "
    "repeat('abc', 5000 + g) FROM generate_series(1, 300) g",
    "UPDATE toasty SET big = big || 'x' WHERE id % 3 = 0",
    "DELETE FROM toasty WHERE id % 7 = 0",
    "VACUUM FREEZE toasty",
]

SIZE_CHANGES_SQL = [
    # TRUNCATE: a new relfilenode, the old one dropped at commit.
    "CREATE TABLE trunc_me AS SELECT g, md5(g::text) AS m FROM generate_series(1, 20000) g",
    "CREATE INDEX trunc_me_g ON trunc_me (g)",
    "TRUNCATE trunc_me",
    "INSERT INTO trunc_me SELECT g, 'after' FROM generate_series(1, 100) g",
    # VACUUM truncating the main fork (and the FSM and VM with it).
    "CREATE TABLE shrink AS SELECT g, md5(g::text) AS m FROM generate_series(1, 30000) g",
    "VACUUM shrink",
    "DELETE FROM shrink WHERE g > 2000",
    "VACUUM shrink",
    # DROP of an index and a table.
    "CREATE TABLE dropme AS SELECT g FROM generate_series(1, 10000) g",
    "CREATE INDEX dropme_g ON dropme (g)",
    "DROP INDEX dropme_g",
    "DROP TABLE dropme",
    # Relations of an aborted transaction are dropped by its abort record.
    "BEGIN; CREATE TABLE aborted AS SELECT g FROM generate_series(1, 5000) g; ROLLBACK",
    "BEGIN; CREATE TABLE created_truncated (id int); "
    "INSERT INTO created_truncated SELECT generate_series(1, 5000); "
    "TRUNCATE created_truncated; INSERT INTO created_truncated VALUES (1); COMMIT",
    # Unlogged: only the init fork is WAL-logged.
    "CREATE UNLOGGED TABLE unlogged_t (id int PRIMARY KEY, v text)",
    "INSERT INTO unlogged_t SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
    # Rewrites: new relfilenodes.
    "CREATE MATERIALIZED VIEW mv AS SELECT g % 100 AS k, count(*) AS n "
    "FROM generate_series(1, 10000) g GROUP BY 1",
    "REFRESH MATERIALIZED VIEW mv",
    "VACUUM FULL pgbench_branches",
]


def prepared_transactions(pg: VanillaPostgres) -> None:
    """Two-phase commit: committed, rolled back, with DDL each way, and one left prepared
    (its CLOG state is in progress, and its state file is written at CHECKPOINT)."""
    run_sql(pg, "CREATE TABLE twophase (id int PRIMARY KEY, note text)")
    run_sql(pg, "BEGIN; INSERT INTO twophase VALUES (1, 'commit'); PREPARE TRANSACTION 'tx1'")
    run_sql(pg, "COMMIT PREPARED 'tx1'")
    run_sql(pg, "BEGIN; INSERT INTO twophase VALUES (2, 'abort'); PREPARE TRANSACTION 'tx2'")
    run_sql(pg, "ROLLBACK PREPARED 'tx2'")
    run_sql(pg, "BEGIN; CREATE TABLE tp_kept AS SELECT 1 AS x; PREPARE TRANSACTION 'tx3'")
    run_sql(pg, "COMMIT PREPARED 'tx3'")
    run_sql(pg, "BEGIN; CREATE TABLE tp_dropped AS SELECT 1 AS x; PREPARE TRANSACTION 'tx4'")
    run_sql(pg, "ROLLBACK PREPARED 'tx4'")
    run_sql(pg, "BEGIN; INSERT INTO twophase VALUES (3, 'open'); PREPARE TRANSACTION 'tx_open'")


def multixacts(pg: VanillaPostgres, rows: int) -> None:
    """Multixacts: two sessions share-locking every row, then a key-share locker and a
    non-key updater on the same rows (members with an update)."""
    run_sql(
        pg,
        "CREATE TABLE mx (id int PRIMARY KEY, v int)",
        f"INSERT INTO mx SELECT g, 0 FROM generate_series(1, {rows}) g",
    )
    sessions = [connect(pg) for _ in range(4)]
    try:
        for conn in sessions:
            conn.autocommit = False
        s1, s2, s3, s4 = (conn.cursor() for conn in sessions)
        s1.execute("SELECT id FROM mx FOR SHARE")
        s2.execute("SELECT id FROM mx FOR SHARE")
        sessions[0].commit()
        sessions[1].commit()
        s3.execute("SELECT id FROM mx WHERE id % 2 = 0 FOR KEY SHARE")
        s4.execute("UPDATE mx SET v = 2 WHERE id % 4 = 0")
        sessions[3].commit()
        sessions[2].commit()
    finally:
        for conn in sessions:
            conn.close()
    [(multi,)] = pg.safe_psql("SELECT next_multixact_id FROM pg_control_checkpoint()")
    print(f"next multixact id at the last checkpoint: {multi}")


def databases(pg: VanillaPostgres) -> None:
    """CREATE DATABASE both ways (WAL_LOG copies pages through the WAL; FILE_COPY logs one
    record and the pageserver copies the template's keys), and a dropped database."""
    run_sql(pg, "CREATE DATABASE db_wal_log STRATEGY = WAL_LOG")
    run_sql(
        pg,
        "CREATE TABLE in_db (id int PRIMARY KEY, v text)",
        "INSERT INTO in_db SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
        dbname="db_wal_log",
    )
    run_sql(pg, "CREATE DATABASE db_file_copy TEMPLATE db_wal_log STRATEGY = FILE_COPY")
    run_sql(pg, "UPDATE in_db SET v = 'changed' WHERE id <= 100", dbname="db_file_copy")
    run_sql(pg, "CREATE DATABASE db_dropped")
    run_sql(pg, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)", dbname="db_dropped")
    run_sql(pg, "DROP DATABASE db_dropped")


def varied_workload(pg: VanillaPostgres, pg_bindir: Path, test_dir: TestDir) -> None:
    started = time.monotonic()
    run_pgbench(
        pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "2", "-q", timeout=180
    )
    seconds = str(pick(5, 60))
    args = ["-c", "4", "-j", "2", "-T", seconds]
    run_pgbench(pg_bindir, pg, test_dir.path / "pgbench-run.log", *args, timeout=240)
    run_sql(pg, *access_methods_sql(pick(10_000, 100_000)))
    run_sql(pg, *TOAST_SQL)
    run_sql(pg, *SIZE_CHANGES_SQL)
    prepared_transactions(pg)
    multixacts(pg, pick(3000, 30_000))
    databases(pg)
    run_sql(pg, "VACUUM")
    print(f"workload: {time.monotonic() - started:.1f}s")


# --- pages are PostgreSQL's pages ------------------------------------------------------------


def test_pageserver_pages_are_postgres_pages(
    ps_env: PageserverEnv, pg_bindir: Path, test_dir: TestDir
):
    """A varied workload (pgbench, an index of every built-in access method, TOAST, VACUUM,
    TRUNCATE, DROP, CREATE DATABASE both ways, prepared transactions, multixacts), then a
    CHECKPOINT of the compute: once the pageserver has the WAL end after it, every page of
    every relation fork and every SLRU page of the compute's data directory equals GetPage at
    that LSN (masked), and the relation sizes and databases are the compute's."""
    env = ps_env
    compute = env.import_compute()
    pg = compute.pg
    varied_workload(pg, pg_bindir, test_dir)
    lsn = env.checkpoint_and_wait()
    result = env.run_oracle(lsn).check()
    assert result.pages > 2000 and result.relations > 100, result
    env.compare_relations(lsn).check()
    info = env.detail()
    print(
        f"WAL {int_to_lsn(env.import_lsn)}..{int_to_lsn(lsn)} "
        f"({(lsn - env.import_lsn) / MiB:.0f} MiB) ingested; "
        f"logical size {info.get('current_logical_size')}"
    )


@pytest.mark.allowed_errors(SK_TORN_TAIL)
def test_pageserver_ingest_via_nats(ps_env_nats: PageserverEnv, pg_bindir: Path, test_dir: TestDir):
    """With a broker the pageserver finds the safekeepers through their NATS heartbeats (no
    static list); when the safekeeper it streams from is killed it switches to another one,
    and the pages still match."""
    env = ps_env_nats
    env.wp.sidecar_allowed_errors += SAFEKEEPER_DOWN
    compute = env.import_compute(tenant_config={"walreceiver_connect_timeout": "2s"})
    assert "safekeepers" not in env.tenant_config()
    pg = compute.pg
    run_pgbench(
        pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "1", "-q", timeout=120
    )
    env.wait_ingested(current_record_end(pg))

    def connected_to() -> str | None:
        return env.detail()["walreceiver"].get("connected_to")

    first = wait_until(connected_to, timeout=30, what="the walreceiver connected")
    by_addr = {sk.pg_addr: sk for sk in env.safekeepers}
    assert first in by_addr, f"connected to {first}, not one of {sorted(by_addr)}"
    victim = by_addr[first]
    switches = env.detail()["walreceiver"]["switches"]
    # Whatever the pageserver says about losing that safekeeper is expected.
    env.pageserver.allowed_errors.append(re.escape(victim.pg_addr))
    victim.stop(immediate=True)
    run_pgbench(pg_bindir, pg, test_dir.path / "pgbench-run.log", "-c", "2", "-T", "5", timeout=120)
    second = wait_until(
        lambda: (addr := connected_to()) not in (None, first) and addr,
        timeout=60,
        what="the walreceiver switched safekeepers",
    )
    lsn = env.checkpoint_and_wait()
    assert env.detail()["walreceiver"]["switches"] > switches
    print(f"walreceiver: {first} -> {second}")
    victim.start()
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()


# --- history and branches --------------------------------------------------------------------


@dataclass(frozen=True)
class TableSnapshot:
    """A table's main fork as the compute had it at `lsn` (pages read with pageinspect)."""

    lsn: int
    rel: RelTag
    pages: list[bytes]


def snapshot_table(pg: VanillaPostgres, table: str) -> TableSnapshot:
    lsn = current_record_end(pg)
    [(path, nblocks)] = pg.safe_psql(
        f"SELECT pg_relation_filepath('{table}'), pg_relation_size('{table}') / {PAGE_SIZE}"
    )
    rows = pg.safe_psql(
        f"SELECT b, get_raw_page('{table}', b) FROM generate_series(0, {nblocks} - 1) b ORDER BY b"
    )
    pages = [bytes(page) for _, page in rows]
    assert len(pages) == nblocks
    return TableSnapshot(lsn, (*parse_relation_path(path), 0), pages)


def write_history(pg: VanillaPostgres) -> tuple[int, list[TableSnapshot]]:
    """A heap table written in batches; returns the LSN before it existed and its snapshots
    at L0 (empty) < L1 < L2 < L3 (L3 smaller than L2: VACUUM truncated it).

    Each batch ends with VACUUM FREEZE, and the table has autovacuum off, so the recorded
    pages hold no hint bits that the WAL lacks (frozen tuples; the prune/vacuum records are
    all logged): the masked comparison then only ignores what PostgreSQL's own heap_mask
    does, and on frozen tuples that is little more than the page LSN, checksum and
    free-space hints. fillfactor 70 makes the updates HOT (same page), so old pages change
    in place and their old versions are history that must be kept.
    """
    before = current_record_end(pg)
    run_sql(
        pg,
        "CREATE TABLE hist (id int PRIMARY KEY, v text) "
        "WITH (fillfactor = 70, autovacuum_enabled = off)",
    )
    snaps = [snapshot_table(pg, "hist")]
    run_sql(
        pg,
        "INSERT INTO hist SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, 3000) g",
        "VACUUM FREEZE hist",
    )
    snaps.append(snapshot_table(pg, "hist"))
    run_sql(
        pg,
        "UPDATE hist SET v = v || 'x' WHERE id % 4 = 0",
        "INSERT INTO hist SELECT g, md5(g::text) FROM generate_series(3001, 4000) g",
        "VACUUM FREEZE hist",
    )
    snaps.append(snapshot_table(pg, "hist"))
    run_sql(pg, "DELETE FROM hist WHERE id > 1500", "VACUUM FREEZE hist")
    snaps.append(snapshot_table(pg, "hist"))
    lsns = [s.lsn for s in snaps]
    assert before < lsns[0] < lsns[1] < lsns[2] < lsns[3], lsns
    sizes = [len(s.pages) for s in snaps]
    assert sizes[0] == 0 and sizes[1] > 0 and sizes[2] > sizes[1] > sizes[3] > 0, sizes
    return before, snaps


def check_snapshot(
    http: PageserverHttpClient,
    tenant: str,
    timeline: str,
    snap: TableSnapshot,
    lsn: int | None,
) -> list[bytes]:
    """GetPage of every block of `snap`'s table on `timeline` at `lsn` (None: its head)
    equals the recorded page after heap masking, with a page LSN not after the snapshot's;
    the size is the recorded one and the next block does not exist. Returns the pages."""
    sizes = http.relation_sizes(tenant, timeline, lsn)
    assert sizes.get(snap.rel) == len(snap.pages), (
        f"{timeline} at {lsn and int_to_lsn(lsn)}: {sizes.get(snap.rel)} blocks, "
        f"the compute had {len(snap.pages)} at {int_to_lsn(snap.lsn)}"
    )
    got = []
    for blkno, expected in enumerate(snap.pages):
        page = http.getpage(tenant, timeline, snap.rel, blkno, lsn)
        assert len(page) == PAGE_SIZE
        diff = describe_heap_difference(expected, page, blkno)
        assert diff is None, f"{timeline} at {int_to_lsn(snap.lsn)}: {diff}"
        assert page_lsn(page) <= snap.lsn, f"block {blkno}: page LSN {page_lsn(page):X}"
        got.append(page)
    expect_error(404, http.getpage, tenant, timeline, snap.rel, len(snap.pages), lsn)
    return got


def test_pageserver_history(ps_env: PageserverEnv):
    """A table's pages and size recorded at L0 < L1 < L2 < L3 on the compute are what GetPage
    returns at each of those LSNs after the table moved on; before its creation the relation
    does not exist."""
    env = ps_env
    compute = env.import_compute()
    pg = compute.pg
    run_sql(pg, "CREATE EXTENSION pageinspect")
    before, snaps = write_history(pg)
    run_sql(pg, "UPDATE hist SET v = 'later' WHERE id % 2 = 0")
    env.wait_ingested(current_record_end(pg))
    http, tenant, timeline = env.http, env.tenant, env.timeline

    rel = snaps[0].rel
    assert rel not in http.relation_sizes(tenant, timeline, before)
    expect_error(404, http.getpage, tenant, timeline, rel, 0, before)
    for snap in snaps:
        check_snapshot(http, tenant, timeline, snap, snap.lsn)
    latest = http.getpage(tenant, timeline, rel, 0)
    assert heap_mask(latest, 0) != heap_mask(snaps[-1].pages[0], 0), "the table moved on"
    print("history: " + ", ".join(f"{len(s.pages)} blocks at {int_to_lsn(s.lsn)}" for s in snaps))


def test_pageserver_branches(ps_env: PageserverEnv):
    """Branches at L1, L2, L3 and a branch of a branch: each reads, at its head, the parent's
    pages at its branch point while the parent moves on. A branch at the parent's head while
    ingest runs sees exactly the state at its LSN. Invalid branch points are refused with a
    reason; a timeline with children cannot be deleted."""
    env = ps_env
    compute = env.import_compute()
    pg = compute.pg
    http, tenant, main = env.http, env.tenant, env.timeline
    run_sql(pg, "CREATE EXTENSION pageinspect")
    _, snaps = write_history(pg)
    env.wait_ingested(snaps[-1].lsn)

    branches: dict[str, tuple[TableSnapshot, str]] = {}
    for i in (1, 2, 3):
        tl = random_id()
        info = http.timeline_branch(tenant, tl, main, snaps[i].lsn)
        assert info["ancestor_timeline_id"] == main, info
        assert lsn_of(info, "ancestor_lsn") == snaps[i].lsn, info
        assert lsn_of(info, "last_record_lsn") == snaps[i].lsn, info
        branches[f"L{i}"] = (snaps[i], tl)
    l2_branch = branches["L2"][1]
    child = random_id()
    info = http.timeline_branch(tenant, child, l2_branch)  # default: the ancestor's head
    assert info["ancestor_timeline_id"] == l2_branch, info
    assert lsn_of(info, "ancestor_lsn") == snaps[2].lsn, info
    branches["L2's branch"] = (snaps[2], child)

    # The parent moves on.
    run_sql(
        pg,
        "UPDATE hist SET v = 'moved on' WHERE id % 3 = 0",
        "INSERT INTO hist SELECT g, 'new' FROM generate_series(5001, 6000) g",
    )
    env.wait_ingested(current_record_end(pg))
    for what, (snap, tl) in branches.items():
        pages = check_snapshot(http, tenant, tl, snap, None)
        for blkno, page in enumerate(pages):
            parent = http.getpage(tenant, main, snap.rel, blkno, snap.lsn)
            assert page == parent, f"{what}: block {blkno} is not the parent's at its LSN"
        assert lsn_of(http.timeline_detail(tenant, tl), "last_record_lsn") == snap.lsn
    rel = snaps[0].rel
    assert http.relation_sizes(tenant, main)[rel] > len(snaps[3].pages)

    # A branch at the parent's head while the compute writes and the pageserver ingests.
    run_sql(pg, "CREATE TABLE live (id int PRIMARY KEY, payload text)")
    [(live_path,)] = pg.safe_psql("SELECT pg_relation_filepath('live')")
    live_rel = (*parse_relation_path(live_path), 0)
    stop = threading.Event()
    written = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            conn = connect(pg)
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute("INSERT INTO live VALUES (%s, repeat('p', 300))", (written[0] + 1,))
                    written[0] += 1
            conn.close()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=writer, name="live-writer", daemon=True)
    thread.start()
    try:
        wait_until(lambda: written[0] >= 300, timeout=60, what="300 rows in live")
        seen = lsn_of(env.detail(), "last_record_lsn")
        live_branch = random_id()
        info = http.timeline_branch(tenant, live_branch, main)
        at = lsn_of(info, "ancestor_lsn")
        rows_at_branch = written[0]
        wait_until(lambda: written[0] >= rows_at_branch + 100, timeout=60, what="100 more rows")
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert seen <= at, f"branched at {int_to_lsn(at)}, below the {int_to_lsn(seen)} seen before"
    env.wait_ingested(current_record_end(pg))
    on_branch = http.relation_sizes(tenant, live_branch)
    assert on_branch == http.relation_sizes(tenant, main, at), "relations differ from parent's"
    differs = http.relation_sizes(tenant, main)[live_rel] != on_branch[live_rel]
    for blkno in range(on_branch[live_rel]):
        page = http.getpage(tenant, live_branch, live_rel, blkno)
        assert page == http.getpage(tenant, main, live_rel, blkno, at), f"live block {blkno}"
        differs = differs or page != http.getpage(tenant, main, live_rel, blkno)
    assert differs, "the parent did not move on after the branch point"
    print(f"live branch at {int_to_lsn(at)}: {on_branch[live_rel]} blocks of live")

    # Invalid branch points: 400 with a reason, and nothing created.
    timelines = {t["timeline_id"] for t in http.timeline_list(tenant)}
    head = lsn_of(env.detail(), "last_record_lsn")
    invalid = [
        ("below the timeline's start", main, (env.import_lsn - 0x1000) & ~7),
        ("above the last record LSN", main, head + (1 << 30)),
        ("not on a record boundary (unaligned)", main, snaps[1].lsn + 1),
        ("below the branch's own start", l2_branch, snaps[1].lsn),
    ]
    for what, ancestor, lsn in invalid:
        err = expect_error(400, http.timeline_branch, tenant, random_id(), ancestor, lsn)
        assert mentions_lsn(err.msg, lsn), f"{what}: the reason does not name the LSN: {err.msg!r}"
        print(f"{what} ({int_to_lsn(lsn)}): {err.msg}")
    # The path's tenant exists; the body names an ancestor that does not: 409.
    expect_error(409, http.timeline_branch, tenant, random_id(), random_id())
    expect_error(409, http.timeline_branch, tenant, child, main)
    err = expect_error(400, http.timeline_branch, tenant, random_id(), main, "not-an-lsn")
    assert names_field(err.msg, "ancestor_start_lsn"), err.msg
    assert {t["timeline_id"] for t in http.timeline_list(tenant)} == timelines

    # Deletion: not while a branch depends on it.
    expect_error(409, http.timeline_delete, tenant, l2_branch)
    http.timeline_delete(tenant, child)
    http.timeline_delete(tenant, l2_branch)

    def gone() -> bool:
        try:
            http.timeline_detail(tenant, l2_branch)
        except PageserverApiError as e:
            return e.status == 404
        return False

    wait_until(gone, timeout=30, what="the deleted branch is gone")
    assert l2_branch not in {t["timeline_id"] for t in http.timeline_list(tenant)}
    check_snapshot(http, tenant, branches["L3"][1], snaps[3], None)


# --- restart ---------------------------------------------------------------------------------


@pytest.mark.allowed_errors(LAYER_DISCARDED)
def test_pageserver_kill9_restart(ps_env: PageserverEnv, pg_bindir: Path, test_dir: TestDir):
    """kill -9 the pageserver at random moments during pgbench (small layers, so flushes are
    frequent): each time it restarts from its disk_consistent_lsn and ingest resumes, and at
    the end the pages equal the compute's."""
    env = ps_env
    compute = env.import_compute(
        tenant_config={"checkpoint_distance": 2 * MiB, "checkpoint_timeout": "3s"}
    )
    pg = compute.pg
    ps, http = env.pageserver, env.http
    run_pgbench(
        pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "2", "-q", timeout=180
    )
    kills_wanted = pick(5, 20)
    duration = pick(35, 150)
    seed = random.randrange(1 << 32)
    print(f"kill schedule seed {seed}")
    rng = random.Random(seed)
    kills = []
    args = ["-c", "4", "-j", "2", "-T", str(duration), "-P", "5"]
    with (
        open(test_dir.path / "pgbench-run.log", "w") as bench_log,
        subprocess.Popen(
            pgbench_argv(pg_bindir, pg, *args),
            cwd=test_dir.path,
            env=pgbench_env(),
            stdin=subprocess.DEVNULL,
            stdout=bench_log,
            stderr=subprocess.STDOUT,
        ) as bench,
    ):
        try:
            while len(kills) < kills_wanted:
                time.sleep(rng.uniform(1.0, 3.0))
                before = env.detail()
                ps.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                ps.start()
                after = wait_timeline_state(http, env.tenant, env.timeline, "Active")
                dcl = lsn_of(after, "disk_consistent_lsn")
                assert dcl >= lsn_of(before, "disk_consistent_lsn"), (before, after)
                assert lsn_of(after, "last_record_lsn") >= dcl, after
                last = lsn_of(before, "last_record_lsn")
                wait_until(
                    lambda last=last: lsn_of(env.detail(), "last_record_lsn") > last,
                    timeout=60,
                    what="ingest resumed",
                )
                kills.append(
                    (
                        int_to_lsn(lsn_of(before, "last_record_lsn")),
                        int_to_lsn(dcl),
                        bench.poll() is None,
                    )
                )
            bench.wait(timeout=duration + 120)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
    out = (test_dir.path / "pgbench-run.log").read_text()
    assert bench.returncode == 0, out[-3000:]
    print("kills (last_record_lsn before, disk_consistent_lsn after restart, under load):")
    for kill in kills:
        print(f"  {kill}")
    assert sum(1 for k in kills if k[2]) >= 3, "most kills must land while pgbench runs"

    lsn = env.checkpoint_and_wait()
    http.timeline_checkpoint(env.tenant, env.timeline)
    dcl = lsn_of(env.detail(), "disk_consistent_lsn")
    assert dcl >= lsn
    layers = check_layers_within(http, env.tenant, env.timeline, dcl)
    print(f"{layers} layers on disk, disk_consistent_lsn {int_to_lsn(dcl)}")
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()


@pytest.mark.parametrize("action", ["exit", "return"])
def test_pageserver_half_written_flush(ps_env: PageserverEnv, action: str, allowed_errors):
    """The failpoint between writing a layer file and persisting the metadata: with `exit`
    the process dies there, with `return` the flush fails and the process is then killed.
    After the restart disk_consistent_lsn is the one before, the half-written layer is gone
    (none beyond disk_consistent_lsn), ingest resumes and the pages are right."""
    allowed_errors += [re.escape(FLUSH_FAILPOINT), LAYER_DISCARDED]
    env = ps_env
    compute = env.import_compute()  # default tenant config: only our checkpoints flush
    pg = compute.pg
    ps, http, tenant, timeline = env.pageserver, env.http, env.tenant, env.timeline
    run_sql(
        pg,
        "CREATE TABLE fp (id int PRIMARY KEY, v text)",
        "INSERT INTO fp SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    )
    first = current_record_end(pg)
    env.wait_ingested(first)
    http.timeline_checkpoint(tenant, timeline)
    dcl = lsn_of(env.detail(), "disk_consistent_lsn")
    assert dcl >= first
    run_sql(
        pg,
        "UPDATE fp SET v = v || 'x' WHERE id % 2 = 0",
        "INSERT INTO fp SELECT g, 'second' FROM generate_series(20001, 40000) g",
    )
    second = current_record_end(pg)
    env.wait_ingested(second)

    tl_dir = ps.timeline_dir(tenant, timeline)
    files_before = set(os.listdir(tl_dir))
    http.configure_failpoints((FLUSH_FAILPOINT, action))
    if action == "exit":
        with pytest.raises(requests.RequestException):
            http.timeline_checkpoint(tenant, timeline)
        wait_until(lambda: not ps.is_running(), timeout=30, what="the pageserver exited")
        assert ps.returncode == 1, f"exit status {ps.returncode}"
    else:
        with pytest.raises(PageserverApiError) as e:
            http.timeline_checkpoint(tenant, timeline)
        assert e.value.status >= 500, e.value
        print(f"checkpoint with the failpoint: {e.value}")
        ps.kill()
    written = sorted(set(os.listdir(tl_dir)) - files_before)
    print(f"files written by the cut-short flush: {written}")
    if action == "exit":
        assert written, "the flush wrote no layer file before the failpoint"

    ps.start()
    info = wait_timeline_state(http, tenant, timeline, "Active")
    assert lsn_of(info, "disk_consistent_lsn") == dcl, info
    for name in written:
        assert not (tl_dir / name).exists(), f"{name} of the half-written flush is still there"
    check_layers_within(http, tenant, timeline, dcl)
    for layer in http.layers(tenant, timeline):
        if layer["kind"] != "in_memory":
            assert (tl_dir / layer["name"]).is_file(), f"layer {layer['name']} has no file"

    env.wait_ingested(second)
    lsn = env.checkpoint_and_wait()
    http.timeline_checkpoint(tenant, timeline)
    assert lsn_of(env.detail(), "disk_consistent_lsn") >= lsn
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()


# --- bad input -------------------------------------------------------------------------------


def bootstrap(http: PageserverHttpClient) -> tuple[str, str, dict]:
    """A tenant and a timeline bootstrapped by the pageserver's own initdb."""
    tenant, timeline = random_id(), random_id()
    assert http.tenant_create(tenant)["id"] == tenant
    info = http.timeline_create(tenant, timeline, pg_version=15)
    assert info["timeline_id"] == timeline, info
    assert str(info["pg_version"]).startswith("15"), info
    info = wait_timeline_state(http, tenant, timeline, "Active")
    assert info["initdb_lsn"] == info["last_record_lsn"], info
    return tenant, timeline, info


def biggest_relation(http: PageserverHttpClient, tenant: str, timeline: str) -> tuple[RelTag, int]:
    """The largest main fork of the `postgres` database."""
    sizes = http.relation_sizes(tenant, timeline)
    rel, n = max(
        ((k, n) for k, n in sizes.items() if k[1] == POSTGRES_DB_OID and k[3] == 0),
        key=lambda item: item[1],
    )
    assert n > 0
    return rel, n


@pytest.mark.allowed_errors(r"request failed: timed out after 1s waiting for WAL")
def test_pageserver_http_bad_input(pageserver: Pageserver, test_dir: TestDir):
    """Unknown tenants and timelines: 404. Malformed JSON, ids, LSNs and values: 400 naming
    the field. Duplicates: 409. GetPage of a missing relation or a block past the end: 404.
    A read above last_record_lsn: 409 after its timeout. Nothing refused changes anything."""
    http = pageserver.http
    tenant, timeline, info = bootstrap(http)
    unknown = random_id()

    for fn, args in [
        (http.tenant_status, (unknown,)),
        (http.tenant_config, (unknown,)),
        (http.tenant_delete, (unknown,)),
        (http.timeline_list, (unknown,)),
        (http.timeline_detail, (unknown, timeline)),
        (http.timeline_detail, (tenant, unknown)),
        (http.timeline_delete, (tenant, unknown)),
        (http.timeline_checkpoint, (tenant, unknown)),
        (http.wait_lsn, (tenant, unknown, "0/1000000")),
        (http.layers, (tenant, unknown)),
        (http.relations, (tenant, unknown)),
        (http.timeline_create, (unknown, random_id())),
    ]:
        expect_error(404, fn, *args)
    # An unknown ancestor in the body (the path's tenant exists) is a conflict, not a 404.
    expect_error(409, http.timeline_branch, tenant, random_id(), unknown)

    json_header = {"Content-Type": "application/json"}
    cases: list[tuple[str | None, Callable[[], Any]]] = [
        ("tenant_id", lambda: http.tenant_status("not-a-tenant-id")),
        ("timeline_id", lambda: http.timeline_detail(tenant, "xyz")),
        ("timeline_id", lambda: http.timeline_detail(tenant, timeline[:-2])),
        (None, lambda: http.request("POST", "/v1/tenant", data="{", headers=json_header)),
        ("tenant_id", lambda: http.tenant_create("zz" * 16)),
        (
            "new_timeline_id",
            lambda: http.request(
                "POST", f"/v1/tenant/{tenant}/timeline", json={"new_timeline_id": 5}
            ),
        ),
        ("ancestor_timeline_id", lambda: http.timeline_branch(tenant, random_id(), "xyz")),
        (
            "ancestor_start_lsn",
            lambda: http.timeline_branch(tenant, random_id(), timeline, "0/zz"),
        ),
        ("lsn", lambda: http.wait_lsn(tenant, timeline, "bogus")),
        ("no_such_key", lambda: http.tenant_config_set(tenant, {"no_such_key": 1})),
        (
            "checkpoint_distance",
            lambda: http.tenant_config_set(tenant, {"checkpoint_distance": "big"}),
        ),
        ("actions", lambda: http.request("PUT", "/v1/failpoints", json=[{"name": "x"}])),
    ]
    rel, nblocks = biggest_relation(http, tenant, timeline)
    getpage_path = f"/v1/tenant/{tenant}/timeline/{timeline}/getpage"
    page_params = dict(zip(("spcnode", "dbnode", "relnode", "forknum"), rel, strict=True))
    for param, bad in [("forknum", 9), ("blkno", -1), ("relnode", "x"), ("lsn", "1/2/3")]:
        params = {**page_params, "blkno": 0, param: bad}
        cases.append(
            (param, lambda params=params: http.request("GET", getpage_path, params=params))
        )
    unnamed = []
    for field, call in cases:
        err = expect_error(400, call)
        if field is not None and not names_field(err.msg, field):
            unnamed.append(f"{field}: {err.msg!r}")
    assert not unnamed, "400 answers that do not name the field:\n" + "\n".join(unnamed)

    expect_error(409, http.tenant_create, tenant)
    expect_error(409, http.timeline_create, tenant, timeline)
    expect_error(409, http.timeline_branch, tenant, timeline, timeline)

    page = http.getpage(tenant, timeline, rel, 0)
    assert len(page) == PAGE_SIZE and page != bytes(PAGE_SIZE)
    expect_error(404, http.getpage, tenant, timeline, rel, nblocks)
    expect_error(
        404, http.getpage, tenant, timeline, (DEFAULTTABLESPACE_OID, 5, 4_000_000_000, 0), 0
    )
    expect_error(404, http.getpage, tenant, timeline, (*rel[:3], 3), 0)  # no init fork

    head = lsn_of(info, "last_record_lsn")
    started = time.monotonic()
    expect_error(409, http.wait_lsn, tenant, timeline, head + (1 << 30), "1s")
    assert time.monotonic() - started < 20

    empty = test_dir.subdir("not-a-data-directory")
    for path in [Path("/nonexistent/strata/pgdata"), empty]:
        err = expect_error(None, http.timeline_import, tenant, random_id(), path)
        print(f"import of {path}: {err}")

    assert [t["timeline_id"] for t in http.timeline_list(tenant)] == [timeline]
    assert [t["id"] for t in http.tenant_list()] == [tenant]
    assert http.getpage(tenant, timeline, rel, 0) == page
    assert http.status()["id"] == 1
    assert http.metrics().strip()


def parse_duration(value: Any) -> float:
    """Seconds of "10m", "7d", "300s", "1h 30m" (humantime) or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", str(value)):
        total += float(number) * units[unit]
    return total


TENANT_CONFIG_DEFAULTS = {
    "checkpoint_distance": 268435456,
    "checkpoint_timeout": "10m",
    "gc_horizon": 67108864,
    "pitr_interval": "7d",
    "compaction_threshold": 10,
    "compaction_target_size": 134217728,
    "image_creation_threshold": 3,
    "walreceiver_connect_timeout": "10s",
    "max_lsn_wal_lag": 1073741824,
    "safekeepers": [],
}


def check_config(response: dict, expected: dict) -> None:
    """The effective config in a GET …/config answer (`{"overrides", "effective"}`, or the
    effective config itself) has the expected values."""
    config = response.get("effective", response)
    for key, value in expected.items():
        assert key in config, f"{key} missing from {config}"
        if isinstance(value, str):
            assert parse_duration(config[key]) == parse_duration(value), (key, config[key])
        else:
            assert config[key] == value, (key, config[key])


def test_pageserver_init_and_tenant_config(pageserver_factory: PageserverFactory):
    """--init writes pageserver.toml and identity.toml and refuses to run again; the
    pageserver reports its id and writes its pid file; tenant config: the defaults, the
    overrides given at creation or with PUT, kept across a restart; SIGTERM exits 0."""
    ps = pageserver_factory.create(3)
    ps.init()
    ps.allowed_errors.append(r"(?i)(identity|pageserver)\.toml")  # what the refusal names
    again = ps.run(*ps.init_argv()[1:])
    assert again.returncode != 0, "a second --init must refuse"
    ps.start()
    assert ps.http.status()["id"] == 3
    assert ps.own_pid_file.read_text().strip() == str(ps.pid)

    http = ps.http
    plain, tuned = random_id(), random_id()
    http.tenant_create(plain)
    check_config(http.tenant_config(plain), TENANT_CONFIG_DEFAULTS)
    created = {"checkpoint_distance": 4 * MiB, "compaction_threshold": 5}
    http.tenant_create(tuned, config=created)
    check_config(http.tenant_config(tuned), {**TENANT_CONFIG_DEFAULTS, **created})
    # The body of PUT is the whole set of overrides (so it repeats compaction_threshold).
    overrides = {"checkpoint_distance": 8 * MiB, "compaction_threshold": 5, "gc_horizon": 1024}
    http.tenant_config_set(tuned, overrides)
    expected = {**TENANT_CONFIG_DEFAULTS, **overrides}
    check_config(http.tenant_config(tuned), expected)
    assert ps.stop() == 0
    ps.start()
    check_config(http.tenant_config(plain), TENANT_CONFIG_DEFAULTS)
    check_config(http.tenant_config(tuned), expected)
    assert {t["id"] for t in http.tenant_list()} == {plain, tuned}
    assert ps.stop() == 0


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "wrong_type_in_tenant_config"])
def test_pageserver_broken_config(pageserver_factory: PageserverFactory, case: str):
    """A pageserver.toml with an unknown key or a value of the wrong type: the pageserver
    exits non-zero with one line on stderr naming the key and the file."""
    ps = pageserver_factory.create(1)
    ps.init()
    data = toml.loads(ps.config_path.read_text())
    if case == "unknown_key":
        key = "bogus_key"
        data[key] = 1
    elif case == "wrong_type":
        key = "page_cache_size"
        data[key] = "lots"
    else:
        key = "checkpoint_distance"
        data.setdefault("tenant_config", {})[key] = "big"
    ps.config_path.write_text(toml.dumps(data))
    ps.allowed_errors.append(re.escape(key))
    result = ps.run("--workdir", str(ps.workdir), timeout=30)
    print(f"exit {result.returncode}, stderr: {result.stderr!r}")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{result.stderr}"
    assert key in lines[0] and "pageserver.toml" in lines[0], lines[0]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_pageserver_corrupt_files(pageserver: Pageserver, allowed_errors: list[str]):
    """After a restart, a timeline whose layer file or metadata file is corrupt is Broken with
    the file named in its reason, reads from it fail (never a wrong page), and the other
    tenants serve as before."""
    ps, http = pageserver, pageserver.http
    t_layer, tl_layer, _ = bootstrap(http)
    t_meta, tl_meta, _ = bootstrap(http)
    t_ok, tl_ok, _ = bootstrap(http)
    rel, _ = biggest_relation(http, t_ok, tl_ok)
    page_ok = http.getpage(t_ok, tl_ok, rel, 0)

    on_disk = [layer for layer in http.layers(t_layer, tl_layer) if layer["kind"] != "in_memory"]
    assert on_disk, "bootstrap wrote no layer"
    layer = max(on_disk, key=lambda item: item["size"])
    layer_path = ps.timeline_dir(t_layer, tl_layer) / layer["name"]
    meta_path = ps.metadata_path(t_meta, tl_meta)
    assert layer_path.is_file() and meta_path.is_file()
    allowed_errors += [re.escape(x) for x in (t_layer, tl_layer, t_meta, tl_meta, layer["name"])]

    assert ps.stop() == 0
    size = layer_path.stat().st_size
    flip_byte(layer_path, size - 64)  # in the index or the trailing checksum
    flip_byte(meta_path, meta_path.stat().st_size // 2)
    ps.start()

    wait_timeline_state(http, t_ok, tl_ok, "Active")
    assert http.getpage(t_ok, tl_ok, rel, 0) == page_ok

    def broken_reason(tenant: str, timeline: str) -> str | None:
        status = http.tenant_status(tenant)
        if status["state"] == "Broken":
            return status.get("broken_reason") or "(no reason)"
        with contextlib.suppress(PageserverApiError):
            info = http.timeline_detail(tenant, timeline)
            if info["state"] == "Broken":
                return info.get("broken_reason") or "(no reason)"
        # A layer may be verified when first read: read from it.
        with contextlib.suppress(PageserverApiError):
            http.getpage(tenant, timeline, rel, 0)
        return None

    reason = wait_until(lambda: broken_reason(t_layer, tl_layer), timeout=30, what="Broken")
    print(f"corrupt layer: {reason}")
    assert layer["name"] in reason, reason
    reason = wait_until(lambda: broken_reason(t_meta, tl_meta), timeout=30, what="Broken")
    print(f"corrupt metadata: {reason}")
    assert f"{tl_meta}/metadata" in reason, reason
    for tenant, timeline in [(t_layer, tl_layer), (t_meta, tl_meta)]:
        with pytest.raises(PageserverApiError) as e:
            http.getpage(tenant, timeline, rel, 0)
        err = e.value
        assert err.status >= 400, err

    assert http.tenant_status(t_ok)["state"] == "Active"
    assert {t["id"] for t in http.tenant_list()} == {t_layer, t_meta, t_ok}
    assert http.getpage(t_ok, tl_ok, rel, 0) == page_ok


def test_pageserver_page_service(pageserver: Pageserver):
    """`pagestream` on the libpq port: exists, nblocks, getpage, dbsize and SLRU segments give
    what the HTTP debug routes give; many requests sent before any answer are answered in
    order; a bad request gets an error response and the connection goes on serving."""
    ps, http = pageserver, pageserver.http
    tenant, timeline, info = bootstrap(http)
    lsn = lsn_of(info, "last_record_lsn")
    rel, nblocks = biggest_relation(http, tenant, timeline)
    missing = (DEFAULTTABLESPACE_OID, POSTGRES_DB_OID, 4_000_000_000, 0)
    http_pages = [http.getpage(tenant, timeline, rel, b, lsn) for b in range(min(nblocks, 32))]

    with pagestream(ps, tenant, timeline) as conn:
        assert conn.request(req_exists(rel, lsn)).expect(RESP_EXISTS) == b"\x01"
        assert conn.request(req_exists(missing, lsn)).expect(RESP_EXISTS) == b"\x00"
        body = conn.request(req_nblocks(rel, lsn)).expect(RESP_NBLOCKS)
        assert int.from_bytes(body, "big") == nblocks
        assert conn.request(req_getpage(rel, 0, lsn)).expect(RESP_GETPAGE) == http_pages[0]

        # Pipelined: every request written before the first answer is read.
        reqs = [req_getpage(rel, b, lsn) for b in range(len(http_pages))]
        reqs.append(req_nblocks(rel, lsn))
        conn.send_many(reqs)
        answers = [conn.recv() for _ in reqs]
        for b, answer in enumerate(answers[:-1]):
            assert answer.expect(RESP_GETPAGE) == http_pages[b], f"block {b} out of order?"
        assert int.from_bytes(answers[-1].expect(RESP_NBLOCKS), "big") == nblocks

        sizes = http.relation_sizes(tenant, timeline)
        db_blocks = sum(n for k, n in sizes.items() if k[1] == POSTGRES_DB_OID)
        main_blocks = sum(n for k, n in sizes.items() if k[1] == POSTGRES_DB_OID and k[3] == 0)
        dbsize = int.from_bytes(
            conn.request(req_dbsize(POSTGRES_DB_OID, lsn)).expect(RESP_DBSIZE), "big"
        )
        assert dbsize % PAGE_SIZE == 0 and main_blocks <= dbsize // PAGE_SIZE <= db_blocks

        body = conn.request(req_slru("clog", 0, lsn)).expect(RESP_SLRU)
        n = int.from_bytes(body[:4], "big")
        assert n >= 1 and len(body) == 4 + n * PAGE_SIZE
        assert body[4:] == http.slru_segment(tenant, timeline, "clog", 0, lsn)

        # Bad requests: an error response each; the connection keeps serving.
        bad = [
            ("a missing relation", req_getpage(missing, 0, lsn)),
            ("a block past the end", req_getpage(rel, nblocks, lsn)),
            ("not_modified_since above request_lsn", req_getpage(rel, 0, lsn, lsn + 8)),
            ("an unknown request tag", bytes([99]) + lsn.to_bytes(8, "big") * 2),
        ]
        for what, request in bad:
            answer = conn.request(request)
            assert answer.is_error, f"{what}: tag {answer.tag}"
            assert answer.error_message, what
            print(f"{what}: {answer.error_message}")
            assert conn.request(req_getpage(rel, 0, lsn)).expect(RESP_GETPAGE) == http_pages[0]


# --- the OpenAPI document ----------------------------------------------------------------------

CONTRACT_PATHS = [
    "/v1/status",
    "/metrics",
    "/v1/failpoints",
    "/v1/tenant",
    "/v1/tenant/{tenant_id}",
    "/v1/tenant/{tenant_id}/config",
    "/v1/tenant/{tenant_id}/location_config",
    "/v1/tenant/{tenant_id}/timeline",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wait_lsn",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/layer",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/getpage",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/slru_segment",
    "/v1/tenant/{tenant_id}/timeline/{timeline_id}/relations",
]


@pytest.mark.openapi_fuzz
def test_pageserver_openapi_schemathesis(pageserver_factory: PageserverFactory, test_dir: TestDir):
    """The generated OpenAPI document has every route, and `schemathesis run --checks all`
    against a live pageserver finds no failure and no server error."""
    # Generated LSNs are mostly in the future: a short wait keeps each such request (wait_lsn
    # without `timeout`, basebackup) from holding the run for the default 30 s, and a short
    # cap keeps a generated `timeout=99999m` from holding it past the client's own timeout.
    pageserver = pageserver_factory.create(
        1, config={"wait_lsn_timeout": "2s", "wait_lsn_max_timeout": "5s"}
    ).start()
    http = pageserver.http
    paths = http.openapi()["paths"]
    missing = [p for p in CONTRACT_PATHS if p not in paths]
    assert not missing, f"not in /v1/openapi.json: {missing}"
    # Something for the generated requests to find.
    bootstrap(http)
    # A wait longer than wait_lsn_max_timeout is cut to it (409 after ~5 s, not an hour).
    tenant = http.tenant_list()[0]["id"]
    timeline = http.timeline_list(tenant)[0]["timeline_id"]
    started = time.monotonic()
    r = requests.get(
        f"{http.base}/v1/tenant/{tenant}/timeline/{timeline}/wait_lsn",
        params={"lsn": "FFFF/0", "timeout": "60m"},
        timeout=60,
    )
    assert r.status_code == 409 and time.monotonic() - started < 30, (r.status_code, r.text)
    # Failpoints are a testing hook whose action grammar no schema can state. location_config
    # is a PUT whose Detached mode removes the tenant, which the stateful phase cannot know
    # (it then reports the tenants it created as lost); test_remote_storage covers its input.
    run_schemathesis(
        http.base,
        test_dir,
        exclude_paths=["/v1/failpoints", "/v1/tenant/{tenant_id}/location_config"],
    )
