"""PostgreSQL's own regression suite through Strata, with PostgreSQL as the oracle twice over:
the suite's expected output (failures that a plain local PostgreSQL of the same build and
settings also has are not Strata's), then `pg_dumpall` of the endpoint against a stock
PostgreSQL started from a pageserver basebackup at the endpoint's final LSN."""

from __future__ import annotations

from pathlib import Path

import psycopg2

from fixtures.basebackup import pg_dumpall_at
from fixtures.paths import StrataBinaries
from fixtures.pg_regress import (
    RegressRun,
    compare_dumps,
    run_pg_regress,
    sequence_increments,
    suite_files,
)
from fixtures.postgres import SUPERUSER, VanillaPostgres
from fixtures.strata_cli import StrataEnv, connect_endpoint, endpoint_port
from fixtures.workdir import TestDir

# The settings `strata endpoint start` gives a compute, minus the sidecar's: the baseline
# runs the suite under the same configuration.
COMPUTE_LIKE_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": True,
    "hot_standby": True,
}


def _failure_report(run: RegressRun) -> str:
    return f"failed: {sorted(run.failed)}\n{run.output[-3000:]}\n{run.diffs[:6000]}"


def test_pg_regress_oracle(
    strata_bin: StrataBinaries,
    test_dir: TestDir,
    pg_bindir: Path,
    vanilla_pg: VanillaPostgres,
):
    """parallel_schedule against an endpoint fails no test that it does not also fail on a
    plain PostgreSQL; the endpoint and a server started from a basebackup at its final LSN
    dump identically (sequences aside, which WAL logs up to 32 increments ahead)."""
    suite_files()
    # The suite's sessions raise errors on purpose; a PANIC still fails the test.
    vanilla_pg.allowed_errors.append(r"\b(?:WARNING|ERROR|FATAL):")
    vanilla_pg.configure(COMPUTE_LIKE_SETTINGS)
    vanilla_pg.start()
    baseline = run_pg_regress(
        pg_bindir,
        test_dir.run_as,
        test_dir.owned_dir("regress-vanilla"),
        vanilla_pg.host,
        vanilla_pg.port,
        SUPERUSER,
    )
    vanilla_pg.stop()
    assert len(baseline.results) > 200, baseline.output[-3000:]

    with StrataEnv(strata_bin, test_dir.path / "repo") as env:
        env.tenant_create("--set-default")
        env.endpoint_create_start("main")
        port = endpoint_port(env.repo, "main")
        strata_run = run_pg_regress(
            pg_bindir,
            test_dir.run_as,
            test_dir.owned_dir("regress-strata"),
            "127.0.0.1",
            port,
            SUPERUSER,
        )
        assert set(strata_run.results) == set(baseline.results), "the two runs ran different tests"
        not_ours = strata_run.failed & baseline.failed
        assert strata_run.failed <= baseline.failed, (
            f"failing through Strata only: {sorted(strata_run.failed - baseline.failed)}\n"
            + _failure_report(strata_run)
        )

        # The compute first (dumping writes no logical change), then its final LSN.
        compute_dump = pg_dumpall_at(pg_bindir, "127.0.0.1", port)
        conn = connect_endpoint(env.repo, "main")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datallowconn")
            databases = [row[0] for row in cur.fetchall()]
        conn.close()
        cursors, conns = [], []
        for db in databases:
            c = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname=db)
            c.autocommit = True
            conns.append(c)
            cursors.append(c.cursor())
        increments = sequence_increments(cursors)
        for c in conns:
            c.close()
        lsn = env.sql("main", "SELECT pg_current_wal_flush_lsn()")[0][0]

        env.endpoint_create_start("at-final-lsn", "--lsn", lsn)
        restored_dump = pg_dumpall_at(
            pg_bindir, "127.0.0.1", endpoint_port(env.repo, "at-final-lsn")
        )
        sequences_ahead = compare_dumps(compute_dump, restored_dump, increments)

    print(
        f"pg_regress_oracle: tests={len(strata_run.results)} failed={len(strata_run.failed)} "
        f"dump_identical=yes"
    )
    print(
        f"baseline failed={len(baseline.failed)} (shared with Strata: {sorted(not_ours)}); "
        f"suite {strata_run.seconds:.0f}s through Strata vs {baseline.seconds:.0f}s plain; "
        f"dump {len(compute_dump) >> 20} MiB at {lsn}, {sequences_ahead} sequences ahead"
    )
