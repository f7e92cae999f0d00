"""The pageserver's object storage on LocalFs (issue #13): layer upload throughput and attach
time, each against a baseline measured in the same run on the same disk.

Setup: `pgbench -i -s 68` (about 1 GiB) on a stock primary, a clean stop, an import into a
pageserver with `remote_storage` = a directory (the whole database is the import's image
layer, uploaded when the timeline starts).

- **Upload**: uploads are held (a paused failpoint) while the import runs; from their
  release to `remote_consistent_lsn` reaching the import LSN, against a copy of the same
  layer file with an fsync of the copy (what an upload to LocalFs must at least do). Goal
  (reported, not asserted): at most 1.5 times the copy.
- **Attach**: detach, then `location_config` AttachedSingle in generation 2 until the timeline
  is Active and a first page read (GetPage of block 0 of pgbench_accounts) succeeds (the
  attach downloads no layer; that read downloads the one it needs), against `cp` of the
  timeline's objects out of the bucket.
- **Cold read**: every layer evicted, one GetPage (over HTTP) of a block not read yet, which
  downloads the layer holding it, against the same GetPage of another block right after
  (warm). Goal (reported): a cold read within 20 ms.

    cargo build --release --features testing --bin pageserver
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_remote_storage_speed.py -s

Runs only on release binaries or with STRATA_BENCH=1; STRATA_BENCH_SCALE (68) for a quick
check; STRATA_BENCH_NOISE_MIB adds a table of that many MiB of random hex text (pgbench's
rows compress about ten-fold in image layers; this does not, so 1024 gives about 1 GiB of
layers). Only release runs at the default scale append to docs/performance.md.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from fixtures.pageserver import PageserverFactory, wait_timeline_state
from fixtures.pgbench import run_pgbench
from fixtures.postgres import VanillaPostgres
from fixtures.safekeeper import lsn_to_int, random_id
from fixtures.utils import wait_until
from fixtures.workdir import TestDir
from performance.pageserver_bench import (
    BENCH_ONLY,
    DOC,
    PRIMARY_SETTINGS,
    PROFILE,
    MiB,
    append_rows,
    env_int,
    today,
)

pytestmark = BENCH_ONLY

DEFAULT_SCALE = 68
SCALE = env_int("STRATA_BENCH_SCALE", DEFAULT_SCALE)
NOISE_MIB = env_int("STRATA_BENCH_NOISE_MIB", 0)
GOAL_RATIO = 1.5

SECTION = "## Object storage (pageserver)"
TABLE_HEADER = [
    "| date | build | database | layers | upload | copy + fsync | ratio | attach | copy out "
    "of the bucket | ratio |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


COLD_SECTION = "## Cold reads (pageserver, on-demand download)"
COLD_HEADER = [
    "| date | build | database | downloaded | cold GetPage | warm GetPage | ratio |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def copy_seconds(sources: list[Path], target: Path) -> float:
    """A copy of `sources` into `target`, each copy fsynced, then the directory: the
    baseline of a local upload or download."""
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for src in sources:
        dst = target / src.name
        shutil.copyfile(src, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


@pytest.mark.timeout(3600)
def test_remote_storage_speed(
    pg_bindir: Path,
    test_dir: TestDir,
    vanilla_pg: VanillaPostgres,
    pageserver_factory: PageserverFactory,
):
    bucket = test_dir.path / "bucket"
    ps = pageserver_factory.create(
        1,
        no_sync=False,
        config={"remote_storage": {"local_path": str(bucket)}, "wait_lsn_timeout": "600s"},
    ).start()
    primary = vanilla_pg
    primary.configure(PRIMARY_SETTINGS)
    primary.start()
    log = test_dir.path / "pgbench-init.log"
    run_pgbench(pg_bindir, primary, log, "-i", "-s", str(SCALE), "-q", timeout=3600)
    if NOISE_MIB:
        # 2 KiB of random hex per row (TOASTed, barely compressible by zstd beyond hex's 2x).
        rows = NOISE_MIB * 512
        primary.safe_psql(
            "CREATE TABLE noise AS SELECT g, (SELECT string_agg(md5(random()::text || i), '') "
            "FROM generate_series(1, 64) i WHERE g > 0) AS pad "
            f"FROM generate_series(1, {rows}) g"
        )
    primary.stop(mode="fast")
    tenant, timeline = random_id(), random_id()
    http = ps.http
    http.tenant_create(tenant)
    http.configure_failpoints(("remote-before-upload_layer", "pause"))
    info = http.timeline_import(tenant, timeline, primary.datadir)
    imported = lsn_to_int(info["last_record_lsn"])
    started = time.monotonic()
    http.configure_failpoints(("remote-before-upload_layer", "off"))

    def detail() -> dict:
        return http.timeline_detail(tenant, timeline)

    wait_until(
        lambda: lsn_to_int(detail()["remote_consistent_lsn"]) >= imported,
        timeout=3600,
        interval=0.01,
        what="the import uploaded",
    )
    upload_s = time.monotonic() - started
    ops = {
        kind: http.metric_value(f'pageserver_remote_operation_seconds_sum{{kind="{kind}"')
        for kind in ("upload_layer", "upload_index")
    }
    print(f"\nremote operation seconds (from the pageserver's histogram): {ops}")
    tl_dir = ps.timeline_dir(tenant, timeline)
    layers = [p for p in tl_dir.iterdir() if "__" in p.name]
    size = sum(p.stat().st_size for p in layers)
    cp_s = copy_seconds(layers, test_dir.path / "copy")
    print(
        f"\nupload of {len(layers)} layers, {size / MiB:.0f} MiB: {upload_s:.2f}s "
        f"({size / MiB / upload_s:.0f} MiB/s); copy + fsync {cp_s:.2f}s; "
        f"ratio {upload_s / cp_s:.2f} (goal <= {GOAL_RATIO}); {PROFILE}"
    )

    # A page to read after the attach: block 0 of pgbench_accounts' main fork.
    sizes = http.relation_sizes(tenant, timeline, info["last_record_lsn"])
    accounts = max((rel for rel in sizes if rel[3] == 0), key=lambda rel: sizes[rel])
    http.location_config(tenant, "Detached")
    started = time.monotonic()
    http.location_config(tenant, "AttachedSingle", generation=2)
    wait_timeline_state(http, tenant, timeline, "Active")
    http.getpage(tenant, timeline, accounts, 0, info["last_record_lsn"])
    attach_s = time.monotonic() - started
    lsn = info["last_record_lsn"]
    http.evict_layers(tenant, timeline)
    downloaded = http.metric_value("pageserver_layer_download_bytes_total") or 0.0
    started = time.monotonic()
    http.getpage(tenant, timeline, accounts, 1, lsn)
    cold_s = time.monotonic() - started
    downloaded = (http.metric_value("pageserver_layer_download_bytes_total") or 0.0) - downloaded
    started = time.monotonic()
    http.getpage(tenant, timeline, accounts, 2, lsn)
    warm_s = time.monotonic() - started
    print(
        f"cold GetPage (every layer evicted; {downloaded / MiB:.0f} MiB downloaded): "
        f"{cold_s * 1000:.1f} ms; warm GetPage {warm_s * 1000:.2f} ms; "
        f"ratio {cold_s / warm_s:.0f} (goal: cold <= 20 ms)"
    )
    prefix = bucket / "tenants" / tenant / "timelines" / timeline
    objects = [p for p in prefix.iterdir() if p.is_file()]
    cp_out_s = copy_seconds(objects, test_dir.path / "restore-copy")
    print(
        f"attach (index, {len(objects)} objects, first GetPage): {attach_s:.2f}s; "
        f"copy out of the bucket + fsync {cp_out_s:.2f}s; ratio {attach_s / cp_out_s:.2f}"
    )
    if PROFILE == "release" and SCALE == DEFAULT_SCALE:
        append_rows(
            DOC,
            SECTION,
            TABLE_HEADER,
            [
                f"| {today()} | {PROFILE} | pgbench scale {SCALE}"
                f"{f' + {NOISE_MIB} MiB of random text' if NOISE_MIB else ''}, imported "
                f"| {len(layers)}, "
                f"{size / MiB:.0f} MiB | {upload_s:.2f}s | {cp_s:.2f}s | {upload_s / cp_s:.2f} "
                f"| {attach_s:.2f}s | {cp_out_s:.2f}s | {attach_s / cp_out_s:.2f} |"
            ],
        )
        append_rows(
            DOC,
            COLD_SECTION,
            COLD_HEADER,
            [
                f"| {today()} | {PROFILE} | pgbench scale {SCALE}, imported | "
                f"{downloaded / MiB:.0f} MiB | {cold_s * 1000:.1f} ms | {warm_s * 1000:.2f} ms "
                f"| {cold_s / warm_s:.0f} |"
            ],
        )
