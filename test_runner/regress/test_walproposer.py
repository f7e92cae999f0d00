"""The walproposer sidecar with real processes: a stock PostgreSQL 15 compute commits only what
a quorum of three safekeepers has, and no compute can fork the timeline's history.

Until the pageserver exists a compute is bootstrapped from a local initdb, and the durability
oracle is a stock PostgreSQL 15 standby streaming from a safekeeper (see fixtures/compute.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.auth import AuthKeys, generate_keypair
from fixtures.compute import (
    SAFEKEEPER_DOWN,
    SK_TORN_TAIL,
    SYNC_WAIT_CANCELLED,
    SYNC_WAIT_INTERRUPTED,
    BackgroundQuery,
    WalproposerEnv,
    connect,
    make_postgres,
    walproposer_sync,
)
from fixtures.paths import StrataBinaries
from fixtures.pgbench import pgbench_argv, pgbench_env, run_pgbench
from fixtures.ports import PortAllocator
from fixtures.postgres import VanillaPostgres
from fixtures.procfs import child_pids
from fixtures.run_as import RunAs
from fixtures.safekeeper import WAL_SEG_SIZE, SafekeeperFactory, int_to_lsn, lsn_to_int, random_id
from fixtures.services import ServiceRegistry
from fixtures.utils import pick, wait_until
from fixtures.workdir import TestDir

TAKEN_OVER = r"another proposer has taken over"


@pytest.fixture
def wp_env(
    strata_bin: StrataBinaries,
    safekeeper_factory: SafekeeperFactory,
    test_dir: TestDir,
    pg_bindir: Path,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
) -> Iterator[WalproposerEnv]:
    """Three started safekeepers (--no-sync) and a fresh tenant/timeline, no compute yet."""
    env = WalproposerEnv(
        strata_bin, safekeeper_factory, test_dir, pg_bindir, port_allocator, run_as, services
    )
    yield env
    env.shutdown()


# --- pgbench ---------------------------------------------------------------------------------


def tps_of(output: str) -> float:
    match = re.search(r"tps = ([0-9.]+)", output)
    assert match, output[-2000:]
    return float(match.group(1))


def max_latency_us(log_prefix: Path) -> tuple[int, int]:
    """(transactions, longest latency in µs) over pgbench's per-transaction logs (`-l`)."""
    count, longest = 0, 0
    for path in log_prefix.parent.glob(f"{log_prefix.name}.*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                count += 1
                longest = max(longest, int(fields[2]))
    return count, longest


ACCOUNTS_QUERY = "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts"
HISTORY_QUERY = "SELECT count(*), sum(delta) FROM pgbench_history"


# --- scenarios -------------------------------------------------------------------------------


def test_walproposer_normal_work(wp_env: WalproposerEnv, pg_bindir: Path, test_dir: TestDir):
    """pgbench -i -s 5 and 60 s of 8 clients through the sidecar: every safekeeper ends with
    the same WAL bytes, and a standby of a safekeeper, promoted, has the compute's data."""
    env = wp_env
    compute = env.bootstrap_compute()
    pg = compute.pg
    started = time.monotonic()
    run_pgbench(
        pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "5", "-q", timeout=200
    )
    print(f"pgbench -i -s 5: {time.monotonic() - started:.1f}s")
    args = ["-c", "8", "-j", "2", "-T", "60", "-P", "10"]
    out = run_pgbench(pg_bindir, pg, test_dir.path / "pgbench-run.log", *args, timeout=150)
    print(f"pgbench -c 8 -T 60 through the sidecar: {tps_of(out):.0f} tps")

    target = compute.flush_lsn()
    expected = (pg.safe_psql(ACCOUNTS_QUERY), pg.safe_psql(HISTORY_QUERY))
    end = env.wait_all_caught_up(target)
    compared = env.assert_wal_identical()
    print(
        f"WAL {int_to_lsn(env.start_lsn)}..{int_to_lsn(compared)} identical on the three "
        f"safekeepers ({(compared - env.start_lsn) / 2**20:.0f} MiB); end {int_to_lsn(end)}"
    )

    oracle = env.oracle(sk=env.safekeepers[1])
    oracle.replay_and_promote(target)
    assert (oracle.pg.safe_psql(ACCOUNTS_QUERY), oracle.pg.safe_psql(HISTORY_QUERY)) == expected
    compute.stop()


def test_walproposer_wal_switch(wp_env: WalproposerEnv):
    """Commits go on after a WAL segment switch (pg_switch_wal; pg_basebackup and
    archive_timeout switch too): the rest of the segment after the switch record reaches the
    safekeepers and the commit LSN moves into the next segment."""
    env = wp_env
    compute = env.bootstrap_compute(take_basebackup=False)
    pg = compute.pg
    pg.safe_psql("CREATE TABLE t (id int)")
    for i in range(3):
        pg.safe_psql("SELECT pg_switch_wal()")
        query = BackgroundQuery(pg, f"INSERT INTO t VALUES ({i})")
        try:
            query.wait(30)
        finally:
            query.close()
    target = compute.flush_lsn()
    assert target - env.start_lsn > 3 * WAL_SEG_SIZE
    env.wait_all_caught_up(target)
    env.assert_wal_identical()
    compute.stop()


# A sidecar killed in the middle of sending an append leaves the safekeeper half a message.
@pytest.mark.allowed_errors(
    r"connection ended with error: connection closed in the middle of message body"
)
def test_walproposer_sidecar_kill9_restart(wp_env: WalproposerEnv):
    """kill -9 the sidecar while commits flow (commits then wait) and start it again from the
    same state directory: the term it won is in its crash-safe state file, so it continues
    its own compute's WAL (the no-fork rule lets it), the waiting commit returns, and nothing
    acknowledged is lost (the promoted standby oracle has every row)."""
    env = wp_env
    compute = env.bootstrap_compute()
    pg = compute.pg
    pg.safe_psql("CREATE TABLE t (id int)")
    for round_ in range(3):
        pg.safe_psql(
            f"INSERT INTO t SELECT g FROM generate_series({round_ * 1000}, {round_ * 1000 + 999}) g"
        )
        compute.sidecar.kill()
        waiting = BackgroundQuery(pg, f"INSERT INTO t VALUES ({-1 - round_})")
        try:
            waiting.wait_for_quorum_wait()
            compute.start_sidecar(compute.start_lsn)
            waiting.wait(30)
        finally:
            waiting.close()
        log = compute.sidecar.log_since_start()
        assert "refusing to propose" not in log, compute.sidecar.log_tail()
    terms = json.loads((compute.state_dir / "walproposer.terms").read_text())["won_terms"]
    assert len(terms) == 4, terms  # the first start and three restarts
    expected = pg.safe_psql("SELECT count(*), sum(id) FROM t")
    target = compute.flush_lsn()
    env.wait_all_caught_up(target)
    env.assert_wal_identical()
    oracle = env.oracle()
    oracle.replay_and_promote(target)
    assert oracle.pg.safe_psql("SELECT count(*), sum(id) FROM t") == expected
    compute.stop()


@pytest.mark.allowed_errors(SK_TORN_TAIL)
def test_walproposer_minority_failure(wp_env: WalproposerEnv, pg_bindir: Path, test_dir: TestDir):
    """kill -9 one safekeeper at random moments during pgbench (never two down at once) and
    restart it: no commit waits more than 30 s, and afterwards all three hold the same WAL."""
    env = wp_env
    env.sidecar_allowed_errors += SAFEKEEPER_DOWN
    compute = env.bootstrap_compute(take_basebackup=False)
    pg = compute.pg
    run_pgbench(
        pg_bindir, pg, test_dir.path / "pgbench-init.log", "-i", "-s", "2", "-q", timeout=120
    )

    log_dir = test_dir.subdir("pgbench-log")
    log_prefix = log_dir / "tx"
    duration = 35
    args = ["-c", "4", "-j", "2", "-T", str(duration), "-P", "5", "-l"]
    args.append(f"--log-prefix={log_prefix}")
    seed = random.randrange(1 << 32)
    print(f"kill schedule seed {seed}")
    rng = random.Random(seed)
    kills = []
    with (
        open(test_dir.path / "pgbench-run.log", "w") as bench_log,
        subprocess.Popen(
            pgbench_argv(pg_bindir, pg, *args),
            cwd=log_dir,
            env=pgbench_env(),
            stdin=subprocess.DEVNULL,
            stdout=bench_log,
            stderr=subprocess.STDOUT,
        ) as bench,
    ):
        try:
            deadline = time.monotonic() + duration - 8
            while time.monotonic() < deadline and len(kills) < 4:
                time.sleep(rng.uniform(1.0, 4.0))
                sk = rng.choice(env.safekeepers)
                sk.stop(immediate=True)
                down = rng.uniform(0.5, 4.0)
                kills.append((sk.id, round(down, 1)))
                time.sleep(down)
                sk.start()
            bench.wait(timeout=duration + 120)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
    out = (test_dir.path / "pgbench-run.log").read_text()
    assert bench.returncode == 0, out[-3000:]
    assert len(kills) >= 3, kills
    transactions, longest = max_latency_us(log_prefix)
    print(
        f"kills (safekeeper, seconds down): {kills}; {transactions} transactions, "
        f"{tps_of(out):.0f} tps; longest commit wait {longest / 1e6:.2f}s"
    )
    assert transactions > 100
    assert longest < 30_000_000, f"a transaction took {longest / 1e6:.1f}s"

    env.wait_all_caught_up(compute.flush_lsn())
    env.assert_wal_identical()
    compute.stop()


def vm_kib(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_walproposer_catch_up_memory_is_bounded(wp_env: WalproposerEnv):
    """A safekeeper down while 256 MiB of WAL is committed (1 GiB with STRATA_LONG_TESTS)
    comes back and catches up from its peers through the sidecar's recovery reads, one chunk
    at a time. The sidecar's peak RSS, while the WAL is written and again (peak reset) while
    the safekeeper catches up, stays under the bound docs/walproposer.md gives: what it held
    before, plus `--max-buffer-mib` (32 here), plus a quarter of it for recovery (the chunk
    being streamed and the one being read), plus one in-flight window (32 MiB: WAL sent to
    a safekeeper and not yet acknowledged stays referenced), with 16 MiB of slack. Reading
    the whole missing range at once, as before, held all of it, twice."""
    env = wp_env
    env.sidecar_allowed_errors += SAFEKEEPER_DOWN
    buffer_mib, window_mib = 32, 32
    compute = env.bootstrap_compute(
        take_basebackup=False, sidecar_args=("--max-buffer-mib", str(buffer_mib))
    )
    pg, sidecar = compute.pg, compute.sidecar
    assert sidecar is not None and sidecar.pid is not None
    pid = sidecar.pid
    baseline_kib = vm_kib(pid, "VmRSS")
    bound_kib = baseline_kib + (buffer_mib * 5 // 4 + window_mib + 16) * 1024
    total_mib = pick(256, 1024)
    sk3 = env.safekeepers[2]
    sk3.stop(immediate=True)
    behind = env.commit_lsn(env.safekeepers[0])
    for _ in range(total_mib // 64):
        # 64 transactional 1 MiB messages per statement, each statement committed.
        pg.safe_psql(
            "SELECT count(pg_logical_emit_message(true, 'strata', repeat('x', 1048576))) "
            "FROM generate_series(1, 64)"
        )
    target = compute.flush_lsn()
    assert target - behind >= total_mib << 20
    writing_kib = vm_kib(pid, "VmHWM")
    # Reset the peak (as root; otherwise the catch-up peak includes the writing one).
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    sk3.start()
    started = time.monotonic()
    env.wait_all_caught_up(target, timeout=pick(180, 600))
    took = time.monotonic() - started
    catch_up_kib = vm_kib(pid, "VmHWM")
    print(
        f"safekeeper 3 caught up on {(target - behind) >> 20} MiB in {took:.1f}s; sidecar RSS "
        f"{baseline_kib >> 10} MiB before, peak {writing_kib >> 10} MiB while writing and "
        f"{catch_up_kib >> 10} MiB while catching up; bound {bound_kib >> 10} MiB"
    )
    for phase, peak in (("writing", writing_kib), ("catching up", catch_up_kib)):
        assert peak <= bound_kib, (
            f"while {phase} the sidecar peaked at {peak >> 10} MiB of RSS, over its bound of "
            f"{bound_kib >> 10} MiB"
        )
    fetches = re.findall(r"recovering WAL for lagging safekeepers", sidecar.log_since_start())
    assert len(fetches) >= total_mib // (buffer_mib // 8) // 2, len(fetches)
    compute.stop()


@pytest.mark.allowed_errors(*SYNC_WAIT_INTERRUPTED)
def test_walproposer_majority_failure(wp_env: WalproposerEnv):
    """With 2 of 3 safekeepers down a COMMIT waits (no timeout, no cancel), also in a session
    with `synchronous_commit = remote_write` (the sidecar reports as written only what a
    quorum has flushed); when one comes back both complete."""
    env = wp_env
    env.sidecar_allowed_errors += SAFEKEEPER_DOWN
    compute = env.bootstrap_compute(take_basebackup=False)
    pg = compute.pg
    pg.safe_psql("CREATE TABLE t (id int PRIMARY KEY)")
    pg.safe_psql("INSERT INTO t VALUES (1)")
    sk1, sk2, sk3 = env.safekeepers
    sk2.stop(immediate=True)
    sk3.stop(immediate=True)

    query = BackgroundQuery(pg, "INSERT INTO t VALUES (2)")
    remote_write = BackgroundQuery(
        pg, "SET synchronous_commit = remote_write", "INSERT INTO t VALUES (3)"
    )
    try:
        assert not query.done.wait(10), f"COMMIT returned with a majority down: {query.error}"
        assert not remote_write.done.wait(0), (
            f"a remote_write COMMIT returned with a majority down: {remote_write.error}"
        )
        assert query.wait_event() == "SyncRep"
        assert remote_write.wait_event() == "SyncRep"
        sk2.start()
        query.wait(60)
        remote_write.wait(60)
        assert query.error is None and remote_write.error is None
        print(f"the COMMIT returned {query.elapsed:.1f}s after it was sent")
    finally:
        query.close()
        remote_write.close()
    target = compute.flush_lsn()
    wait_until(
        lambda: min(env.commit_lsn(sk) for sk in (sk1, sk2)) >= target,
        timeout=30,
        what="the commit on sk1 and sk2",
    )
    assert pg.safe_psql("SELECT count(*) FROM t") == [(3,)]
    sk3.start()
    env.wait_all_caught_up(target)
    env.assert_wal_identical()
    compute.stop()


@pytest.mark.allowed_errors(SYNC_WAIT_CANCELLED)
def test_walproposer_cancelled_wait(wp_env: WalproposerEnv):
    """A COMMIT waiting for the quorum (majority down) whose wait is cancelled with
    pg_cancel_backend returns with PostgreSQL's warning: committed locally, not durable."""
    env = wp_env
    env.sidecar_allowed_errors += SAFEKEEPER_DOWN
    compute = env.bootstrap_compute(take_basebackup=False)
    pg = compute.pg
    pg.safe_psql("CREATE TABLE t (id int PRIMARY KEY)")
    sk1, sk2, sk3 = env.safekeepers
    sk2.stop(immediate=True)
    sk3.stop(immediate=True)

    query = BackgroundQuery(pg, "INSERT INTO t VALUES (1)")
    try:
        query.wait_for_quorum_wait(timeout=10)
        assert pg.safe_psql(f"SELECT pg_cancel_backend({query.backend_pid})") == [(True,)]
        query.wait(10)  # returns normally: the transaction is committed locally
        notices = "".join(query.notices)
        assert "canceling wait for synchronous replication" in notices, notices
        print(f"the client got: {notices.strip()!r}")
    finally:
        query.close()
    # Visible on the compute, though no quorum has it.
    assert pg.safe_psql("SELECT count(*) FROM t") == [(1,)]
    assert env.commit_lsn(sk1) < compute.flush_lsn()

    sk2.start()
    sk3.start()
    env.wait_all_caught_up(compute.flush_lsn())
    compute.stop()


class Bank:
    """Transfers between accounts over TCP in threads; the total never changes. Each transfer
    inserts its id into `transfers` in the same transaction, and the client logs the id only
    after COMMIT returned."""

    def __init__(self, pg: VanillaPostgres, accounts: int = 50, balance: int = 1000):
        self.pg = pg
        self.accounts = accounts
        self.total = accounts * balance
        self.acked: list[int] = []
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        pg.safe_psql("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        pg.safe_psql("CREATE TABLE transfers (id bigint PRIMARY KEY, amount int NOT NULL)")
        pg.safe_psql(
            f"INSERT INTO accounts SELECT g, {balance} FROM generate_series(1, {accounts}) g"
        )

    def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            conn = connect(self.pg)
            conn.autocommit = False
        except Exception as e:
            self.errors.append(repr(e))
            return
        try:
            while not self._stop.is_set():
                with self._lock:
                    tid = next(self._ids)
                a, b = rng.sample(range(1, self.accounts + 1), 2)
                amount = rng.randint(1, 100)
                with conn.cursor() as cur:
                    # Lock the two rows in id order: no deadlocks.
                    for acc, delta in sorted([(a, -amount), (b, amount)]):
                        cur.execute(
                            "UPDATE accounts SET balance = balance + %s WHERE id = %s",
                            (delta, acc),
                        )
                    cur.execute("INSERT INTO transfers VALUES (%s, %s)", (tid, amount))
                conn.commit()
                with self._lock:
                    self.acked.append(tid)
        except Exception as e:  # the compute was killed
            self.errors.append(repr(e))
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def start(self, threads: int = 4) -> None:
        for i in range(threads):
            t = threading.Thread(target=self._worker, args=(i,), name=f"bank-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), f"{t.name} still running"

    def check(self, pg: VanillaPostgres) -> None:
        """Every acknowledged transfer is in `pg`, and the total is intact."""
        [(total, n)] = pg.safe_psql("SELECT sum(balance), count(*) FROM accounts")
        assert (total, n) == (self.total, self.accounts)
        present = {row[0] for row in pg.safe_psql("SELECT id FROM transfers")}
        with self._lock:
            acked = list(self.acked)
        missing = sorted(set(acked) - present)
        assert not missing, f"{len(missing)} acknowledged transfers lost, e.g. {missing[:10]}"
        print(f"{len(acked)} acknowledged transfers all present; {len(present)} in the table")


def test_walproposer_compute_crash(wp_env: WalproposerEnv):
    """kill -9 Postgres (every process) and the sidecar during a bank workload; after
    `walproposer sync` a standby of a safekeeper replays to the printed end and, promoted,
    has every transfer whose COMMIT returned, and the total."""
    env = wp_env
    # The kill reaches Postgres and the sidecar one after the other: the sidecar may see its
    # replication connection reset first, and say so before it dies too.
    env.sidecar_allowed_errors += [r"walproposer failed: Postgres ended replication"]
    compute = env.bootstrap_compute()
    bank = Bank(compute.pg)
    bank.start(threads=4)
    wait_until(lambda: len(bank.acked) >= 200, timeout=60, what="200 transfers")
    time.sleep(random.uniform(0.0, 1.0))
    compute.kill()
    bank.stop()
    assert bank.errors, "the workers saw the compute die"
    print(f"{len(bank.acked)} transfers acknowledged before the kill")

    end = env.sync()
    for sk in env.safekeepers:
        assert env.commit_lsn(sk) >= end
    oracle = env.oracle()
    replayed = oracle.replay_and_promote(end)
    print(f"sync printed {int_to_lsn(end)}; the standby replayed to {int_to_lsn(replayed)}")
    bank.check(oracle.pg)


@pytest.mark.allowed_errors(SK_TORN_TAIL)
def test_walproposer_divergent_tail(wp_env: WalproposerEnv):
    """A safekeeper holding WAL that the majority never got (sk2 and sk3 were down while the
    compute wrote) has that tail truncated once it meets a new term: its WAL becomes exactly
    what the majority agreed."""
    env = wp_env
    env.sidecar_allowed_errors += SAFEKEEPER_DOWN
    compute = env.bootstrap_compute(take_basebackup=False)
    pg = compute.pg
    pg.safe_psql("CREATE TABLE t (id int PRIMARY KEY, payload text)")
    pg.safe_psql("INSERT INTO t SELECT g, repeat('a', 100) FROM generate_series(1, 1000) g")
    sk1, sk2, sk3 = env.safekeepers
    sk2.stop(immediate=True)
    sk3.stop(immediate=True)

    # Committed locally, sent to sk1 only: never acknowledged.
    query = BackgroundQuery(
        pg, "INSERT INTO t SELECT g, repeat('b', 200) FROM generate_series(1001, 5000) g"
    )
    query.wait_for_quorum_wait()
    local_end = compute.flush_lsn()
    wait_until(lambda: env.flush_lsn(sk1) >= local_end, timeout=30, what="sk1 has the tail")
    assert not query.done.is_set()
    tail_end = env.flush_lsn(sk1)
    tail_commit = env.commit_lsn(sk1)
    compute.kill()
    query.close()
    sk1.stop(immediate=True)

    sk2.start()
    sk3.start()
    majority_end = max(env.flush_lsn(sk2), env.flush_lsn(sk3))
    assert majority_end < tail_end, "sk1's tail is WAL the majority does not have"
    end = env.sync()  # sk1 is down: the majority sk2+sk3 elects
    print(
        f"sk1 holds up to {int_to_lsn(tail_end)} (commit {int_to_lsn(tail_commit)}); "
        f"the majority up to {int_to_lsn(majority_end)}; sync printed {int_to_lsn(end)}"
    )
    assert end == majority_end

    sk1.start()
    assert env.flush_lsn(sk1) > end, "sk1 still holds its tail before it meets a proposer"
    assert env.sync() == end
    for sk in env.safekeepers:
        status = env.status(sk)
        assert lsn_to_int(status["flush_lsn"]) == end, (sk.id, status)
        assert lsn_to_int(status["commit_lsn"]) == end, (sk.id, status)
    histories = [env.status(sk)["term_history"] for sk in env.safekeepers]
    assert histories[0] == histories[1] == histories[2], histories
    env.assert_wal_identical(end=end)


def test_walproposer_two_computes(wp_env: WalproposerEnv):
    """A second compute on the timeline deposes the first one's sidecar (a clear error); the
    first compute never gets another commit acknowledged, the second one's commits succeed,
    and the safekeepers hold one history. The first sidecar, restarted, refuses to propose."""
    env = wp_env
    a = env.bootstrap_compute("compute_a")
    assert a.sidecar is not None
    a.sidecar.allowed_errors.append(TAKEN_OVER)
    a.pg.safe_psql("CREATE TABLE rows (id bigint PRIMARY KEY, who text NOT NULL)")

    acked_a: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            conn = connect(a.pg)
            with conn.cursor() as cur:
                for i in itertools.count(1):
                    if stop.is_set():
                        break
                    cur.execute("INSERT INTO rows VALUES (%s, 'a')", (i,))
                    acked_a.append(i)
        except Exception:
            pass  # the compute is stopped at the end while a COMMIT waits

    thread = threading.Thread(target=writer, name="writer-a", daemon=True)
    thread.start()
    wait_until(lambda: len(acked_a) >= 100, timeout=60, what="compute A commits")

    # Compute B's start: its sync takes a higher term and deposes A's sidecar.
    end = env.sync()
    code = a.sidecar.wait_exit(timeout=60)
    assert code != 0
    assert re.search(TAKEN_OVER, a.sidecar.log_since_start()), a.sidecar.log_tail()
    # The writer issues its next INSERT only after the previous COMMIT's answer (and its
    # `acked_a.append`): once its backend waits in SyncRep, every acknowledgement the sidecar
    # released before it exited has reached the client.
    wait_until(
        lambda: (
            a.pg.safe_psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            == [(1,)]
        ),
        timeout=30,
        what="A's writer waiting for a quorum it no longer has",
    )
    acked_before = len(acked_a)
    print(f"A's sidecar exited with {code}; {acked_before} commits acknowledged on A")

    b = env.compute_at_end("compute_b", end)
    assert b.insert_lsn() >= end
    inserts = [f"INSERT INTO rows VALUES ({1_000_000 + i}, 'b')" for i in range(1, 101)]
    commits_b = BackgroundQuery(b.pg, *inserts)
    try:
        commits_b.wait(60)  # 100 commits, each acknowledged by B's sidecar
    finally:
        commits_b.close()
    assert b.pg.safe_psql("SELECT count(*) FROM rows WHERE who = 'b'") == [(100,)]

    # A: nothing acknowledged since the takeover, and a new COMMIT waits.
    probe = BackgroundQuery(a.pg, "INSERT INTO rows VALUES (-1, 'a')")
    try:
        assert not probe.done.wait(3), "compute A got a commit acknowledged after the takeover"
    finally:
        probe.close()
    assert len(acked_a) == acked_before

    # B has every row whose COMMIT returned on A (all before the takeover).
    ids_a = {r[0] for r in b.pg.safe_psql("SELECT id FROM rows WHERE who = 'a'")}
    missing = [i for i in acked_a if i not in ids_a]
    assert not missing, missing[:10]

    # One history on the safekeepers: identical bytes, and a standby has B's rows.
    target = b.flush_lsn()
    env.wait_all_caught_up(target)
    env.assert_wal_identical()
    oracle = env.oracle("oracle", sk=env.safekeepers[2])
    oracle.replay_and_promote(target)
    assert oracle.pg.safe_psql("SELECT count(*) FROM rows WHERE who = 'b'") == [(100,)]
    assert oracle.pg.safe_psql("SELECT count(*) FROM rows WHERE who = 'a'") == [(len(ids_a),)]

    # A's sidecar again, from its old start, while B runs: it would fork history, so it
    # refuses *before campaigning*: B keeps its term and goes on committing.
    terms = [env.status(sk)["term"] for sk in env.safekeepers]
    stale = a.new_sidecar(env.start_lsn)
    stale.allowed_errors.append(r"refusing to propose")
    stale.start(wait=False)
    assert stale.wait_exit(timeout=90) == 1
    log = stale.log_since_start()
    assert "refusing to propose" in log, stale.log_tail()
    assert "proposer: campaigning" not in log, stale.log_tail()
    assert [env.status(sk)["term"] for sk in env.safekeepers] == terms
    b.pg.safe_psql("INSERT INTO rows VALUES (-2, 'b')")
    b.stop()
    flushes = [env.flush_lsn(sk) for sk in env.safekeepers]
    # And with B stopped, the same: nothing is written.
    stale = a.new_sidecar(env.start_lsn)
    stale.allowed_errors.append(r"refusing to propose")
    stale.start(wait=False)
    assert stale.wait_exit(timeout=90) == 1
    assert "refusing to propose" in stale.log_since_start(), stale.log_tail()
    assert [env.flush_lsn(sk) for sk in env.safekeepers] == flushes
    stop.set()


# --- bad input -------------------------------------------------------------------------------


def test_walproposer_unreachable_safekeepers(
    strata_bin: StrataBinaries, port_allocator: PortAllocator, test_dir: TestDir
):
    """No safekeeper listens: sync gives up after --election-timeout with a message naming
    the failure, exits non-zero and prints nothing on stdout."""
    addrs = [f"127.0.0.1:{p}" for p in port_allocator.get_many(3)]
    started = time.monotonic()
    result = walproposer_sync(
        strata_bin,
        addrs,
        random_id(),
        random_id(),
        "--election-timeout",
        "3",
        timeout=60,
        log_path=test_dir.path / "walproposer-sync.log",
    )
    elapsed = time.monotonic() - started
    print(f"exit {result.returncode} after {elapsed:.1f}s: {result.stderr.strip()[-500:]}")
    assert result.returncode != 0
    assert result.stdout == ""
    assert re.search(r"(?i)connection refused", result.stderr), result.stderr
    for addr in addrs:  # each safekeeper's last error
        assert addr in result.stderr, result.stderr
    assert elapsed < 30


@pytest.mark.allowed_errors(r"connection ended with error: timeline \S+ not found")
def test_walproposer_unknown_timeline(wp_env: WalproposerEnv):
    """A timeline the safekeepers do not have, without --create-timeline: a non-zero exit
    saying it was not found, nothing on stdout, and no timeline created anywhere."""
    env = wp_env
    result = env.run_sync("--election-timeout", "10", timeout=60)
    print(f"exit {result.returncode}: {result.stderr.strip()[-500:]}")
    assert result.returncode != 0
    assert result.stdout == ""
    assert re.search(r"(?i)not found", result.stderr), result.stderr
    for sk in env.safekeepers:
        assert sk.http.timeline_list() == {"timelines": [], "broken": []}


def test_walproposer_sync_creates_timeline_when_allowed(wp_env: WalproposerEnv):
    """With --create-timeline the greeting creates the timeline; on a timeline with no WAL
    anywhere, sync starts the first term at --start-lsn (and refuses without one)."""
    env = wp_env
    result = env.run_sync("--create-timeline", "--election-timeout", "10", timeout=60)
    assert result.returncode != 0 and result.stdout == ""
    assert "--start-lsn" in result.stderr, result.stderr
    assert env.sync("--create-timeline", "--start-lsn", "0/3000000") == 0x3000000
    for sk in env.safekeepers:
        status = env.status(sk)
        assert lsn_to_int(status["flush_lsn"]) == 0x3000000, status
        assert lsn_to_int(status["commit_lsn"]) == 0x3000000, status
    # Again, without creation: the timeline exists now, and nothing moved.
    assert env.sync() == 0x3000000


@pytest.mark.allowed_errors(*SAFEKEEPER_DOWN, r"lists node \d+ twice", r"proposer stops")
def test_walproposer_one_safekeeper_listed_twice(wp_env: WalproposerEnv):
    """One safekeeper given under two addresses (127.0.0.1 and localhost) with the other two
    down is not a quorum: sync stops with an error naming both addresses and the node id,
    and nothing starts or commits on the timeline."""
    env = wp_env
    sk1, sk2, sk3 = env.safekeepers
    sk2.stop(immediate=True)
    sk3.stop(immediate=True)
    alias = f"localhost:{sk1.pg_port}"
    result = env.run_sync(
        "--create-timeline",
        "--start-lsn",
        "0/3000000",
        "--election-timeout",
        "10",
        safekeepers=[sk1, alias, sk2],
        timeout=60,
    )
    print(f"exit {result.returncode}: {result.stderr.strip()[-500:]}")
    assert result.returncode != 0 and result.stdout == ""
    assert "twice" in result.stderr, result.stderr
    assert sk1.pg_addr in result.stderr and alias in result.stderr, result.stderr
    status = env.status(sk1)
    assert lsn_to_int(status["flush_lsn"]) == 0, status
    assert lsn_to_int(status["commit_lsn"]) == 0, status


@pytest.mark.allowed_errors(
    r"connection ended with error: authentication failed: invalid token",
    r"connection ended with error: connection closed in the middle of authentication",
)
def test_walproposer_bad_jwt(
    strata_bin: StrataBinaries,
    safekeeper_factory: SafekeeperFactory,
    auth_keys: AuthKeys,
    test_dir: TestDir,
):
    """Safekeepers with JWT auth on their libpq port: a token signed by another key, or none,
    gives a non-zero exit with an auth message and leaves the timeline untouched; the right
    token works."""
    sks = [safekeeper_factory.create(i, auth_keys=auth_keys).start() for i in (1, 2, 3)]
    tenant, timeline = random_id(), random_id()
    for sk in sks:
        sk.http.timeline_create(tenant, timeline, start_lsn="0/2000000", system_id=42)
    log_path = test_dir.path / "walproposer-sync.log"

    other_keys = generate_keypair(test_dir.subdir("other-auth"))
    tokens = test_dir.subdir("tokens")
    wrong = tokens / "wrong.jwt"
    wrong.write_text(other_keys.generate_token("tenant", tenant_id=tenant))
    right = tokens / "right.jwt"
    right.write_text(auth_keys.generate_token("tenant", tenant_id=tenant))

    def sync(*extra: str) -> subprocess.CompletedProcess[str]:
        args = ["--election-timeout", "10", *extra]
        return walproposer_sync(
            strata_bin, sks, tenant, timeline, *args, timeout=60, log_path=log_path
        )

    for case, extra in [("wrong key", ["--auth-token-file", str(wrong)]), ("no token", [])]:
        result = sync(*extra)
        print(f"{case}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
        assert result.returncode != 0, case
        assert result.stdout == "", case
        assert re.search(r"(?i)auth|jwt|token|password", result.stderr), result.stderr
    for sk in sks:
        status = sk.http.timeline_status(tenant, timeline)
        assert status["term"] == 0 and status["flush_lsn"] == "0/02000000", status

    result = sync("--auth-token-file", str(right))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0/02000000\n"
    # sync returns once a majority voted: the last safekeeper may still be at term 0.
    terms = [sk.http.timeline_status(tenant, timeline)["term"] for sk in sks]
    elected = [t for t in terms if t >= 1]
    assert len(elected) > len(sks) // 2 and len(set(elected)) == 1, terms


def test_compute_kill_reaches_every_process(
    pg_bindir: Path,
    test_dir: TestDir,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
):
    """The harness's kill -9 of a compute's Postgres leaves no PostgreSQL process behind
    (PostgreSQL puts each child in a session of its own, out of reach of a group kill)."""
    pg = make_postgres("pg", pg_bindir, test_dir, port_allocator, run_as, services)
    pg.initdb()
    pg.start()
    conn = pg.connect()
    assert pg.pid is not None
    children = child_pids(pg.pid)
    assert len(children) >= 4, children  # checkpointer, bgwriter, walwriter, ..., a backend
    pg.kill()
    for pid in [pg.pid, *children]:
        wait_until(lambda pid=pid: not _alive(pid), timeout=10, what=f"pid {pid} gone")
    conn.close()
    pg.cleanup()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
