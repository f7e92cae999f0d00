"""Logical size of a tenant with many relations (issue #14): what the synthetic size needs at
every branch point and retention cutoff.

A stock primary gets STRATA_BENCH_TABLES (1000) tables, each with a primary key and a few
rows (about 3,000 relation forks with the catalogs), is imported into a pageserver timeline,
and then:
- **logical size, uncached**: `GET …/timeline/{id}` (its `current_logical_size` is computed
  on every call: Σ relation fork sizes x 8 KiB at the last record), STRATA_BENCH_RUNS (5)
  times;
- **baseline**: `SELECT sum(pg_database_size(oid)) FROM pg_database` on the same cluster run
  by stock PostgreSQL (it stats every file), alternated with the above, in the same run;
- **synthetic size**: the first call (logical sizes computed) and a second one (cached).

Goal (reported, not asserted): the logical size in under 1 s.

    cargo build --release --features testing --bin pageserver
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_logical_size_speed.py -s
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import requests

from fixtures.pageserver import PageserverFactory
from fixtures.postgres import VanillaPostgres
from fixtures.safekeeper import random_id
from performance.pageserver_bench import (
    BENCH_ONLY,
    DOC,
    PRIMARY_SETTINGS,
    PROFILE,
    append_rows,
    env_int,
    today,
)

pytestmark = BENCH_ONLY

DEFAULT_TABLES = 1000
TABLES = env_int("STRATA_BENCH_TABLES", DEFAULT_TABLES)
RUNS = env_int("STRATA_BENCH_RUNS", 5)

SECTION = "## Logical size"
TABLE_HEADER = [
    "| date | build | relation forks | logical size (median) | pg_database_size sum "
    "| ratio | synthetic size, first / cached |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def timed(call) -> tuple[object, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def test_logical_size_speed(pg_bindir: Path, vanilla_pg: VanillaPostgres, pageserver_factory):
    factory: PageserverFactory = pageserver_factory
    ps = factory.create(1).start()
    primary = vanilla_pg
    primary.configure(PRIMARY_SETTINGS)
    primary.start()
    statements = [
        f"CREATE TABLE t{i} (id int PRIMARY KEY, v text); "
        f"INSERT INTO t{i} SELECT g, 'x' FROM generate_series(1, 20) g;"
        for i in range(TABLES)
    ]
    for start in range(0, len(statements), 100):
        primary.safe_psql(" ".join(statements[start : start + 100]))
    primary.stop(mode="fast")

    tenant, timeline = random_id(), random_id()
    ps.http.tenant_create(tenant)
    ps.http.timeline_import(tenant, timeline, primary.datadir)
    forks = len(ps.http.relations(tenant, timeline)["relations"])
    detail_url = f"{ps.http.base}/v1/tenant/{tenant}/timeline/{timeline}"
    size_url = f"{ps.http.base}/v1/tenant/{tenant}/synthetic_size"

    primary.start()
    baseline_sql = "SELECT sum(pg_database_size(oid)) FROM pg_database"
    primary.safe_psql(baseline_sql)  # warm the catalog caches
    ours, base = [], []
    for _ in range(RUNS):
        info, seconds = timed(lambda: requests.get(detail_url, timeout=600).json())
        assert info["current_logical_size"] > 0, info
        ours.append(seconds)
        _, seconds = timed(lambda: primary.safe_psql(baseline_sql))
        base.append(seconds)
    first, first_s = timed(lambda: requests.get(size_url, timeout=600).json())
    cached, cached_s = timed(lambda: requests.get(size_url, timeout=600).json())
    assert first["size"] == cached["size"] > 0
    med, med_base = statistics.median(ours), statistics.median(base)
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    print(
        f"\nlogical size of {forks} relation forks: {med * 1000:.0f} ms "
        f"(runs {', '.join(f'{s * 1000:.0f}' for s in ours)}); "
        f"sum(pg_database_size) {med_base * 1000:.0f} ms; "
        f"ratio {statistics.median(ratios):.2f}; goal < 1000 ms; "
        f"synthetic size first {first_s * 1000:.0f} ms, cached {cached_s * 1000:.0f} ms; {PROFILE}"
    )
    if PROFILE == "release" and TABLES == DEFAULT_TABLES:
        append_rows(
            DOC,
            SECTION,
            TABLE_HEADER,
            [
                f"| {today()} | {PROFILE} | {forks} | {med * 1000:.0f} ms "
                f"| {med_base * 1000:.0f} ms | {statistics.median(ratios):.2f} "
                f"| {first_s * 1000:.0f} / {cached_s * 1000:.0f} ms |"
            ],
        )
