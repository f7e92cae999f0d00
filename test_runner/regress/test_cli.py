"""The `strata` command line, run as a user would run it."""

from __future__ import annotations

import subprocess

from fixtures.paths import REPO_ROOT, StrataBinaries, find_pg_bindir


def test_strata_doctor(strata_bin: StrataBinaries):
    """`strata doctor` (what scripts/demo runs) passes on a machine scripts/setup prepared."""
    result = subprocess.run(
        [strata_bin.path("strata"), "doctor", "--pg-bin", find_pg_bindir()],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "PostgreSQL 15" in result.stdout
