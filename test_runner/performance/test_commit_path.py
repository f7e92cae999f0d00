"""The commit path benchmark of issue #6: what a COMMIT costs when a quorum of safekeepers must
have it, next to stock PostgreSQL 15 with and without synchronous standbys.

pgbench TPC-B (scale 10; 1 and 8 clients; 30 s each) in one run against four configurations,
one after the other, each alone on the machine:

* (a)  stock PostgreSQL, fsync on, no standby;
* (b1) stock PostgreSQL with one synchronous standby (`synchronous_standby_names = 'standby1'`);
* (b3) stock PostgreSQL with three streaming standbys and
       `synchronous_standby_names = 'ANY 2 (s1, s2, s3)'`;
* (c)  a compute (stock PostgreSQL, fsync off) + its walproposer sidecar + 3 safekeepers that
       fsync (no `--no-sync`: they are the durable copy).

The primaries and standbys of (a), (b1) and (b3) run with fsync on (the standbys are the
durable copies). Every server has the same `full_page_writes`, `wal_log_hints`, checkpoint and
memory settings (`COMMON_SETTINGS`), and each measured run starts right after pgbench's vacuum
step and a CHECKPOINT (on the primary and on every standby), with the other copies caught up
and the OS page cache flushed (`sync`). Besides TPS and latency it measures how busy the
machine's CPUs were and which processes used them (everything shares the same 2 vCPUs).

Performance is measured, never asserted: the test checks only that every run worked (pgbench
exited 0, no failed transactions). Full-length runs (30 s, scale 10) append their rows to the
table in docs/performance.md, section "Commit path".

It runs only when asked: with STRATA_BENCH=1, or on release binaries
(`STRATA_BIN=<target>/release`); otherwise it is skipped before any fixture (and so any build)
runs:

    cargo build --release --bin safekeeper --bin walproposer
    STRATA_BIN=$PWD/target/release STRATA_SKIP_BUILD=1 .venv/bin/pytest -c test_runner/pytest.ini \\
        test_runner/performance/test_commit_path.py -s

STRATA_BENCH_SECONDS shortens each pgbench run and STRATA_BENCH_SCALE changes the scale (a
quick check), STRATA_BENCH_CONFIGS=c,b3 runs only some configurations; such runs print their
results but do not record them. Use a STRATA_TEST_BASE_PORT of its own if other tests may run
on the machine at the same time (they should not: the numbers would mean little).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixtures.compute import (
    COMPUTE_SETTINGS,
    SLOT,
    Compute,
    ComputePostgres,
    WalproposerEnv,
    make_postgres,
)
from fixtures.paths import REPO_ROOT, StrataBinaries, bin_dir
from fixtures.pgbench import run_pgbench
from fixtures.ports import PortAllocator
from fixtures.postgres import SUPERUSER, VanillaPostgres
from fixtures.procfs import proc_table
from fixtures.run_as import RunAs
from fixtures.safekeeper import (
    WAL_SEG_SIZE,
    Safekeeper,
    SafekeeperFactory,
    int_to_lsn,
    lsn_to_int,
)
from fixtures.services import ServiceRegistry
from fixtures.utils import wait_until
from fixtures.workdir import TestDir


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


FULL_SECONDS = 30
FULL_SCALE = 10
BENCH_SECONDS = _env_int("STRATA_BENCH_SECONDS", FULL_SECONDS)
BENCH_SCALE = _env_int("STRATA_BENCH_SCALE", FULL_SCALE)
CLIENTS = (1, 8)
PROFILE = bin_dir().name  # "release" or "debug": the directory the binaries come from
DOC = REPO_ROOT / "docs" / "performance.md"
SECTION = "## Commit path (`test_runner/performance/test_commit_path.py`)"

pytestmark = pytest.mark.skipif(
    not (_env_flag("STRATA_BENCH") or PROFILE == "release"),
    reason="benchmark: runs on release binaries (STRATA_BIN=<target>/release) or with "
    "STRATA_BENCH=1",
)

# The same in every server of every configuration (primaries, standbys, the compute).
COMMON_SETTINGS: dict[str, Any] = {
    "wal_level": "replica",
    "full_page_writes": True,
    "wal_log_hints": True,  # a compute needs it (ARCHITECTURE.md, "Compute"): so does everyone
    "synchronous_commit": "on",
    "shared_buffers": "256MB",  # scale 10 (~160 MB) fits
    # No checkpoint inside a 30 s run: each run starts right after an explicit CHECKPOINT.
    "checkpoint_timeout": "30min",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_completion_target": 0.9,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "hot_standby": True,
}

# The configurations, in the order they run and appear in the table.
CONFIGS = ("a", "b1", "b3", "c")
# STRATA_BENCH_CONFIGS=c (comma-separated) runs only some of them: to look at one closer.
SELECTED = tuple(
    c for c in os.environ.get("STRATA_BENCH_CONFIGS", ",".join(CONFIGS)).split(",") if c
)
DESCRIPTIONS = {
    "a": "stock PostgreSQL, fsync on, no standby",
    "b1": "stock PostgreSQL + 1 synchronous standby ('standby1')",
    "b3": "stock PostgreSQL + 3 standbys, 'ANY 2 (s1, s2, s3)'",
    "c": "compute (fsync off) + walproposer + 3 safekeepers (fsync on)",
}


# What pgbench runs before a TPC-B run unless -n (its "vacuum" step).
PGBENCH_PREPARE = (
    "VACUUM pgbench_branches",
    "VACUUM pgbench_tellers",
    "TRUNCATE pgbench_history",
)

# A fast stop of a standby ends its walreceiver.
WALRECEIVER_STOPPED = r"FATAL:  terminating walreceiver process due to administrator command"
# A fast stop also ends an autovacuum worker that happens to run (after pgbench, often).
AUTOVACUUM_STOPPED = r"FATAL:  terminating autovacuum process due to administrator command"


# --- measurements ----------------------------------------------------------------------------


@dataclass
class RunResult:
    config: str
    clients: int
    tps: float
    latency_ms: float
    transactions: int
    cpu_busy: float  # share of the machine's CPU time spent busy during the run (0..1)
    # Share of the machine's CPU time used by each group of processes (postgres, standbys,
    # walproposer, safekeepers, pgbench) during the run.
    cpu_by_group: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_other(self) -> float:
        """Busy time outside the groups: kernel threads (softirqs of the loopback traffic,
        writeback) and anything else running on the machine. A few percent normally; much
        more means something else (a build, another test) competed with the run."""
        return max(0.0, self.cpu_busy - sum(self.cpu_by_group.values()))


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat (iowait counts as idle)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    total = sum(fields)
    return total - idle, total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: dict[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group of process trees: every live process under the
    group's root pids, plus what they have reaped (cutime/cstime): a backend that exited is
    counted in its postmaster."""
    procs = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    result = {}
    for group, pids in roots.items():
        ticks, todo = 0, [p for p in pids if p in procs]
        while todo:
            pid = todo.pop()
            ticks += procs[pid][1]
            todo += children.get(pid, [])
        result[group] = ticks / CLK_TCK
    return result


def children_cpu_seconds() -> float:
    """CPU seconds of our reaped children (pgbench)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_pgbench(output: str) -> tuple[float, float, int, int]:
    """(tps, average latency in ms, transactions processed, failed transactions)."""

    def number(pattern: str) -> str:
        match = re.search(pattern, output)
        assert match, f"no {pattern!r} in pgbench's output:\n{output[-3000:]}"
        return match.group(1)

    tps = float(number(r"tps = ([0-9.]+) \(without initial connection time\)"))
    latency = float(number(r"latency average = ([0-9.]+) ms"))
    processed = int(number(r"number of transactions actually processed: (\d+)"))
    failed = int(number(r"number of failed transactions: (\d+)"))
    return tps, latency, processed, failed


# --- the configurations ----------------------------------------------------------------------


class Setup:
    """One configuration: a server that pgbench runs against, and the copies it waits for."""

    name: str
    pg: VanillaPostgres

    def cpu_groups(self) -> dict[str, list[int]]:
        """The root pids of each group of processes whose CPU time is reported."""
        raise NotImplementedError

    def quiesce(self) -> None:
        """Before a measured run: CHECKPOINT everywhere, every copy caught up, `sync`."""
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError


def remove_data(root: Path) -> None:
    """Free the disk once a configuration is done (logs stay: they are beside, not inside)."""
    shutil.rmtree(root / "data", ignore_errors=True)


class StockSetup(Setup):
    """A stock primary (fsync on) with `standbys` streaming standbys (fsync on), each through a
    physical slot of its name, and `synchronous_standby_names = sync_names`."""

    def __init__(
        self,
        name: str,
        standbys: Sequence[str],
        sync_names: str,
        *,
        pg_bindir: Path,
        test_dir: TestDir,
        port_allocator: PortAllocator,
        run_as: RunAs,
        services: ServiceRegistry,
    ):
        self.name = name
        self.pg_bindir = pg_bindir
        self.test_dir = test_dir
        self.run_as = run_as

        def new_pg(pg_name: str) -> VanillaPostgres:
            pg = VanillaPostgres(
                pg_name,
                pg_bindir,
                test_dir.owned_dir(pg_name),
                test_dir.path,
                port_allocator.get(),
                run_as,
            )
            pg.allowed_errors.append(AUTOVACUUM_STOPPED)
            return services.register(pg)

        self.pg = new_pg(f"{name}-primary")
        self.pg.initdb()
        self.pg.configure(COMMON_SETTINGS | {"fsync": True, "synchronous_standby_names": ""})
        self.pg.start()
        self.standbys: list[VanillaPostgres] = []
        for standby_name in standbys:
            standby = new_pg(f"{name}-{standby_name}")
            self.make_standby(standby, standby_name)
            self.standbys.append(standby)
        if standbys:
            # Synchronous only once every standby streams: the setup's own work (slots) waits
            # for nobody.
            self.pg.configure({"synchronous_standby_names": sync_names})
            self.pg.safe_psql("SELECT pg_reload_conf()")
            expected = "sync" if len(standbys) == 1 else "quorum"

            def all_synchronous() -> bool:
                rows = self.pg.safe_psql(
                    "SELECT application_name, sync_state FROM pg_stat_replication"
                )
                states = dict(rows)
                return sorted(states) == sorted(standbys) and all(
                    s == expected for s in states.values()
                )

            wait_until(all_synchronous, timeout=60, what=f"{name}: standbys {expected}")
        assert self.pg.safe_psql("SHOW fsync") == [("on",)]

    def make_standby(self, standby: VanillaPostgres, app_name: str) -> None:
        """pg_basebackup of the primary, started as a standby (fsync on) streaming through a
        slot named after it, as application_name `app_name`."""
        self.pg.safe_psql(f"SELECT pg_create_physical_replication_slot('{app_name}')")
        standby._run_tool(
            [
                self.pg_bindir / "pg_basebackup",
                "-D",
                standby.datadir,
                "-h",
                self.pg.host,
                "-p",
                str(self.pg.port),
                "-U",
                SUPERUSER,
                "--checkpoint=fast",
                "--no-sync",
            ],
            f"{standby.name}-basebackup.log",
        )
        standby.configure(
            COMMON_SETTINGS
            | {
                "port": standby.port,
                "listen_addresses": standby.host,
                "unix_socket_directories": str(standby.socket_dir),
                "fsync": True,
                "synchronous_standby_names": "",
                "primary_conninfo": f"{self.pg.connstr()} application_name={app_name}",
                "primary_slot_name": app_name,
            }
        )
        signal_file = standby.datadir / "standby.signal"
        signal_file.touch()
        self.run_as.chown(signal_file)
        standby.allowed_errors.append(WALRECEIVER_STOPPED)
        standby.start()
        assert standby.safe_psql("SHOW fsync") == [("on",)]

    def cpu_groups(self) -> dict[str, list[int]]:
        groups = {"primary": [self.pg.pid]}
        if self.standbys:
            groups["standbys"] = [s.pid for s in self.standbys]
        return {k: [p for p in v if p is not None] for k, v in groups.items()}

    def quiesce(self) -> None:
        self.pg.safe_psql("CHECKPOINT")
        target = lsn_to_int(self.pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0])
        for standby in self.standbys:

            def replayed(standby: VanillaPostgres = standby) -> bool:
                lsn = standby.safe_psql("SELECT pg_last_wal_replay_lsn()")[0][0]
                return lsn is not None and lsn_to_int(lsn) >= target

            wait_until(replayed, timeout=300, what=f"{standby.name} replayed primary's WAL")
            standby.safe_psql("CHECKPOINT")  # a restartpoint
        os.sync()

    def teardown(self) -> None:
        for pg in [*self.standbys, self.pg]:
            if pg.is_running():
                pg.stop(mode="fast")
            pg.cleanup()
            remove_data(pg.root)


class DurableSafekeeperFactory(SafekeeperFactory):
    """Safekeepers that fsync (the fixture's default is `--no-sync`, right for tests, wrong
    for a benchmark whose point is the cost of durability)."""

    def create(self, sk_id: int = 1, **kwargs: Any) -> Safekeeper:
        kwargs.setdefault("no_sync", False)
        return super().create(sk_id, **kwargs)


class ComputeSetup(Setup):
    """A compute (stock PostgreSQL, fsync off) + its walproposer sidecar + 3 safekeepers that
    fsync. The bootstrap is WalproposerEnv.bootstrap_compute's (initdb, slot, timeline at a
    segment start, `walproposer sync`, sidecar from there) with the common settings added before
    the first start, and a sidecar that fsyncs its state file too (no `--no-sync`)."""

    def __init__(
        self,
        *,
        strata_bin: StrataBinaries,
        pg_bindir: Path,
        test_dir: TestDir,
        port_allocator: PortAllocator,
        run_as: RunAs,
        services: ServiceRegistry,
    ):
        self.name = "c"
        factory = DurableSafekeeperFactory(strata_bin, test_dir, port_allocator, services)
        self.env = WalproposerEnv(
            strata_bin, factory, test_dir, pg_bindir, port_allocator, run_as, services
        )
        for sk in self.env.safekeepers:
            assert "--no-sync" not in sk.argv, sk.argv
        self.compute = self.bootstrap()
        self.pg: ComputePostgres = self.compute.pg

    def bootstrap(self) -> Compute:
        env = self.env
        name = "c-compute"
        pg = make_postgres(
            name, env.pg_bindir, env.test_dir, env.port_allocator, env.run_as, env.services
        )
        pg.initdb()
        # A sidecar built before it learned READ_REPLICATION_SLOT tries CREATE_REPLICATION_SLOT
        # first and takes "already exists" for yes: harmless, and benchmarks run on older
        # release builds too.
        pg.allowed_errors.append(rf'ERROR:  replication slot "{SLOT}" already exists')
        pg.allowed_errors.append(AUTOVACUUM_STOPPED)
        compute = Compute(env, name, pg)
        # The common settings, then the compute's own (fsync off, the sidecar as synchronous
        # standby), which win where they overlap: none is a checkpoint or WAL-volume setting.
        pg.configure(COMMON_SETTINGS | COMPUTE_SETTINGS)
        pg.start()
        env.computes.append(compute)
        assert pg.safe_psql("SHOW fsync") == [("off",)]
        env.system_id = int(pg.safe_psql("SELECT system_identifier FROM pg_control_system()")[0][0])
        env.pg_version = int(pg.safe_psql("SHOW server_version_num")[0][0])
        pg.safe_psql(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
        pg.safe_psql("SELECT pg_switch_wal()")
        insert = compute.insert_lsn()
        env.start_lsn = insert - insert % WAL_SEG_SIZE
        for sk in env.safekeepers:
            sk.http.timeline_create(
                env.tenant,
                env.timeline,
                start_lsn=int_to_lsn(env.start_lsn),
                system_id=env.system_id,
                pg_version=env.pg_version,
            )
        synced = env.sync()
        assert synced == env.start_lsn, f"sync printed {int_to_lsn(synced)}"
        compute.start_lsn = env.start_lsn
        compute.sidecar = compute.new_sidecar(env.start_lsn, extra_args=())
        compute.sidecar.start()
        compute.sidecar.wait_elected()
        return compute

    def cpu_groups(self) -> dict[str, list[int]]:
        sidecar = self.compute.sidecar
        groups = {
            "compute": [self.pg.pid],
            "walproposer": [sidecar.pid if sidecar is not None else None],
            "safekeepers": [sk.pid for sk in self.env.safekeepers],
        }
        return {k: [p for p in v if p is not None] for k, v in groups.items()}

    def quiesce(self) -> None:
        self.pg.safe_psql("CHECKPOINT")
        self.env.wait_all_caught_up(self.compute.flush_lsn(), timeout=300)
        os.sync()

    def teardown(self) -> None:
        sidecar = self.compute.sidecar
        if sidecar is not None and sidecar.is_running():
            code = sidecar.stop()
            assert code == 0, f"{sidecar.name} exited with {code} on SIGTERM"
        if self.pg.is_running():
            # A fast stop waits for nothing: no COMMIT is in flight between runs.
            self.pg.stop(mode="fast")
        self.pg.cleanup()
        remove_data(self.pg.root)
        for sk in self.env.safekeepers:
            if sk.is_running():
                sk.stop()
            shutil.rmtree(sk.datadir, ignore_errors=True)


# --- the table in docs/performance.md --------------------------------------------------------

TABLE_HEADER = [
    "| date | build | clients | (a) TPS | (b1) TPS | (b3) TPS | (c) TPS "
    "| (c)/(a) | (c)/(b1) | (c)/(b3) | avg latency (a) / (b1) / (b3) / (c), ms "
    "| CPU busy (a) / (b1) / (b3) / (c) | other CPU, max |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def table_rows(date: str, results: dict[tuple[str, int], RunResult]) -> list[str]:
    rows = []
    for clients in CLIENTS:
        r = {c: results[(c, clients)] for c in CONFIGS}
        c_tps = r["c"].tps
        rows.append(
            "| "
            + " | ".join(
                [
                    date,
                    PROFILE,
                    str(clients),
                    *(f"{r[c].tps:.0f}" for c in CONFIGS),
                    *(f"{c_tps / r[base].tps:.2f}" for base in ("a", "b1", "b3")),
                    " / ".join(f"{r[c].latency_ms:.2f}" for c in CONFIGS),
                    " / ".join(f"{r[c].cpu_busy:.0%}" for c in CONFIGS),
                    f"{max(r[c].cpu_other for c in CONFIGS):.0%}",
                ]
            )
            + " |"
        )
    return rows


def append_rows(doc: Path, rows: Sequence[str]) -> None:
    """Append `rows` to the table of the commit-path section (creating the section or the table
    when missing)."""
    lines = doc.read_text().splitlines()
    try:
        start = lines.index(SECTION)
    except ValueError:
        lines += ["", SECTION, ""]
        start = len(lines) - 2
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    header = next((i for i in range(start, end) if lines[i].strip() == TABLE_HEADER[0]), None)
    if header is None:
        insert_at = end
        while insert_at > start + 1 and not lines[insert_at - 1].strip():
            insert_at -= 1
        new = ["", *TABLE_HEADER, *rows]
        if insert_at < len(lines):
            new.append("")
        lines[insert_at:insert_at] = new
    else:
        last = header + 1
        while last + 1 < end and lines[last + 1].startswith("|"):
            last += 1
        lines[last + 1 : last + 1] = list(rows)
    while lines and not lines[-1].strip():
        lines.pop()
    doc.write_text("\n".join(lines) + "\n")


# --- the benchmark ---------------------------------------------------------------------------


@contextlib.contextmanager
def configuration(setup: Setup) -> Iterator[Setup]:
    try:
        yield setup
    finally:
        setup.teardown()


def measure(setup: Setup, pg_bindir: Path, test_dir: TestDir) -> list[RunResult]:
    """pgbench -i, then one measured run per client count, each after pgbench's vacuum step
    and `quiesce()`."""
    started = time.monotonic()
    run_pgbench(
        pg_bindir,
        setup.pg,
        test_dir.path / f"{setup.name}-pgbench-init.log",
        "-i",
        "-s",
        str(BENCH_SCALE),
        "-q",
        timeout=900,
    )
    print(f"({setup.name}) pgbench -i -s {BENCH_SCALE}: {time.monotonic() - started:.0f}s")
    results = []
    for clients in CLIENTS:
        # What pgbench does before a run (so it runs with -n), done before the checkpoint.
        for sql in PGBENCH_PREPARE:
            setup.pg.safe_psql(sql)
        setup.quiesce()
        groups = setup.cpu_groups()
        before = tree_cpu_seconds(groups) | {"pgbench": children_cpu_seconds()}
        started = time.monotonic()
        busy0, total0 = cpu_times()
        args = ["-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(BENCH_SECONDS)]
        output = run_pgbench(
            pg_bindir,
            setup.pg,
            test_dir.path / f"{setup.name}-pgbench-c{clients}.log",
            *args,
            "-P",
            "5",
            timeout=BENCH_SECONDS + 300,
        )
        busy1, total1 = cpu_times()
        elapsed = time.monotonic() - started
        after = tree_cpu_seconds(groups) | {"pgbench": children_cpu_seconds()}
        capacity = elapsed * (os.cpu_count() or 1)
        by_group = {g: (after[g] - before[g]) / capacity for g in before}
        tps, latency, processed, failed = parse_pgbench(output)
        assert failed == 0, f"({setup.name}) {failed} failed transactions:\n{output[-3000:]}"
        assert processed > 0, output[-3000:]
        result = RunResult(
            setup.name,
            clients,
            tps,
            latency,
            processed,
            (busy1 - busy0) / max(total1 - total0, 1),
            by_group,
        )
        split = ", ".join(f"{g} {share:.0%}" for g, share in by_group.items())
        split += f", other {result.cpu_other:.0%}"
        print(
            f"({setup.name}) {clients} client(s): {tps:.0f} tps, {latency:.2f} ms average, "
            f"CPU {result.cpu_busy:.0%} busy ({split})"
        )
        results.append(result)
    return results


# The whole run takes ~5 min at 30 s per pgbench run.
@pytest.mark.timeout(max(1200, len(CONFIGS) * len(CLIENTS) * BENCH_SECONDS + 900))
def test_commit_path(
    strata_bin: StrataBinaries,
    pg_bindir: Path,
    test_dir: TestDir,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
):
    """pgbench TPC-B against (a), (b1), (b3) and (c) in one run; prints TPS, latency and the
    ratios of (c) to each, and records them in docs/performance.md for full-length runs."""
    unknown = set(SELECTED) - set(CONFIGS)
    assert not unknown, f"STRATA_BENCH_CONFIGS: unknown {sorted(unknown)}; known {CONFIGS}"
    # Fail now rather than after three configurations if a binary is missing.
    strata_bin.path("safekeeper")
    strata_bin.path("walproposer")
    common = {
        "pg_bindir": pg_bindir,
        "test_dir": test_dir,
        "port_allocator": port_allocator,
        "run_as": run_as,
        "services": services,
    }
    print(
        f"\ncommit path: pgbench TPC-B scale {BENCH_SCALE}, {BENCH_SECONDS}s per run, "
        f"clients {CLIENTS}, {PROFILE} binaries from {strata_bin.dir}"
    )
    date = datetime.date.today().isoformat()
    results: dict[tuple[str, int], RunResult] = {}
    setups = {
        "a": lambda: StockSetup("a", [], "", **common),
        "b1": lambda: StockSetup("b1", ["standby1"], "standby1", **common),
        "b3": lambda: StockSetup("b3", ["s1", "s2", "s3"], "ANY 2 (s1, s2, s3)", **common),
        "c": lambda: ComputeSetup(strata_bin=strata_bin, **common),
    }
    for name in (c for c in CONFIGS if c in SELECTED):
        print(f"({name}) {DESCRIPTIONS[name]}")
        with configuration(setups[name]()) as setup:
            for result in measure(setup, pg_bindir, test_dir):
                results[(name, result.clients)] = result

    (test_dir.path / "results.json").write_text(
        json.dumps([asdict(r) | {"cpu_other": r.cpu_other} for r in results.values()], indent=2)
        + "\n"
    )
    if set(SELECTED) != set(CONFIGS):
        print(f"only {', '.join(SELECTED)}: no ratios, nothing recorded")
        return
    print()
    for clients in CLIENTS:
        r = {c: results[(c, clients)] for c in CONFIGS}
        ratios = ", ".join(f"(c)/({b}) = {r['c'].tps / r[b].tps:.2f}" for b in ("a", "b1", "b3"))
        print(f"{clients} client(s): " + ", ".join(f"({c}) {r[c].tps:.0f}" for c in CONFIGS))
        print(f"    {ratios}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    c8, b3_8 = results[("c", 8)].tps, results[("b3", 8)].tps
    vs_a = [
        f"{n} client(s) {verdict(results[('c', n)].tps >= 0.75 * results[('a', n)].tps)}"
        for n in CLIENTS
    ]
    print(
        f"goals (measured, not asserted): (c) >= (b3) at 8 clients: {verdict(c8 >= b3_8)}; "
        f"(c)/(a) >= 0.75: {', '.join(vs_a)}"
    )
    rows = table_rows(date, results)
    if BENCH_SECONDS == FULL_SECONDS and BENCH_SCALE == FULL_SCALE:
        append_rows(DOC, rows)
        print(f"rows appended to {DOC}:")
    else:
        print("shortened run (STRATA_BENCH_SECONDS / STRATA_BENCH_SCALE): rows not recorded:")
    print("\n".join(rows))
