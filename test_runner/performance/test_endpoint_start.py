"""Endpoint start time (issue #11): `strata endpoint start` for a fresh tenant and for a
tenant of about 1 GiB (pgbench scale 68, written through the endpoint), split into its
steps: sync (`walproposer sync`), wait (the pageserver at the LSN), basebackup (fetch and
unpack), Postgres start, sidecar start; plus the whole command as a process.

Each case starts the endpoint STRATA_BENCH_RUNS (5) times (stopped cleanly in between) and
reports medians. Goal (reported, not asserted): <= 1 s for a fresh tenant; basebackup
>= 200 MiB/s.

    cargo build --release --features testing --bin strata --bin pageserver --bin safekeeper \\
        --bin walproposer
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_endpoint_start.py -s

Runs only on release binaries or with STRATA_BENCH=1; STRATA_BENCH_SCALE (68) sets the
large tenant's size. Only a release run with the defaults appends to docs/performance.md.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import toml

from fixtures.paths import StrataBinaries, find_pg_bindir
from fixtures.pgbench import run_pgbench
from fixtures.postgres import VanillaPostgres
from fixtures.workdir import TestDir
from performance.pageserver_bench import BENCH_ONLY, DOC, PROFILE, append_rows, env_int, today

pytestmark = BENCH_ONLY

DEFAULT_SCALE = 68
SCALE = env_int("STRATA_BENCH_SCALE", DEFAULT_SCALE)
RUNS = env_int("STRATA_BENCH_RUNS", 5)
STEP = re.compile(r"\[(\d)/5\][^\n]*\(([0-9.]+)s\)\s*$", re.MULTILINE)
BB = re.compile(r"basebackup: (\d+) MiB in ([0-9.]+)s")

SECTION = "## Endpoint start"
TABLE_HEADER = [
    "| date | build | tenant | sync | wait | basebackup | postgres | sidecar | total (process) "
    "| basebackup size, speed |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def strata(strata_bin: StrataBinaries, repo: Path, *args: str) -> str:
    result = subprocess.run(
        [str(strata_bin.path("strata")), *args],
        env={**os.environ, "STRATA_REPO_DIR": str(repo), "STRATA_PG_BIN": str(find_pg_bindir())},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, f"strata {args}: {result.stderr[-3000:]}"
    return result.stdout


def measure(strata_bin: StrataBinaries, repo: Path) -> dict[str, float]:
    """Medians over RUNS starts of endpoint `ep` (cumulative step times → per-step)."""
    samples: dict[str, list[float]] = {}
    for _ in range(RUNS):
        started = time.monotonic()
        out = strata(strata_bin, repo, "endpoint", "start", "ep")
        total = time.monotonic() - started
        cum = {int(n): float(t) for n, t in STEP.findall(out)}
        assert set(cum) == {1, 2, 3, 4, 5}, out
        mib, secs = BB.search(out).groups()
        row = {
            "sync": cum[1],
            "wait": cum[2] - cum[1],
            "basebackup": cum[3] - cum[2],
            "postgres": cum[4] - cum[3],
            "sidecar": cum[5] - cum[4],
            "total": total,
            "mib": float(mib),
            "speed": float(mib) / max(float(secs), 1e-6),
        }
        for k, v in row.items():
            samples.setdefault(k, []).append(v)
        strata(strata_bin, repo, "endpoint", "stop", "ep")
    return {k: statistics.median(v) for k, v in samples.items()}


def fmt(r: dict[str, float]) -> str:
    return (
        f"sync {r['sync'] * 1000:.0f} ms, wait {r['wait'] * 1000:.0f} ms, basebackup "
        f"{r['basebackup'] * 1000:.0f} ms ({r['mib']:.0f} MiB, {r['speed']:.0f} MiB/s), postgres "
        f"{r['postgres'] * 1000:.0f} ms, sidecar {r['sidecar'] * 1000:.0f} ms; total "
        f"{r['total'] * 1000:.0f} ms"
    )


def row(tenant: str, r: dict[str, float]) -> str:
    ms = {k: f"{v * 1000:.0f} ms" for k, v in r.items()}
    return (
        f"| {today()} | {PROFILE} | {tenant} | {ms['sync']} | {ms['wait']} | {ms['basebackup']} "
        f"| {ms['postgres']} | {ms['sidecar']} | {ms['total']} | {r['mib']:.0f} MiB, "
        f"{r['speed']:.0f} MiB/s |"
    )


@pytest.mark.timeout(3600)
def test_endpoint_start(strata_bin: StrataBinaries, test_dir: TestDir, pg_bindir: Path):
    repo = test_dir.path / "repo"
    strata(strata_bin, repo, "init")
    try:
        strata(strata_bin, repo, "start")
        strata(strata_bin, repo, "tenant", "create")
        strata(strata_bin, repo, "endpoint", "create", "ep")
        fresh = measure(strata_bin, repo)
        print(f"\nendpoint start, fresh tenant ({PROFILE}): {fmt(fresh)}; goal <= 1000 ms")

        strata(strata_bin, repo, "endpoint", "start", "ep")
        port = toml.loads((repo / "endpoints" / "ep" / "endpoint.toml").read_text())["pg_port"]
        # pgbench needs only the address of the server.
        pg = cast(VanillaPostgres, SimpleNamespace(host="127.0.0.1", port=port))
        run_pgbench(
            pg_bindir,
            pg,
            test_dir.path / "pgbench-init.log",
            "-i",
            "-s",
            str(SCALE),
            "-q",
            timeout=3600,
        )
        strata(strata_bin, repo, "endpoint", "stop", "ep")
        large = measure(strata_bin, repo)
        print(f"endpoint start, pgbench scale {SCALE} ({PROFILE}): {fmt(large)}")
    finally:
        subprocess.run(
            [str(strata_bin.path("strata")), "stop", "--immediate"],
            env={**os.environ, "STRATA_REPO_DIR": str(repo)},
            capture_output=True,
            timeout=300,
            check=False,
        )
    if PROFILE == "release" and SCALE == DEFAULT_SCALE and RUNS == 5:
        append_rows(
            DOC,
            SECTION,
            TABLE_HEADER,
            [row("fresh", fresh), row(f"pgbench scale {SCALE} (~1 GiB)", large)],
        )
