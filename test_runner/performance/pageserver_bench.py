"""What the pageserver benchmarks (test_pageserver_ingest.py, test_pagebench.py) share.

`WalStreamSetup` gets a pageserver timeline and a stream of pgbench WAL that continues it, the
way the issue's tests get a compute and a timeline that agree, but with a stock primary and
the test-only proposer `test_wal_pusher` (one safekeeper, no walproposer sidecar in the way):

1. initdb a primary (`vanilla_pg`), start it, create the pusher's replication slot,
   `pg_switch_wal()` + `CHECKPOINT`, stop it cleanly;
2. import the stopped data directory into a new pageserver timeline; the tenant's config has
   no `safekeepers` yet, so its walreceiver streams nothing (it looks at the config again
   every second). The import LSN is the end of the shutdown checkpoint record, checked
   against `pg_controldata` + `pg_waldump` (`fixtures.pageserver_env.shutdown_checkpoint`);
3. create the safekeeper timeline at that LSN, start the primary again and `test_wal_pusher`
   streaming its WAL into the safekeeper;
4. the workload (`pgbench -i`, optionally a TPC-B run), a CHECKPOINT, and wait until the
   safekeeper has committed all of it; stop the pusher (the safekeeper keeps serving);
5. `PUT /v1/tenant/{t}/config` with `safekeepers = [the safekeeper]`: the walreceiver
   connects within a second and ingests the whole pre-generated stream.

Also here: the skip marker, environment knobs, /proc readings (CPU seconds, VmHWM), and the
helper that appends rows to a table of docs/performance.md.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.pageserver import Pageserver, wait_for_pageserver_lsn, wait_timeline_state
from fixtures.pageserver_env import current_record_end, shutdown_checkpoint
from fixtures.paths import REPO_ROOT, StrataBinaries, bin_dir
from fixtures.pgbench import run_pgbench
from fixtures.postgres import VanillaPostgres
from fixtures.procfs import cpu_ticks
from fixtures.safekeeper import Safekeeper, WalPusher, int_to_lsn, lsn_to_int, random_id
from fixtures.services import ServiceRegistry
from fixtures.utils import wait_until
from fixtures.workdir import TestDir

MiB = 1 << 20
GiB = 1 << 30
DOC = REPO_ROOT / "docs" / "performance.md"
PROFILE = bin_dir().name  # "release" or "debug": the directory the binaries come from
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, "") or default


# Benchmarks run only when asked (a module-level `pytestmark = BENCH_ONLY`): skipped before any
# fixture runs, so a plain pytest run neither builds nor starts anything for them.
BENCH_ONLY = pytest.mark.skipif(
    not (env_flag("STRATA_BENCH") or PROFILE == "release"),
    reason="benchmark: runs on release binaries (STRATA_BIN=<target>/release) or with "
    "STRATA_BENCH=1",
)

# The primary: what a compute has (replication, wal_log_hints), no autovacuum (the WAL is the
# workload's), and no checkpoint while the workload runs (it starts right after one).
PRIMARY_SETTINGS: dict[str, Any] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": True,
    "autovacuum": False,
    "shared_buffers": "256MB",
    "checkpoint_timeout": "30min",
    "max_wal_size": "8GB",
}
PUSHER_SLOT = "wal_pusher"


# --- /proc --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads; not its children)."""
    return cpu_ticks(pid) / CLK_TCK


def memory_kib(pid: int, key: str = "VmHWM") -> int:
    """A /proc/<pid>/status memory line in KiB: VmHWM (peak RSS), VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"no {key} in /proc/{pid}/status")


# --- the pageserver's log --------------------------------------------------------------------

STREAMING_LINE = re.compile(r"^(\S+Z)\s+INFO\s.*streaming WAL from (\S+) at ([0-9A-F]+/[0-9A-F]+)")


def streaming_started_at(ps: Pageserver, addr: str, timeline_id: str) -> float | None:
    """When the walreceiver started streaming from `addr` (its log line's timestamp, as a
    Unix time), the first time; None if the log has no such line."""
    for line in ps.log_path.read_text(errors="replace").splitlines():
        m = STREAMING_LINE.match(line)
        if m and m.group(2) == addr and timeline_id in line:
            return datetime.datetime.fromisoformat(m.group(1)).timestamp()
    return None


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Every sample of a metric in Prometheus text: {label set: value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            series, value = line.rsplit(" ", 1)
            out[series[len(name) :]] = float(value)
    return out


# --- the pre-generated WAL stream ------------------------------------------------------------


@dataclass
class Generated:
    start_lsn: int  # the import LSN: where the stream starts
    end_lsn: int  # a record boundary at the end of the workload (after its CHECKPOINT)
    init_seconds: float
    run_seconds: float

    @property
    def wal_bytes(self) -> int:
        return self.end_lsn - self.start_lsn


class WalStreamSetup:
    """A primary imported into a new pageserver timeline, and its later WAL in a safekeeper
    (the steps in this module's docstring). The tenant gets `tenant_config` as overrides;
    the safekeeper is added to them only by `attach()`."""

    def __init__(
        self,
        *,
        primary: VanillaPostgres,
        safekeeper: Safekeeper,
        pageserver: Pageserver,
        strata_bin: StrataBinaries,
        pg_bindir: Path,
        test_dir: TestDir,
        services: ServiceRegistry,
        tenant_config: Mapping[str, Any] | None = None,
    ):
        self.pg = primary
        self.sk = safekeeper
        self.ps = pageserver
        self.strata_bin = strata_bin
        self.pg_bindir = pg_bindir
        self.test_dir = test_dir
        self.services = services
        self.overrides = dict(tenant_config or {})
        assert "safekeepers" not in self.overrides, "attach() adds the safekeeper"
        self.tenant, self.timeline = random_id(), random_id()
        self.import_lsn = 0
        self.system_id = 0
        self.pg_version = 0
        self.pusher: WalPusher | None = None

    @property
    def http(self):
        return self.ps.http

    def import_primary(self) -> int:
        """Steps 1-3: returns the import LSN, with the primary running again and the pusher
        streaming from there."""
        pg = self.pg
        pg.configure(PRIMARY_SETTINGS)
        pg.start()
        self.system_id = int(
            pg.safe_psql("SELECT system_identifier FROM pg_control_system()")[0][0]
        )
        self.pg_version = int(pg.safe_psql("SHOW server_version_num")[0][0])
        pg.safe_psql(f"SELECT pg_create_physical_replication_slot('{PUSHER_SLOT}', true)")
        pg.safe_psql("SELECT pg_switch_wal()")
        pg.safe_psql("CHECKPOINT")
        pg.stop(mode="fast")
        ckpt = shutdown_checkpoint(self.pg_bindir, pg.datadir)
        assert ckpt.system_id == self.system_id

        self.http.tenant_create(self.tenant, config=self.overrides)
        self.http.timeline_import(self.tenant, self.timeline, pg.datadir)
        info = wait_timeline_state(self.http, self.tenant, self.timeline, "Active")
        self.import_lsn = lsn_to_int(info["last_record_lsn"])
        assert self.import_lsn == ckpt.end_lsn, (
            f"imported at {info['last_record_lsn']}, but the shutdown checkpoint ends at "
            f"{int_to_lsn(ckpt.end_lsn)}"
        )

        self.sk.http.timeline_create(
            self.tenant,
            self.timeline,
            start_lsn=int_to_lsn(self.import_lsn),
            system_id=self.system_id,
            pg_version=self.pg_version,
        )
        pg.start()
        self.pusher = self.services.register(
            WalPusher(
                self.strata_bin,
                self.test_dir.path,
                primary_port=pg.port,
                slot=PUSHER_SLOT,
                safekeeper=self.sk,
                tenant_id=self.tenant,
                timeline_id=self.timeline,
                system_id=self.system_id,
                pg_version=self.pg_version,
            )
        )
        self.pusher.argv += ["--start-lsn", int_to_lsn(self.import_lsn)]
        self.pusher.start()
        return self.import_lsn

    def generate(self, scale: int, tpcb_seconds: int, clients: int = 4) -> Generated:
        """Step 4: `pgbench -i -s scale`, `tpcb_seconds` of TPC-B (none if 0), CHECKPOINT,
        everything committed on the safekeeper, the pusher stopped."""
        logs = self.test_dir.path
        started = time.monotonic()
        run_pgbench(
            self.pg_bindir,
            self.pg,
            logs / "pgbench-init.log",
            "-i",
            "-s",
            str(scale),
            "-q",
            timeout=3600,
        )
        init_seconds = time.monotonic() - started
        run_seconds = 0.0
        if tpcb_seconds > 0:
            started = time.monotonic()
            args = ["-c", str(clients), "-j", str(min(clients, 2)), "-T", str(tpcb_seconds)]
            output = run_pgbench(
                self.pg_bindir,
                self.pg,
                logs / "pgbench-run.log",
                *args,
                timeout=tpcb_seconds + 600,
            )
            run_seconds = time.monotonic() - started
            tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
            print(f"pgbench -c {clients}: {tps.group(1) if tps else '?'} tps")
        self.pg.safe_psql("CHECKPOINT")
        end = current_record_end(self.pg)

        def committed() -> bool:
            status = self.sk.http.timeline_status(self.tenant, self.timeline)
            return lsn_to_int(status["commit_lsn"]) >= end

        wait_until(committed, timeout=600, interval=0.2, what="safekeeper committed the WAL")
        assert self.pusher is not None
        code = self.pusher.stop()
        assert code in (0, -15), f"test_wal_pusher exited with {code}"
        return Generated(self.import_lsn, end, init_seconds, run_seconds)

    def attach(self) -> None:
        """Step 5: the safekeeper into the tenant's config (PUT replaces every override)."""
        self.http.tenant_config_set(
            self.tenant, {**self.overrides, "safekeepers": [self.sk.pg_addr]}
        )

    def wait_ingested(self, lsn: int, timeout: float) -> dict:
        return wait_for_pageserver_lsn(self.http, self.tenant, self.timeline, lsn, timeout)

    def layer_summary(self) -> str:
        kinds: dict[str, list[int]] = {}
        for layer in self.http.layers(self.tenant, self.timeline):
            entry = kinds.setdefault(layer["kind"], [0, 0])
            entry[0] += 1
            entry[1] += int(layer.get("size") or 0)
        return ", ".join(f"{k}: {n} ({size / MiB:.1f} MiB)" for k, (n, size) in kinds.items())

    def stop(self) -> None:
        if self.pusher is not None and self.pusher.is_running():
            self.pusher.stop()


# --- docs/performance.md ---------------------------------------------------------------------


def append_rows(doc: Path, section: str, header: Sequence[str], rows: Sequence[str]) -> None:
    """Append `rows` to the table with `header` (its first line) in `section` of `doc`,
    creating the table at the end of the section (or the section at the end of the doc)."""
    lines = doc.read_text().splitlines()
    try:
        start = lines.index(section)
    except ValueError:
        lines += ["", section, ""]
        start = len(lines) - 2
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    at = next((i for i in range(start, end) if lines[i].strip() == header[0]), None)
    if at is None:
        insert_at = end
        while insert_at > start + 1 and not lines[insert_at - 1].strip():
            insert_at -= 1
        new = ["", *header, *rows]
        if insert_at < len(lines) and lines[insert_at].strip():
            new.append("")
        lines[insert_at:insert_at] = new
    else:
        last = at + 1
        while last + 1 < end and lines[last + 1].startswith("|"):
            last += 1
        lines[last + 1 : last + 1] = list(rows)
    doc.write_text("\n".join(lines) + "\n")


def today() -> str:
    return datetime.date.today().isoformat()
