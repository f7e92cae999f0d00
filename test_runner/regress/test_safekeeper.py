"""The safekeeper binary: command line, data directory ownership, HTTP API, auth."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from fixtures.auth import AuthKeys
from fixtures.nats import NatsServer
from fixtures.paths import StrataBinaries
from fixtures.ports import PortAllocator
from fixtures.postgres import VanillaPostgres
from fixtures.run_as import RunAs
from fixtures.safekeeper import (
    WAL_SEG_SIZE,
    Safekeeper,
    SafekeeperApiError,
    SafekeeperFactory,
    WalPusher,
    int_to_lsn,
    lsn_to_int,
    random_id,
)
from fixtures.schemathesis import run_schemathesis
from fixtures.services import ServiceRegistry
from fixtures.utils import wait_until
from fixtures.workdir import TestDir


def run_safekeeper(binaries: StrataBinaries, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.path("safekeeper")), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_safekeeper_init_and_data_dir_ownership(
    strata_bin: StrataBinaries, test_dir: TestDir, safekeeper_factory: SafekeeperFactory
):
    datadir = test_dir.subdir("sk-init")
    # No id recorded and none given: refused with a hint.
    r = run_safekeeper(strata_bin, "-D", str(datadir), "--listen-pg", "127.0.0.1:1")
    assert r.returncode != 0
    assert "--id" in r.stderr, r.stderr
    # --init records the id and exits 0 without serving.
    r = run_safekeeper(strata_bin, "--init", "--id", "7", "-D", str(datadir))
    assert r.returncode == 0, r.stderr
    assert (datadir / "safekeeper.id").read_text().strip() == "7"
    # Again with the same id is fine; another id is refused.
    assert run_safekeeper(strata_bin, "--init", "--id", "7", "-D", str(datadir)).returncode == 0
    r = run_safekeeper(strata_bin, "--init", "--id", "8", "-D", str(datadir))
    assert r.returncode != 0
    assert "belongs to safekeeper 7, not 8" in r.stderr, r.stderr

    # A running safekeeper locks its data directory against a second process.
    sk = safekeeper_factory.create(1).start()
    r = run_safekeeper(
        strata_bin,
        "-D",
        str(sk.datadir),
        "--listen-pg",
        "127.0.0.1:0",
        "--listen-http",
        "127.0.0.1:0",
    )
    assert r.returncode != 0
    assert "locked by another running process" in r.stderr, r.stderr
    assert sk.http.status() == {
        "service": "safekeeper",
        "id": 1,
        "version": sk.http.status()["version"],
    }
    # A graceful stop exits 0.
    assert sk.stop() == 0


def test_safekeeper_http_api(safekeeper: Safekeeper):
    http = safekeeper.http
    tenant, timeline = random_id(), random_id()

    # The OpenAPI document is generated from the handlers.
    paths = http.openapi()["paths"]
    for p in [
        "/v1/status",
        "/metrics",
        "/v1/tenant/timeline",
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}",
        "/v1/tenant/{tenant_id}",
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint",
        "/v1/tenant/{tenant_id}/timeline/{timeline_id}/term_bump",
        "/v1/debug_dump",
        "/v1/failpoints",
    ]:
        assert p in paths, p

    with pytest.raises(SafekeeperApiError) as e:
        http.timeline_status(tenant, timeline)
    assert e.value.status == 404
    with pytest.raises(SafekeeperApiError) as e:
        http.timeline_create(tenant, timeline, start_lsn="0/1000003", system_id=42)
    assert e.value.status == 400 and "not a possible record start" in e.value.msg

    created = http.timeline_create(tenant, timeline, start_lsn="0/1000028", system_id=42)
    assert created["term"] == 0
    assert created["term_history"] == [{"term": 0, "lsn": "0/01000028"}]
    for field in ["flush_lsn", "commit_lsn", "timeline_start_lsn", "local_start_lsn"]:
        assert created[field] == "0/01000028", field
    assert created["server"]["system_id"] == 42
    assert (safekeeper.timeline_dir(tenant, timeline) / "safekeeper.control").is_file()
    with pytest.raises(SafekeeperApiError) as e:
        http.timeline_create(tenant, timeline, start_lsn="0/1000028")
    assert e.value.status == 409

    assert http.timeline_list() == {
        "timelines": [{"tenant_id": tenant, "timeline_id": timeline}],
        "broken": [],
    }
    status = http.timeline_status(tenant, timeline)
    assert status["walproposers"] == [] and status["walsenders"] == []

    assert http.term_bump(tenant, timeline) == {"previous_term": 0, "current_term": 1}
    assert http.term_bump(tenant, timeline, term=5) == {"previous_term": 1, "current_term": 5}
    assert http.checkpoint(tenant, timeline)["term"] == 5
    dump = http.debug_dump()
    assert dump["id"] == 1 and [t["term"] for t in dump["timelines"]] == [5]

    metrics = http.metrics()
    for name in ["safekeeper_wal_proposers", "safekeeper_wal_senders", "safekeeper_timelines"]:
        assert name in metrics, name
    assert http.metric_value("safekeeper_timelines") == 1

    # State survives a restart.
    safekeeper.restart()
    status = http.timeline_status(tenant, timeline)
    assert status["term"] == 5 and status["flush_lsn"] == "0/01000028"

    # Deletion: a second timeline of the tenant, then the timeline, then the tenant.
    other = random_id()
    http.timeline_create(tenant, other, start_lsn="0/2000000")
    assert http.timeline_delete(tenant, timeline) == {"existed": True}
    assert http.timeline_delete(tenant, timeline) == {"existed": False}
    assert not safekeeper.timeline_dir(tenant, timeline).exists()
    assert http.tenant_delete(tenant) == {"deleted": [other]}
    assert not (safekeeper.datadir / tenant).exists()
    assert http.timeline_list()["timelines"] == []


@pytest.mark.openapi_fuzz
def test_safekeeper_openapi_schemathesis(safekeeper: Safekeeper, test_dir: TestDir):
    """The generated OpenAPI document is precise: schemathesis, every check, finds no request
    the document calls valid that the handler refuses, no invalid one it accepts, no
    undocumented status and no 5xx; and the process keeps serving."""
    http = safekeeper.http
    doc = http.openapi()
    create = doc["paths"]["/v1/tenant/timeline"]["post"]
    assert {"201", "400", "409"} <= set(create["responses"]), create["responses"]
    # Ids are 32 hex characters, not free strings.
    status = doc["paths"]["/v1/tenant/{tenant_id}/timeline/{timeline_id}"]["get"]
    for param in status["parameters"]:
        schema = param["schema"]
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert schema.get("pattern") == "^[0-9a-fA-F]{32}$", param
    # The creation body's constraints, and the handler enforcing each.
    tenant, timeline = random_id(), random_id()
    for bad, field in [
        ({"wal_seg_size": 3 << 20}, "wal_seg_size"),
        ({"pg_version": 140010}, "pg_version"),
        ({"start_lsn": "0/1000010"}, "start_lsn"),
    ]:
        body = {
            "tenant_id": tenant,
            "timeline_id": timeline,
            "pg_version": 150007,
            "start_lsn": "0/1000028",
        } | bad
        r = requests.post(f"{http.base}/v1/tenant/timeline", json=body, timeout=10)
        assert r.status_code == 400 and field in r.json()["msg"], (bad, r.text)
    r = requests.post(f"{http.base}/v1/tenant/timeline", json=[tenant], timeout=10)
    assert r.status_code == 400 and "expected a JSON object" in r.json()["msg"], r.text
    # Something for the generated requests to find.
    http.timeline_create(tenant, timeline, start_lsn="0/1000028")
    # Failpoints are a testing hook whose action grammar no schema can state.
    run_schemathesis(http.base, test_dir, exclude_paths=["/v1/failpoints"])
    # It kept serving (the run may have deleted what it found, so ask with fresh ids).
    tenant, timeline = random_id(), random_id()
    http.timeline_create(tenant, timeline, start_lsn="0/1000028")
    assert http.timeline_status(tenant, timeline)["flush_lsn"] == "0/01000028"


def test_safekeeper_http_auth(safekeeper_factory: SafekeeperFactory, auth_keys: AuthKeys):
    sk = safekeeper_factory.create(1, auth_keys=auth_keys).start()
    tenant, timeline = random_id(), random_id()
    anon = sk.http.with_token(None)
    # Liveness and metrics need no token.
    assert anon.status()["id"] == 1
    assert "safekeeper_timelines" in anon.metrics()
    with pytest.raises(SafekeeperApiError) as e:
        anon.timeline_list()
    assert e.value.status == 401

    own = sk.http.with_token(auth_keys.generate_token("tenant", tenant_id=tenant))
    own.timeline_create(tenant, timeline, start_lsn="0/1000000")
    assert own.timeline_status(tenant, timeline)["term"] == 0
    # A tenant token is no good for another tenant, nor for cluster-wide routes.
    other_tenant = random_id()
    with pytest.raises(SafekeeperApiError) as e:
        own.timeline_create(other_tenant, timeline, start_lsn="0/1000000")
    assert e.value.status == 403
    with pytest.raises(SafekeeperApiError) as e:
        own.timeline_list()
    assert e.value.status == 403
    # Other scopes get nothing.
    ps = sk.http.with_token(auth_keys.generate_token("pageserverapi"))
    with pytest.raises(SafekeeperApiError) as e:
        ps.timeline_status(tenant, timeline)
    assert e.value.status == 403
    # safekeeperdata may do everything.
    assert len(sk.http.timeline_list()["timelines"]) == 1
    assert sk.http.timeline_delete(tenant, timeline)["existed"]


ROWS_QUERY = (
    "SELECT count(*), sum(id), md5(string_agg(id::text || payload, ',' ORDER BY id)) FROM t"
)


class StockStandbySetup:
    """A primary, a safekeeper timeline fed by test_wal_pusher, and a pg_basebackup standby."""

    def __init__(
        self,
        safekeeper: Safekeeper,
        primary: VanillaPostgres,
        strata_bin: StrataBinaries,
        test_dir: TestDir,
        pg_bindir: Path,
        port_allocator: PortAllocator,
        run_as: RunAs,
        services: ServiceRegistry,
    ):
        self.sk = safekeeper
        self.primary = primary
        self.strata_bin = strata_bin
        self.test_dir = test_dir
        self.services = services
        self.run_as = run_as
        self.tenant, self.timeline = random_id(), random_id()
        primary.configure(
            {"wal_level": "replica", "max_wal_senders": 5, "max_replication_slots": 5}
        )
        primary.start()
        self.system_id = int(
            primary.safe_psql("SELECT system_identifier FROM pg_control_system()")[0][0]
        )
        self.pg_version = int(primary.safe_psql("SHOW server_version_num")[0][0])
        primary.safe_psql("SELECT pg_create_physical_replication_slot('sk_pusher', true)")
        primary.safe_psql("CREATE TABLE t (id int PRIMARY KEY, payload text)")
        primary.safe_psql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 500) g")
        self.standby = VanillaPostgres(
            "standby",
            pg_bindir,
            test_dir.owned_dir("standby"),
            test_dir.path,
            port_allocator.get(),
            run_as,
        )
        services.register(self.standby)
        self.pg_bindir = pg_bindir
        self.start_lsn = 0
        self.pusher: WalPusher | None = None

    def start_timeline(self, mid_segment: bool) -> None:
        """Creates the timeline at a segment start (after pg_switch_wal) or at the current
        insert position (mid-segment), and starts pushing WAL into it."""
        if mid_segment:
            self.start_lsn = current_lsn(self.primary, "insert")
            assert self.start_lsn % WAL_SEG_SIZE > 8192, "mid-segment, past the first page"
        else:
            self.primary.safe_psql("SELECT pg_switch_wal()")
            insert = current_lsn(self.primary, "insert")
            self.start_lsn = insert - insert % WAL_SEG_SIZE
        self.sk.http.timeline_create(
            self.tenant,
            self.timeline,
            start_lsn=int_to_lsn(self.start_lsn),
            system_id=self.system_id,
            pg_version=self.pg_version,
        )
        self.pusher = self.services.register(
            WalPusher(
                self.strata_bin,
                self.test_dir.path,
                primary_port=self.primary.port,
                slot="sk_pusher",
                safekeeper=self.sk,
                tenant_id=self.tenant,
                timeline_id=self.timeline,
                system_id=self.system_id,
                pg_version=self.pg_version,
            )
        )
        self.pusher.start()

    def make_standby(self, from_safekeeper: bool) -> None:
        """pg_basebackup of the primary, started as a standby of the safekeeper or the primary."""
        standby = self.standby
        standby._run_tool(
            [
                self.pg_bindir / "pg_basebackup",
                "-D",
                standby.datadir,
                "-h",
                self.primary.host,
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "--checkpoint=fast",
                "--no-sync",
            ],
            "standby-basebackup.log",
        )
        standby.configure(
            {
                "port": standby.port,
                "listen_addresses": standby.host,
                "unix_socket_directories": str(standby.socket_dir),
                "hot_standby": True,
                "wal_receiver_status_interval": "1s",
            }
        )
        signal_file = standby.datadir / "standby.signal"
        signal_file.touch()
        self.run_as.chown(signal_file)
        self.stream_from(from_safekeeper)

    def stream_from(self, safekeeper: bool) -> None:
        """(Re)starts the standby streaming from the safekeeper or from the primary."""
        if self.standby.is_running():
            self.standby.stop()
        conninfo = (
            self.sk.connstr(self.tenant, self.timeline, user="postgres")
            if safekeeper
            else self.primary.connstr()
        )
        self.standby.configure({"primary_conninfo": conninfo})
        self.standby.start()

    def finish(self) -> list[dict]:
        """More changes on the primary; the standby replays them from the safekeeper and,
        promoted, has exactly the primary's rows. Returns the walsenders seen before the
        promotion."""
        primary, standby = self.primary, self.standby
        primary.safe_psql("INSERT INTO t SELECT g, 'c' FROM generate_series(1501, 3000) g")
        primary.safe_psql("UPDATE t SET payload = 'updated' WHERE id % 10 = 0")
        primary.safe_psql("DELETE FROM t WHERE id % 7 = 0")
        expected = primary.safe_psql(ROWS_QUERY)
        target = current_lsn(primary)
        wait_until(lambda: replayed(standby, target), timeout=120, what="standby caught up")

        status = self.sk.http.timeline_status(self.tenant, self.timeline)
        assert lsn_to_int(status["commit_lsn"]) >= target
        senders = status["walsenders"]
        assert [s["kind"] for s in senders] == ["standby"], senders
        assert self.sk.http.metric_value("safekeeper_wal_senders") == 1
        assert self.sk.http.metric_value("safekeeper_wal_proposers") == 1

        # Promotion stops the walreceiver.
        standby.allowed_errors.append(
            r"FATAL:  terminating walreceiver process due to administrator"
        )
        assert standby.safe_psql("SELECT pg_promote(true, 60)") == [(True,)]
        assert standby.safe_psql(ROWS_QUERY) == expected
        standby.safe_psql("INSERT INTO t VALUES (100000, 'promoted')")
        assert self.pusher is not None
        self.pusher.stop()
        return senders


@pytest.fixture
def stock_standby_setup(
    safekeeper: Safekeeper,
    vanilla_pg: VanillaPostgres,
    strata_bin: StrataBinaries,
    test_dir: TestDir,
    pg_bindir: Path,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
) -> StockStandbySetup:
    return StockStandbySetup(
        safekeeper, vanilla_pg, strata_bin, test_dir, pg_bindir, port_allocator, run_as, services
    )


def test_stock_standby_bootstrap(stock_standby_setup: StockStandbySetup):
    """The simple bootstrap: pg_switch_wal() on a fresh primary, the timeline at the new
    segment's start, WAL pushed from there, then a pg_basebackup standby whose
    primary_conninfo points at the safekeeper from the start."""
    setup = stock_standby_setup
    setup.start_timeline(mid_segment=False)
    setup.primary.safe_psql("INSERT INTO t SELECT g, 'b' FROM generate_series(501, 1500) g")
    setup.make_standby(from_safekeeper=True)
    setup.finish()


@pytest.mark.parametrize("start", ["segment_start", "mid_segment"])
def test_stock_standby(stock_standby_setup: StockStandbySetup, start: str):
    """The standby's walreceiver is served the timeline's first segment from its beginning.

    The standby is a pg_basebackup of the primary that first streams from the primary until
    it has replayed past the timeline's start (a segment start, or mid-segment), then is
    restarted with primary_conninfo pointing at the safekeeper: its walreceiver asks for the
    segment that holds the timeline's start, from the segment's beginning, so with a
    mid-segment start the bytes before it are the safekeeper's synthesized ones (a valid long
    page header, which the standby checks).
    """
    setup = stock_standby_setup
    setup.make_standby(from_safekeeper=False)
    setup.primary.safe_psql("INSERT INTO t SELECT g, 'a' FROM generate_series(501, 1000) g")
    setup.start_timeline(mid_segment=start == "mid_segment")
    setup.primary.safe_psql("INSERT INTO t SELECT g, 'b' FROM generate_series(1001, 1500) g")
    wait_until(lambda: replayed(setup.standby, current_lsn(setup.primary)), timeout=60)
    setup.stream_from(safekeeper=True)
    senders = setup.finish()
    first_segment = setup.start_lsn - setup.start_lsn % WAL_SEG_SIZE
    assert senders[0]["start_lsn"] == int_to_lsn(first_segment), senders


def current_lsn(pg: VanillaPostgres, which: str = "flush") -> int:
    return lsn_to_int(pg.safe_psql(f"SELECT pg_current_wal_{which}_lsn()")[0][0])


def replayed(standby: VanillaPostgres, target: int) -> bool:
    lsn = standby.safe_psql("SELECT pg_last_wal_replay_lsn()")[0][0]
    return lsn is not None and lsn_to_int(lsn) >= target


@pytest.mark.allowed_errors(
    # After a kill -9 the torn tail of the WAL is cut when the timeline is opened again.
    r"WAL ends with invalid bytes, truncating",
    # The pusher dies with the safekeeper it pushed to.
    r"test_wal_pusher failed",
)
def test_safekeeper_kill9_with_real_wal(
    safekeeper_factory: SafekeeperFactory,
    vanilla_pg: VanillaPostgres,
    strata_bin: StrataBinaries,
    test_dir: TestDir,
    pg_bindir: Path,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
):
    """kill -9 the safekeeper (fsync on) while a primary's WAL streams into it, three times.

    After each restart a new term is elected from the safekeeper's flush LSN; in the end its
    WAL, from the timeline's start to its flush LSN, decodes with PostgreSQL's own
    pg_waldump, and a standby that replays it from the safekeeper has every committed row.
    """
    sk = safekeeper_factory.create(1, no_sync=False).start()
    setup = StockStandbySetup(
        sk, vanilla_pg, strata_bin, test_dir, pg_bindir, port_allocator, run_as, services
    )
    primary = setup.primary
    setup.start_timeline(mid_segment=True)
    assert setup.pusher is not None
    rng = random.Random(0x5AFE)
    next_id = 10_000
    for _ in range(3):
        for _ in range(5):
            ids = f"{next_id}, {next_id + 399}"
            primary.safe_psql(
                f"INSERT INTO t SELECT g, repeat('k', 200) FROM generate_series({ids}) g"
            )
            next_id += 400
        time.sleep(rng.uniform(0.0, 0.3))
        sk.stop(immediate=True)
        wait_until(lambda: not setup.pusher.is_running(), timeout=30, what="pusher exited")
        sk.start()
        setup.pusher.start()

    target = current_lsn(primary)

    def committed() -> bool:
        return (
            lsn_to_int(sk.http.timeline_status(setup.tenant, setup.timeline)["commit_lsn"])
            >= target
        )

    wait_until(committed, timeout=60, what="safekeeper caught up with the primary")
    status = sk.http.timeline_status(setup.tenant, setup.timeline)
    assert status["term"] == 4, status["term_history"]

    # pg_waldump decodes every record from the timeline's start to the flush LSN. It looks
    # for the first record from the start of a page, and the page holding the timeline's
    # (mid-page) start is synthesized before it: begin at the next page.
    tl_dir = sk.timeline_dir(setup.tenant, setup.timeline)
    dump_dir = test_dir.subdir("waldump")
    for seg in tl_dir.iterdir():
        if seg.name.startswith("0000"):
            shutil.copy(seg, dump_dir / seg.name.removesuffix(".partial"))
    flush = status["flush_lsn"]
    result = subprocess.run(
        [
            str(pg_bindir / "pg_waldump"),
            "-p",
            str(dump_dir),
            "-s",
            int_to_lsn(setup.start_lsn + 8192 - setup.start_lsn % 8192),
            "-e",
            flush,
            "--stats",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Total" in result.stdout

    setup.make_standby(from_safekeeper=True)
    setup.finish()


def test_pg_receivewal_from_safekeeper(stock_standby_setup: StockStandbySetup, test_dir: TestDir):
    """PostgreSQL's pg_receivewal streams a timeline from a safekeeper (IDENTIFY_SYSTEM, SHOW,
    START_REPLICATION … TIMELINE 1 from the segment start), and the bytes it writes from the
    timeline's start on are the primary's own WAL."""
    setup = stock_standby_setup
    sk, primary = setup.sk, setup.primary
    setup.start_timeline(mid_segment=True)
    primary.safe_psql("INSERT INTO t SELECT g, 'r' FROM generate_series(501, 2500) g")
    target = current_lsn(primary)

    def committed() -> int:
        lsn = lsn_to_int(sk.http.timeline_status(setup.tenant, setup.timeline)["commit_lsn"])
        return lsn if lsn >= target else 0

    commit = wait_until(committed, timeout=60, what="safekeeper caught up")
    out = test_dir.subdir("receivewal")
    result = subprocess.run(
        [
            str(setup.pg_bindir / "pg_receivewal"),
            "-d",
            sk.connstr(setup.tenant, setup.timeline, user="postgres"),
            "-D",
            str(out),
            # pg_receivewal stops once it has received WAL beyond --endpos.
            "--endpos",
            int_to_lsn(commit - 1),
            "--no-loop",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    segno = setup.start_lsn // WAL_SEG_SIZE
    name = f"{1:08X}{segno >> 8:08X}{segno & 0xFF:08X}"
    received = next(p for p in out.iterdir() if p.name.startswith(name)).read_bytes()
    original = (primary.datadir / "pg_wal" / name).read_bytes()
    begin = setup.start_lsn % WAL_SEG_SIZE
    end = min(commit - segno * WAL_SEG_SIZE, WAL_SEG_SIZE)
    assert received[begin:end] == original[begin:end]
    setup.pusher.stop()


def test_safekeeper_broker_heartbeats(
    safekeeper_factory: SafekeeperFactory,
    nats_server: NatsServer,
    vanilla_pg: VanillaPostgres,
    strata_bin: StrataBinaries,
    test_dir: TestDir,
    pg_bindir: Path,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
):
    """With --broker-endpoint an active timeline's heartbeats reach nats-server, and with
    nats-server gone WAL keeps flowing."""
    sk = safekeeper_factory.create(
        1, broker_url=nats_server.client_url, extra_args=["--broker-publish-interval", "200ms"]
    ).start()
    setup = StockStandbySetup(
        sk, vanilla_pg, strata_bin, test_dir, pg_bindir, port_allocator, run_as, services
    )
    setup.start_timeline(mid_segment=False)

    def published() -> bool:
        sent = sk.http.metric_value('safekeeper_broker_messages_total{direction="publish"')
        varz = requests.get(f"{nats_server.monitor_url}/varz", timeout=5).json()
        return bool(sent) and varz["in_msgs"] > 0

    wait_until(published, timeout=30, what="heartbeats published")

    nats_server.stop()
    setup.primary.safe_psql("INSERT INTO t SELECT g, 'n' FROM generate_series(501, 1500) g")
    target = current_lsn(setup.primary)

    def committed() -> bool:
        status = sk.http.timeline_status(setup.tenant, setup.timeline)
        return lsn_to_int(status["commit_lsn"]) >= target

    wait_until(committed, timeout=30, what="WAL committed with the broker down")
    assert setup.pusher is not None
    setup.pusher.stop()


@pytest.mark.allowed_errors(
    r"timeline failed to load and will not be served",
    r"timeline is broken and will not be served",
)
def test_safekeeper_corrupt_control_file(safekeeper: Safekeeper):
    """A corrupt control file breaks its timeline only: listed as broken with an error naming
    the file, 409 on its status, while the other timeline keeps serving."""
    http = safekeeper.http
    tenant = random_id()
    good, bad = random_id(), random_id()
    for timeline in (good, bad):
        http.timeline_create(tenant, timeline, start_lsn="0/2000000", system_id=7)
    safekeeper.stop()
    control = safekeeper.timeline_dir(tenant, bad) / "safekeeper.control"
    data = bytearray(control.read_bytes())
    data[len(data) // 2] ^= 0xFF
    control.write_bytes(bytes(data))
    safekeeper.start()

    listing = http.timeline_list()
    assert listing["timelines"] == [{"tenant_id": tenant, "timeline_id": good}]
    [broken] = listing["broken"]
    assert broken["timeline_id"] == bad
    assert "safekeeper.control" in broken["error"], broken
    with pytest.raises(SafekeeperApiError) as e:
        http.timeline_status(tenant, bad)
    assert e.value.status == 409 and "broken" in e.value.msg
    assert http.timeline_status(tenant, good)["flush_lsn"] == "0/02000000"
    assert http.metric_value("safekeeper_broken_timelines") == 1
    # Deleting the broken timeline removes it for good.
    assert http.timeline_delete(tenant, bad) == {"existed": True}
    safekeeper.restart()
    assert http.timeline_list()["broken"] == []
