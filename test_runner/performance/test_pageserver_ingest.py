"""End-to-end ingest benchmark of issue #10: WAL bytes per second from a safekeeper into a
fresh pageserver timeline, with the pageserver's CPU seconds per GiB and its peak RSS.

The WAL is pre-generated: a stock PostgreSQL 15 primary is imported into a new timeline at its
shutdown checkpoint, then runs `pgbench -i -s 20` and 20 s of `pgbench -c 4` while
`test_wal_pusher` streams its WAL into one safekeeper. The tenant has no safekeeper in its
config until all of that WAL is committed there; then `PUT /v1/tenant/{t}/config` adds it and
the walreceiver (which looks at the config every second) connects and ingests the whole
stream (pageserver_bench.WalStreamSetup).

Measured:
* time: from the walreceiver's "streaming WAL from" log line (its timestamp) until
  `wait_lsn` of the workload's last record returns (the second of polling before the
  connection is not counted; it is printed too);
* throughput: WAL bytes (end LSN - import LSN) over that time, and per CPU second;
* CPU: the pageserver's utime + stime (`/proc/<pid>/stat`) over the same interval; then again
  including `PUT …/checkpoint`, which freezes the open layer and waits until every layer is
  on disk;
* peak RSS: the pageserver's `VmHWM` at the end.
Then, unless STRATA_BENCH_ORACLE=0, `pageserver_oracle` compares every page of the primary
(CHECKPOINTed) with GetPage at the end LSN: zero mismatches is asserted, as a check that the
stream was really ingested; timing is never asserted.

Goal (issue #10, reported, not asserted): >= 100 MiB/s on one core.

    cargo build --release --features testing --bin pageserver --bin safekeeper \\
        --bin test_wal_pusher --bin pageserver_oracle
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_pageserver_ingest.py -s

Runs only on release binaries or with STRATA_BENCH=1 (skipped before any fixture otherwise).
STRATA_BENCH_SCALE (default 20) and STRATA_BENCH_SECONDS (TPC-B seconds, default 20; 0 = none)
shorten a quick check, STRATA_BENCH_CHECKPOINT_DISTANCE sets the tenant's checkpoint_distance
(default: the pageserver's, 256 MiB), STRATA_BENCH_ORACLE=0 skips the page comparison. Only a
full-length run (scale 20, 20 s, default checkpoint_distance) on release binaries appends its
row to the table in docs/performance.md (section "Pageserver end-to-end ingest").
STRATA_BENCH_REMOTE_STORAGE=1 gives the pageserver `remote_storage` (a LocalFs directory in
the test's output): the same ingest with the upload queue running (issue #13's goal: within
10 % of the run without), and the time until the bucket holds everything is printed too. Logs,
pgbench output and results.json are in test_output/test_pageserver_ingest/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fixtures.pageserver import PageserverFactory
from fixtures.pageserver_env import run_page_oracle
from fixtures.paths import StrataBinaries
from fixtures.postgres import VanillaPostgres
from fixtures.safekeeper import SafekeeperFactory, int_to_lsn, lsn_to_int
from fixtures.services import ServiceRegistry
from fixtures.workdir import TestDir
from performance.pageserver_bench import (
    BENCH_ONLY,
    DOC,
    PROFILE,
    GiB,
    MiB,
    WalStreamSetup,
    append_rows,
    cpu_seconds,
    env_int,
    memory_kib,
    streaming_started_at,
    today,
)

pytestmark = BENCH_ONLY

FULL_SCALE = 20
FULL_SECONDS = 20
SCALE = env_int("STRATA_BENCH_SCALE", FULL_SCALE)
TPCB_SECONDS = env_int("STRATA_BENCH_SECONDS", FULL_SECONDS)
CHECKPOINT_DISTANCE = env_int("STRATA_BENCH_CHECKPOINT_DISTANCE", 0)  # 0: the default
REMOTE = os.environ.get("STRATA_BENCH_REMOTE_STORAGE", "") not in ("", "0")
ORACLE = os.environ.get("STRATA_BENCH_ORACLE", "1") not in ("", "0")  # the page comparison
GOAL_MIB_S = 100

SECTION = "## Pageserver end-to-end ingest"
TABLE_HEADER = [
    "| date | build | workload | WAL | ingest time | throughput | pageserver CPU "
    "| per CPU second | + checkpoint (all on disk) | peak RSS |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


@pytest.mark.timeout(3600)
def test_pageserver_ingest(
    strata_bin: StrataBinaries,
    pg_bindir: Path,
    test_dir: TestDir,
    services: ServiceRegistry,
    vanilla_pg: VanillaPostgres,
    safekeeper_factory: SafekeeperFactory,
    pageserver_factory: PageserverFactory,
):
    for name in ("pageserver", "safekeeper", "test_wal_pusher", "pageserver_oracle"):
        strata_bin.path(name)  # fail now, not after the workload, if one is missing
    sk = safekeeper_factory.create(1).start()
    # Debug builds ingest slowly: reads must not give up while the stream goes in.
    config: dict = {"wait_lsn_timeout": "600s"}
    if REMOTE:
        config["remote_storage"] = {"local_path": str(test_dir.path / "bucket")}
    ps = pageserver_factory.create(1, config=config).start()
    overrides = {"checkpoint_distance": CHECKPOINT_DISTANCE} if CHECKPOINT_DISTANCE else {}
    setup = WalStreamSetup(
        primary=vanilla_pg,
        safekeeper=sk,
        pageserver=ps,
        strata_bin=strata_bin,
        pg_bindir=pg_bindir,
        test_dir=test_dir,
        services=services,
        tenant_config=overrides,
    )
    workload = f"scale {SCALE}" + (f" + {TPCB_SECONDS} s TPC-B" if TPCB_SECONDS else "")
    print(f"\npageserver ingest: pgbench {workload}, {PROFILE} binaries from {strata_bin.dir}")
    try:
        setup.import_primary()
        effective = ps.http.tenant_config(setup.tenant)["effective"]
        print(
            f"imported at {int_to_lsn(setup.import_lsn)}; checkpoint_distance "
            f"{effective['checkpoint_distance']}, safekeepers {effective['safekeepers']}"
        )
        gen = setup.generate(SCALE, TPCB_SECONDS)
        print(
            f"generated {gen.wal_bytes / MiB:.1f} MiB of WAL ({int_to_lsn(gen.start_lsn)} .. "
            f"{int_to_lsn(gen.end_lsn)}): pgbench -i {gen.init_seconds:.0f}s, "
            f"TPC-B {gen.run_seconds:.0f}s; all committed on the safekeeper"
        )
        pid = ps.pid
        assert pid is not None
        idle_rss = memory_kib(pid, "VmRSS")

        cpu0 = cpu_seconds(pid)
        attached = time.time()
        setup.attach()
        info = setup.wait_ingested(gen.end_lsn, timeout=3000)
        done = time.time()
        cpu1 = cpu_seconds(pid)
        setup.http.timeline_checkpoint(setup.tenant, setup.timeline)
        flushed = time.time()
        cpu2 = cpu_seconds(pid)
        uploaded_s = None
        if REMOTE:

            def drained() -> bool:
                d = setup.http.timeline_detail(setup.tenant, setup.timeline)
                return lsn_to_int(d["remote_consistent_lsn"]) >= lsn_to_int(
                    d["disk_consistent_lsn"]
                )

            while not drained():
                time.sleep(0.01)
            uploaded_s = time.time() - streaming_started_at(ps, sk.pg_addr, setup.timeline)
        peak_kib = memory_kib(pid, "VmHWM")

        streaming = streaming_started_at(ps, sk.pg_addr, setup.timeline)
        assert streaming is not None, f"no 'streaming WAL from {sk.pg_addr}' in {ps.log_path}"
        assert attached - 1 <= streaming <= done, (attached, streaming, done)
        seconds = done - streaming
        wal = gen.wal_bytes
        cpu = cpu1 - cpu0
        result = {
            "build": PROFILE,
            "scale": SCALE,
            "tpcb_seconds": TPCB_SECONDS,
            "tenant_config": effective,
            "import_lsn": int_to_lsn(gen.start_lsn),
            "end_lsn": int_to_lsn(gen.end_lsn),
            "last_record_lsn": info["last_record_lsn"],
            "wal_bytes": wal,
            "ingest_bytes_metric": ps.http.metric_value("pageserver_wal_ingest_bytes_total"),
            "connect_delay_s": streaming - attached,
            "ingest_s": seconds,
            "mib_per_s": wal / MiB / seconds,
            "cpu_s": cpu,
            "cpu_s_per_gib": cpu / (wal / GiB),
            "mib_per_cpu_s": wal / MiB / cpu if cpu > 0 else None,
            "with_checkpoint_s": flushed - streaming,
            "with_checkpoint_cpu_s": cpu2 - cpu0,
            "peak_rss_mib": peak_kib / 1024,
            "rss_before_ingest_mib": idle_rss / 1024,
            "layers": setup.layer_summary(),
            "remote_storage": REMOTE,
            "uploaded_s": uploaded_s,
        }
        print(
            f"ingest: {wal / MiB:.1f} MiB in {seconds:.2f}s = {result['mib_per_s']:.1f} MiB/s "
            f"(walreceiver connected {result['connect_delay_s']:.2f}s after the config change)"
        )
        per_cpu = result["mib_per_cpu_s"]
        print(
            f"pageserver CPU: {cpu:.2f}s = {result['cpu_s_per_gib']:.2f} s/GiB "
            f"({per_cpu:.0f} MiB per CPU second)"
            if per_cpu
            else f"pageserver CPU: {cpu:.2f}s"
        )
        print(
            f"+ checkpoint (every layer on disk): {result['with_checkpoint_s']:.2f}s, "
            f"CPU {result['with_checkpoint_cpu_s']:.2f}s = "
            f"{result['with_checkpoint_cpu_s'] / (wal / GiB):.2f} s/GiB"
        )
        print(
            f"peak RSS (VmHWM) {result['peak_rss_mib']:.0f} MiB "
            f"(RSS before ingest {result['rss_before_ingest_mib']:.0f} MiB); "
            f"layers: {result['layers']}"
        )
        if uploaded_s is not None:
            print(
                f"+ uploads drained (the bucket holds every layer and the index): {uploaded_s:.2f}s"
            )
        verdict = "met" if per_cpu and per_cpu >= GOAL_MIB_S else "NOT met"
        print(f"goal (measured, not asserted): >= {GOAL_MIB_S} MiB/s on one core: {verdict}")

        if ORACLE:
            lsn = lsn_to_int(info["last_record_lsn"])
            oracle = run_page_oracle(
                strata_bin,
                vanilla_pg,
                ps.http,
                setup.tenant,
                setup.timeline,
                max(lsn, gen.end_lsn),
                test_dir.path / "pageserver-oracle.log",
                timeout=1800,
            ).check()
            result["oracle_pages"] = oracle.pages
            result["oracle_mismatches"] = oracle.mismatches
        (test_dir.path / "results.json").write_text(json.dumps(result, indent=2) + "\n")

        row = (
            "| "
            + " | ".join(
                [
                    today(),
                    PROFILE,
                    f"scale {SCALE} + {TPCB_SECONDS} s TPC-B"
                    + (
                        f", uploads to LocalFs (drained at {uploaded_s:.2f} s)"
                        if uploaded_s is not None
                        else ""
                    ),
                    f"{wal / MiB:.1f} MiB",
                    f"{seconds:.2f} s",
                    f"{result['mib_per_s']:.1f} MiB/s",
                    f"{result['cpu_s_per_gib']:.2f} s/GiB",
                    f"{per_cpu:.0f} MiB/s" if per_cpu else "—",
                    f"{result['with_checkpoint_s']:.2f} s, "
                    f"{result['with_checkpoint_cpu_s'] / (wal / GiB):.2f} CPU s/GiB",
                    f"{result['peak_rss_mib']:.0f} MiB",
                ]
            )
            + " |"
        )
        full = SCALE == FULL_SCALE and TPCB_SECONDS == FULL_SECONDS and not CHECKPOINT_DISTANCE
        if full and PROFILE == "release":
            append_rows(DOC, SECTION, TABLE_HEADER, [row])
            print(f"row appended to {DOC}:")
        else:
            why = "shortened run (STRATA_BENCH_*)" if not full else f"{PROFILE} build"
            print(f"{why}: row not recorded:")
        print(row)
    finally:
        setup.stop()
