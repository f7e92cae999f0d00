"""The safekeeper binary: command line, data directory ownership, HTTP API, auth."""

from __future__ import annotations

import subprocess

import pytest

from fixtures.auth import AuthKeys
from fixtures.paths import StrataBinaries
from fixtures.safekeeper import (
    Safekeeper,
    SafekeeperApiError,
    SafekeeperFactory,
    random_id,
)
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
