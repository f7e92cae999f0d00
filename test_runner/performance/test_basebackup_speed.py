"""Basebackup speed (issue #11): tar output per second for a ~1 GiB database with the pages
resident, against a baseline measured in the same run: GNU tar of the same database's
stopped data directory (files in the OS cache) into a pipe.

Setup: `pgbench -i -s 68` (about 1 GiB) on a stock primary, a clean stop, an import into the
pageserver (the whole database is then the import's image layer). One warm-up basebackup,
then STRATA_BENCH_RUNS (3) timed ones over HTTP (curl, body to /dev/null) alternating with
the tar baseline, and one with gzip. Also printed: the pageserver's peak RSS before and after
(the stream is memory-bounded: RSS must not grow by the database's size).

Goal (reported, not asserted): >= 200 MiB/s.

    cargo build --release --features testing --bin pageserver
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_basebackup_speed.py -s

Runs only on release binaries or with STRATA_BENCH=1. STRATA_BENCH_SCALE (68) for a quick
check; only a release run at the default scale appends to docs/performance.md.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.pageserver import PageserverFactory
from fixtures.pgbench import run_pgbench
from fixtures.postgres import VanillaPostgres
from fixtures.safekeeper import random_id
from fixtures.workdir import TestDir
from performance.pageserver_bench import (
    BENCH_ONLY,
    DOC,
    PRIMARY_SETTINGS,
    PROFILE,
    MiB,
    append_rows,
    env_int,
    memory_kib,
    today,
)

pytestmark = BENCH_ONLY

DEFAULT_SCALE = 68
SCALE = env_int("STRATA_BENCH_SCALE", DEFAULT_SCALE)
RUNS = env_int("STRATA_BENCH_RUNS", 3)
GOAL_MIB_S = 200

SECTION = "## Basebackup"
TABLE_HEADER = [
    "| date | build | database | tar size | basebackup (median) | gzip | tar of the datadir "
    "| ratio | pageserver peak RSS before/after |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def curl_seconds(url: str) -> tuple[int, float]:
    """GET `url` to /dev/null; returns (bytes, seconds)."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    size, seconds = out.stdout.split()
    return int(size), float(seconds)


def tar_seconds(datadir: Path) -> tuple[int, float]:
    """GNU tar of `datadir` into a pipe (tar skips reading files when writing to /dev/null)."""
    started = time.monotonic()
    out = subprocess.run(
        f"tar -cf - -C {datadir} . | wc -c",
        shell=True,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return int(out.stdout.strip()), time.monotonic() - started


@pytest.mark.timeout(3600)
def test_basebackup_speed(
    pg_bindir: Path,
    test_dir: TestDir,
    vanilla_pg: VanillaPostgres,
    pageserver_factory: PageserverFactory,
):
    ps = pageserver_factory.create(1, config={"wait_lsn_timeout": "600s"}).start()
    primary = vanilla_pg
    primary.configure(PRIMARY_SETTINGS)
    primary.start()
    log = test_dir.path / "pgbench-init.log"
    run_pgbench(pg_bindir, primary, log, "-i", "-s", str(SCALE), "-q", timeout=3600)
    primary.stop(mode="fast")
    tenant, timeline = random_id(), random_id()
    ps.http.tenant_create(tenant)
    info = ps.http.timeline_import(tenant, timeline, primary.datadir)
    url = f"{ps.http.base}/v1/tenant/{tenant}/timeline/{timeline}/basebackup"
    print(f"\nbasebackup: pgbench scale {SCALE} imported at {info['last_record_lsn']}, {PROFILE}")

    pid = ps.pid
    assert pid is not None
    rss_before = memory_kib(pid, "VmHWM") / 1024
    size, warm = curl_seconds(url)
    print(f"warm-up: {size / MiB:.0f} MiB in {warm:.2f}s")
    ours, base = [], []
    for _ in range(RUNS):
        n, s = curl_seconds(url)
        assert n == size
        ours.append(n / MiB / s)
        tn, ts = tar_seconds(primary.datadir)
        base.append(tn / MiB / ts)
    gz_size, gz_s = curl_seconds(url + "?gzip=true")
    rss_after = memory_kib(pid, "VmHWM") / 1024
    med, med_base = statistics.median(ours), statistics.median(base)
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    print(
        f"basebackup {med:.0f} MiB/s (runs {', '.join(f'{x:.0f}' for x in ours)}); "
        f"tar of the datadir {med_base:.0f} MiB/s; ratio {statistics.median(ratios):.2f} "
        f"(pairs {', '.join(f'{r:.2f}' for r in ratios)}); goal >= {GOAL_MIB_S} MiB/s"
    )
    print(
        f"gzip: {gz_size / MiB:.0f} MiB in {gz_s:.2f}s ({size / MiB / gz_s:.0f} MiB/s of tar); "
        f"pageserver peak RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after"
    )
    if PROFILE == "release" and SCALE == DEFAULT_SCALE:
        append_rows(
            DOC,
            SECTION,
            TABLE_HEADER,
            [
                f"| {today()} | {PROFILE} | pgbench scale {SCALE}, imported | {size / MiB:.0f} MiB "
                f"| {med:.0f} MiB/s | {size / MiB / gz_s:.0f} MiB/s | {med_base:.0f} MiB/s "
                f"| {statistics.median(ratios):.2f} | {rss_before:.0f} / {rss_after:.0f} MiB |"
            ],
        )
