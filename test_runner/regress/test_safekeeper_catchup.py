"""A safekeeper that was down while its peers removed WAL catches up from them.

The whole cluster runs (`strata`: pageserver, three safekeepers, an endpoint). The
pageserver's reported consistent LSN lets the safekeepers delete old segments; the rule
under test (hardening #16 item 7) is that they never delete WAL that a member of the
timeline still lacks while it lags by at most `--max-peer-lag-mib` (1 GiB by default), so a
node that comes back finds everything it missed on its peers, and the cluster then commits
with either of the other two down.
"""

from __future__ import annotations

import re
import time

import requests

from fixtures.paths import StrataBinaries
from fixtures.strata_cli import StrataEnv, connect_endpoint
from fixtures.utils import wait_until
from fixtures.workdir import TestDir

SEG_SIZE = 16 * 1024 * 1024
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
# One pass of the safekeepers' WAL removal (`--wal-removal-interval`, 10 s) plus a margin.
REMOVAL_PASS_S = 12
# A few of the safekeepers' broker heartbeats (`--broker-publish-interval`, 1 s).
HEARTBEAT_S = 3


def lsn_to_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def segment_no(lsn: int) -> int:
    return lsn // SEG_SIZE


class Cluster:
    """The test's view of one timeline on the cluster's safekeepers."""

    def __init__(self, env: StrataEnv, tenant: str):
        self.env = env
        self.tenant = tenant
        self.timeline = env.timeline(tenant)
        self.http = {s["id"]: s["http_port"] for s in env.config()["safekeepers"]}

    def status(self, sk: int) -> dict:
        url = f"http://127.0.0.1:{self.http[sk]}/v1/tenant/{self.tenant}/timeline/{self.timeline}"
        r = requests.get(url, timeout=10)
        r.raise_for_status()
        return r.json()

    def lsn(self, sk: int, field: str) -> int:
        return lsn_to_int(self.status(sk)[field])

    def segments(self, sk: int) -> list[int]:
        """Numbers of the segment files on `sk`'s disk (partial ones included)."""
        tl_dir = self.env.repo / f"safekeeper_{sk}" / self.tenant / self.timeline
        names = [p.name.removesuffix(".partial") for p in tl_dir.iterdir()]
        return sorted(
            int(n[8:16], 16) * 256 + int(n[16:], 16) for n in names if SEGMENT_NAME.match(n)
        )

    def safekeeper(self, action: str, sk: int, *args: str) -> None:
        self.env.run("safekeeper", action, "--id", str(sk), *args)

    def write_segments(self, n: int, tag: str) -> int:
        """`n` times: a few hundred KiB of rows, then a segment switch. Returns the LSN
        after the last switch (the start of a fresh segment)."""
        for i in range(n):
            self.env.sql(
                "main",
                f"INSERT INTO t SELECT g, '{tag}-{i}', repeat('x', 200) "
                "FROM generate_series(1, 1000) g",
            )
            self.env.sql("main", "SELECT pg_switch_wal()")
        return lsn_to_int(self.env.sql("main", "SELECT pg_current_wal_lsn()")[0][0])

    def commit_one(self, what: str) -> None:
        """One INSERT that must commit within 60 s. A statement timeout cancels the wait
        for the quorum with only a WARNING (committed locally, not durable), so a notice
        about synchronous replication is a failure too."""
        conn = connect_endpoint(self.env.repo, "main", options="-c statement_timeout=60s")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO t VALUES (0, '{what}', '')")
            bad = [n for n in conn.notices if "synchronous replication" in n]
            assert not bad, f"{what}: the COMMIT did not reach a quorum: {bad}"
        finally:
            conn.close()


def test_down_safekeeper_catches_up_after_peers_removed_wal(
    strata_bin: StrataBinaries, test_dir: TestDir
):
    with StrataEnv(strata_bin, test_dir.path / "repo") as env:
        # Small, quickly frozen layers: the pageserver's consistent LSN follows the WAL.
        tenant = env.tenant_create(
            "-c", "checkpoint_distance=1048576", "-c", "checkpoint_timeout=1s"
        )
        env.endpoint_create_start("main")
        c = Cluster(env, tenant)
        env.sql("main", "CREATE TABLE t (id int, tag text, pad text)")

        # Three segments with everyone up, then safekeeper 3 goes down.
        before = c.write_segments(3, "before")
        wait_until(
            lambda: all(c.lsn(sk, "flush_lsn") >= before for sk in (1, 2, 3)),
            what="every safekeeper past the last segment switch before 3 is stopped",
        )
        sk3_flush = c.lsn(3, "flush_lsn")
        # Its peers hold their WAL at the flush LSN they last heard from it; its broker
        # heartbeat (every second) must carry this one before it stops.
        time.sleep(HEARTBEAT_S)
        c.safekeeper("stop", 3, "--immediate")

        # Five more segments. The pageserver makes all of it durable and tells the
        # safekeeper it streams from, which may then delete old WAL (a peer's word from the
        # broker never counts): without the peer rule it would delete everything below the
        # current segment.
        end = c.write_segments(5, "while-down")
        removers = wait_until(
            lambda: [sk for sk in (1, 2) if c.lsn(sk, "remote_consistent_lsn") >= end],
            timeout=120,
            what="the pageserver's consistent LSN past the new WAL on safekeeper 1 or 2",
        )
        for sk in removers:
            # WAL that all three had does go (removal works at all)...
            wait_until(
                lambda sk=sk: c.segments(sk)[0] >= segment_no(sk3_flush),
                timeout=60,
                what=f"safekeeper {sk} removing the segments safekeeper 3 already has",
            )
        # ...and a later pass, which sees the high consistent LSN, keeps what 3 lacks.
        time.sleep(REMOVAL_PASS_S)
        for sk in (1, 2):
            kept = c.segments(sk)
            assert kept[0] <= segment_no(sk3_flush), (
                f"safekeeper {sk} deleted WAL that the stopped safekeeper 3 lacks: it keeps "
                f"segments {kept}, safekeeper 3 stopped in segment {segment_no(sk3_flush)}"
            )
        print(f"safekeepers {removers} removed WAL up to segment {segment_no(sk3_flush)}")

        # A fresh compute (its sidecar holds no WAL in memory), then safekeeper 3 back: what
        # it missed can only come from its peers.
        env.run("endpoint", "stop", "main")
        env.run("endpoint", "start", "main")
        c.safekeeper("start", 3)
        c.commit_one("after-restart")
        target = lsn_to_int(env.sql("main", "SELECT pg_current_wal_flush_lsn()")[0][0])
        wait_until(
            lambda: c.lsn(3, "flush_lsn") >= target,
            timeout=120,
            what="safekeeper 3 catching up with the committed WAL",
        )
        assert c.lsn(3, "commit_lsn") >= end

        # With 3 caught up, either other node may be down and commits still go through.
        for down in (1, 2):
            c.safekeeper("stop", down, "--immediate")
            c.commit_one(f"without-{down}")
            c.safekeeper("start", down)

        rows = env.sql("main", "SELECT tag, count(*) FROM t GROUP BY tag ORDER BY tag")
        counts = dict(rows)
        assert all(counts[f"before-{i}"] == 1000 for i in range(3)), counts
        assert all(counts[f"while-down-{i}"] == 1000 for i in range(5)), counts
        for what in ("after-restart", "without-1", "without-2"):
            assert counts[what] == 1, counts
