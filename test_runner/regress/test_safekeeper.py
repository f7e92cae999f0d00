"""The safekeeper binary: command line, data directory ownership, HTTP API, auth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.auth import AuthKeys
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


@pytest.mark.parametrize("start", ["segment_start", "mid_segment"])
def test_stock_standby(
    start: str,
    safekeeper: Safekeeper,
    vanilla_pg: VanillaPostgres,
    strata_bin: StrataBinaries,
    test_dir: TestDir,
    pg_bindir: Path,
    port_allocator: PortAllocator,
    run_as: RunAs,
    services: ServiceRegistry,
):
    """A stock PostgreSQL 15 standby streams from a safekeeper and, promoted, has every row.

    The primary's WAL reaches the safekeeper through the test-only proposer
    (test_wal_pusher), from a segment start (after pg_switch_wal) or from the middle of a
    segment. The standby is a pg_basebackup of the primary that first streams from the
    primary until it has replayed past the timeline's start, then is restarted with its
    primary_conninfo pointing at the safekeeper: its walreceiver asks for the segment that
    holds the timeline's start, from the segment's beginning, so with a mid-segment start
    the bytes before it are the safekeeper's synthesized ones.
    """
    primary = vanilla_pg
    primary.configure({"wal_level": "replica", "max_wal_senders": 5, "max_replication_slots": 5})
    primary.start()
    system_id = int(primary.safe_psql("SELECT system_identifier FROM pg_control_system()")[0][0])
    pg_version = int(primary.safe_psql("SHOW server_version_num")[0][0])
    primary.safe_psql("SELECT pg_create_physical_replication_slot('sk_pusher', true)")
    primary.safe_psql("CREATE TABLE t (id int PRIMARY KEY, payload text)")
    primary.safe_psql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 500) g")

    # The standby: a base backup of the primary, first streaming from the primary itself.
    standby = VanillaPostgres(
        "standby",
        pg_bindir,
        test_dir.owned_dir("standby"),
        test_dir.path,
        port_allocator.get(),
        run_as,
    )
    services.register(standby)
    standby._run_tool(
        [
            pg_bindir / "pg_basebackup",
            "-D",
            standby.datadir,
            "-h",
            primary.host,
            "-p",
            str(primary.port),
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
            "primary_conninfo": primary.connstr(),
            "hot_standby": True,
            "wal_receiver_status_interval": "1s",
        }
    )
    signal_file = standby.datadir / "standby.signal"
    signal_file.touch()
    run_as.chown(signal_file)
    standby.start()

    # The timeline starts at a segment start or mid-segment, past the base backup.
    primary.safe_psql("INSERT INTO t SELECT g, 'a' FROM generate_series(501, 1000) g")
    if start == "segment_start":
        primary.safe_psql("SELECT pg_switch_wal()")
        insert = lsn_to_int(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
        start_lsn = insert - insert % WAL_SEG_SIZE
    else:
        start_lsn = lsn_to_int(primary.safe_psql("SELECT pg_current_wal_insert_lsn()")[0][0])
        assert start_lsn % WAL_SEG_SIZE > 8192, "mid-segment, past the first page"
    tenant, timeline = random_id(), random_id()
    safekeeper.http.timeline_create(
        tenant,
        timeline,
        start_lsn=int_to_lsn(start_lsn),
        system_id=system_id,
        pg_version=pg_version,
    )
    pusher = services.register(
        WalPusher(
            strata_bin,
            test_dir.path,
            primary_port=primary.port,
            slot="sk_pusher",
            safekeeper=safekeeper,
            tenant_id=tenant,
            timeline_id=timeline,
            system_id=system_id,
            pg_version=pg_version,
        )
    )
    pusher.start()
    primary.safe_psql("INSERT INTO t SELECT g, 'b' FROM generate_series(1001, 1500) g")
    wait_until(lambda: replayed(standby, current_lsn(primary)), timeout=60)

    # Now the standby streams from the safekeeper.
    standby.stop()
    standby.configure({"primary_conninfo": safekeeper.connstr(tenant, timeline, user="postgres")})
    # Promotion stops the walreceiver.
    standby.allowed_errors.append(r"FATAL:  terminating walreceiver process due to administrator")
    standby.start()

    primary.safe_psql("INSERT INTO t SELECT g, 'c' FROM generate_series(1501, 3000) g")
    primary.safe_psql("UPDATE t SET payload = 'updated' WHERE id % 10 = 0")
    primary.safe_psql("DELETE FROM t WHERE id % 7 = 0")
    expected = primary.safe_psql(ROWS_QUERY)
    target = current_lsn(primary)
    wait_until(lambda: replayed(standby, target), timeout=120, what="standby caught up")

    status = safekeeper.http.timeline_status(tenant, timeline)
    assert lsn_to_int(status["commit_lsn"]) >= target
    senders = status["walsenders"]
    assert [s["kind"] for s in senders] == ["standby"], senders
    # The walreceiver asked for the timeline's first segment, from its beginning.
    assert senders[0]["start_lsn"] == int_to_lsn(start_lsn - start_lsn % WAL_SEG_SIZE), senders
    assert safekeeper.http.metric_value("safekeeper_wal_senders") == 1
    assert safekeeper.http.metric_value("safekeeper_wal_proposers") == 1

    assert standby.safe_psql("SELECT pg_promote(true, 60)") == [(True,)]
    assert standby.safe_psql(ROWS_QUERY) == expected
    standby.safe_psql("INSERT INTO t VALUES (100000, 'promoted')")
    pusher.stop()


def current_lsn(pg: VanillaPostgres) -> int:
    return lsn_to_int(pg.safe_psql("SELECT pg_current_wal_flush_lsn()")[0][0])


def replayed(standby: VanillaPostgres, target: int) -> bool:
    lsn = standby.safe_psql("SELECT pg_last_wal_replay_lsn()")[0][0]
    return lsn is not None and lsn_to_int(lsn) >= target
