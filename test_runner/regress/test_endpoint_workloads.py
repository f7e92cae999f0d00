"""Endpoints under load, through `strata`: computes thrown away and started again mid-workload
lose no acknowledged transaction, and many tenants' computes write side by side without
seeing each other's data."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid

import psycopg2

from fixtures.paths import StrataBinaries
from fixtures.strata_cli import StrataEnv, connect_endpoint, endpoint_pids
from fixtures.utils import wait_until
from fixtures.workdir import TestDir

ACCOUNTS = 20
OPENING_BALANCE = 1000


class Bank:
    """Transfers between accounts from worker threads. A transfer counts as acknowledged only
    once its COMMIT returned; one whose connection broke is in doubt and may or may not be
    there. Workers reconnect until told to stop, so they ride through endpoint restarts."""

    def __init__(self, env: StrataEnv, endpoint: str, workers: int = 2):
        self.env = env
        self.endpoint = endpoint
        self.acknowledged: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(workers)]

    def create(self) -> None:
        self.env.sql(
            self.endpoint,
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
            "CREATE TABLE transfers (id uuid PRIMARY KEY, src int, dst int, amount int);"
            f"INSERT INTO accounts SELECT g, {OPENING_BALANCE}"
            f" FROM generate_series(1, {ACCOUNTS}) g",
        )

    def _work(self, seed: int) -> None:
        n = seed
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect_endpoint(self.env.repo, self.endpoint, connect_timeout=2)
                n += 7
                # Never equal: n ≡ 3n + 1 (mod 20) has no solution.
                src, dst = n % ACCOUNTS + 1, (n * 3 + 1) % ACCOUNTS + 1
                tid = str(uuid.uuid4())
                with conn.cursor() as cur:
                    cur.execute("UPDATE accounts SET balance = balance - 5 WHERE id = %s", (src,))
                    cur.execute("UPDATE accounts SET balance = balance + 5 WHERE id = %s", (dst,))
                    cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, 5)", (tid, src, dst))
                conn.commit()
                with self.lock:
                    self.acknowledged.add(tid)
            except psycopg2.Error:
                if conn is not None:
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Bank:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def acknowledged_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def check(self) -> int:
        """Every acknowledged transfer is there, the total is constant, and every balance is
        what the transfers table says. Returns the number of transfers present."""
        present = {r[0] for r in self.env.sql(self.endpoint, "SELECT id::text FROM transfers")}
        with self.lock:
            lost = self.acknowledged - present
        assert not lost, f"{len(lost)} acknowledged transfers lost, e.g. {sorted(lost)[:3]}"
        total = self.env.sql(self.endpoint, "SELECT sum(balance) FROM accounts")[0][0]
        assert total == ACCOUNTS * OPENING_BALANCE, total
        wrong = self.env.sql(
            self.endpoint,
            f"""SELECT a.id, a.balance FROM accounts a
                WHERE a.balance <> {OPENING_BALANCE}
                  - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)
                  + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)""",
        )
        assert not wrong, f"balances disagree with the ledger: {wrong}"
        return len(present)


def test_endpoint_restart_under_bank_workload(strata_bin: StrataBinaries, test_dir: TestDir):
    """Stop and start the endpoint 5 times while transfers run (each start is a fresh data
    directory from sync → wait → basebackup), then kill -9 its Postgres process group and
    its sidecar and start it again: every acknowledged transfer is there, the total holds."""
    with StrataEnv(strata_bin, test_dir.path / "repo") as env:
        env.tenant_create()
        env.endpoint_create_start("main")
        bank = Bank(env, "main")
        bank.create()
        with bank:
            for cycle in range(6):
                before = bank.acknowledged_count()
                wait_until(
                    lambda b=before: bank.acknowledged_count() >= b + 20,
                    timeout=60,
                    what=f"20 more transfers before restart {cycle + 1}",
                )
                if cycle < 5:
                    env.run("endpoint", "stop", "main")
                else:
                    pids = endpoint_pids(env.repo, "main")
                    assert set(pids) == {"postgres", "walproposer"}, pids
                    os.killpg(pids["postgres"], signal.SIGKILL)
                    os.kill(pids["walproposer"], signal.SIGKILL)
                    wait_until(
                        lambda: "stopped" in env.run("endpoint", "list").stdout,
                        what="the killed endpoint seen as stopped",
                    )
                env.run("endpoint", "start", "main")
            after = bank.acknowledged_count()
            wait_until(lambda: bank.acknowledged_count() >= after + 20, timeout=60)
        present = bank.check()
        assert present >= bank.acknowledged_count() > 100, (present, bank.acknowledged_count())


def test_many_tenants_write_concurrently(strata_bin: StrataBinaries, test_dir: TestDir):
    """10 tenants, one endpoint each, all writing at once: each sees exactly its own rows."""
    tenants = 10
    rows = 200
    with StrataEnv(strata_bin, test_dir.path / "repo") as env:
        ids = [env.tenant_create() for _ in range(tenants)]
        for i, tenant in enumerate(ids):
            env.endpoint_create_start(f"ep{i}", "--tenant-id", tenant)
            env.sql(f"ep{i}", "CREATE TABLE t (tenant text, n int)")

        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                conn = connect_endpoint(env.repo, f"ep{i}")
                with conn, conn.cursor() as cur:
                    for n in range(rows):
                        cur.execute("INSERT INTO t VALUES (%s, %s)", (ids[i], n))
                        if n % 20 == 19:
                            conn.commit()
                conn.close()
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(tenants)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        for i, tenant in enumerate(ids):
            assert env.sql(f"ep{i}", "SELECT tenant, count(*) FROM t GROUP BY tenant") == [
                (tenant, rows)
            ]
        # The same holds from a fresh compute: stop one, start it again from the pageserver.
        env.run("endpoint", "stop", "ep3")
        env.run("endpoint", "start", "ep3")
        assert env.sql("ep3", "SELECT tenant, count(*) FROM t GROUP BY tenant") == [(ids[3], rows)]
