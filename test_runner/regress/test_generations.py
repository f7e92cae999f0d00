"""Attachment generations with a real `storage_controller`: when a tenant moves to another
pageserver while the old one still runs (a split brain: it did not hear of the move), the
old one keeps uploading in its own generation, but it can neither advertise a
`remote_consistent_lsn` (safekeepers would trim WAL that only its superseded uploads
cover) nor remove objects the new owner's index names; restarts re-attach in new
generations, and a node that lost the tenant drops its local copy.

The oracles: the bucket's newest index names only objects that exist, and the new
owner's pages equal the compute's.
"""

from __future__ import annotations

import pytest
import requests

from fixtures.http_api import ApiError
from fixtures.pageserver import wait_for_pageserver_lsn, wait_timeline_state
from fixtures.pageserver_env import checkpoint_lsn, run_page_oracle
from fixtures.remote_storage import check_bucket, local_fs_bucket, timeline_prefix
from fixtures.safekeeper import lsn_to_int
from fixtures.schemathesis import run_schemathesis
from fixtures.utils import wait_until


def uploaded(http, tenant: str, timeline: str) -> dict | None:
    d = http.timeline_detail(tenant, timeline)
    disk = lsn_to_int(d["disk_consistent_lsn"])
    return d if lsn_to_int(d["remote_consistent_lsn"]) >= disk > 0 else None


@pytest.mark.allowed_errors(
    # ps1's deletion of the timeline, refused because ps2 owns the tenant now.
    r"generation 00000001 is no longer the tenant's current one",
    r"deleting timeline",
    r"has not placed it on this node",
)
def test_a_superseded_pageserver_cannot_trim_wal_or_delete_the_new_owners_objects(
    ps_env_factory, pageserver_factory, storage_controller, test_dir
):
    bucket = local_fs_bucket(test_dir.path / "bucket")
    sc = storage_controller
    config = {"remote_storage": bucket.config, "control_plane_api": sc.url}
    env = ps_env_factory(config=config)
    tenant, timeline = env.tenant, env.timeline
    # A tenant the controller did not place cannot be created: it could never validate.
    unplaced = "0123456789abcdef0123456789abcdef"
    with pytest.raises(ApiError) as refused:
        env.http.tenant_create(unplaced)
    assert refused.value.status == 409 and "attach-hook" in refused.value.msg, refused.value
    assert not env.pageserver.tenant_dir(unplaced).exists()
    # Nor one placed on another node, even in generation 1.
    assert sc.attach_hook(unplaced, 2) == 1
    with pytest.raises(ApiError) as refused:
        env.http.tenant_create(unplaced)
    assert refused.value.status == 409 and "attach-hook" in refused.value.msg, refused.value
    # The controller places the tenant before the pageserver creates it (generation 1).
    assert sc.attach_hook(tenant, 1) == 1
    compute = env.import_compute()
    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 20000) g"
    )
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(tenant, timeline)
    before = wait_until(lambda: uploaded(env.http, tenant, timeline), 60, what="ps1 uploads")
    check_bucket(bucket, tenant, timeline)

    # The tenant moves to ps2 in generation 2; ps1 is not told.
    ps2 = pageserver_factory.create(2, config=config).start()
    assert sc.attach_hook(tenant, 2) == 2
    answer = ps2.http.location_config(tenant, "AttachedSingle", generation=2)
    assert answer["attached_from_remote"] is True, answer
    wait_timeline_state(ps2.http, tenant, timeline, "Active")
    assert sc.http.validate([(tenant, 1)]) == {tenant: False}
    assert sc.http.validate([(tenant, 2)]) == {tenant: True}
    assert sc.http.tenant(tenant) == {"tenant_id": tenant, "generation": 2, "node_id": 2}

    # Both ingest and flush. ps2 advertises what it uploaded; ps1 uploads too (its own
    # generation's names) but its remote_consistent_lsn stays where generation 1 left it.
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'moved' FROM generate_series(1, 20000) g")
    lsn = env.checkpoint_and_wait()
    env.http.timeline_checkpoint(tenant, timeline)
    wait_for_pageserver_lsn(ps2.http, tenant, timeline, lsn)
    ps2.http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(ps2.http, tenant, timeline), 60, what="ps2 uploads")
    wait_until(
        lambda: "generation 00000001 is stale" in env.pageserver.log_path.read_text(),
        30,
        what="ps1 told its generation is stale",
    )
    stale = env.detail()
    assert lsn_to_int(stale["disk_consistent_lsn"]) >= lsn, stale
    assert stale["remote_consistent_lsn"] == before["remote_consistent_lsn"], (before, stale)
    objects = bucket.objects(timeline_prefix(tenant, timeline))
    assert f"{timeline_prefix(tenant, timeline)}index_part.json-00000002" in objects

    # The newest index is generation 2's and names only what exists; ps2's pages are the
    # compute's.
    index = check_bucket(bucket, tenant, timeline)
    assert (
        index["metadata"]["disk_consistent_lsn"]
        == ps2.http.timeline_detail(tenant, timeline)["disk_consistent_lsn"]
    )
    oracle_log = test_dir.path / "oracle-ps2.log"
    run_page_oracle(
        env.wp.strata_bin, compute.pg, ps2.http, tenant, timeline, lsn, oracle_log
    ).check()

    # ps1 deleting the timeline must not remove the objects ps2's index names.
    with pytest.raises(ApiError) as refused:
        env.http.timeline_delete(tenant, timeline)
    assert refused.value.status == 409, refused.value
    assert "no longer the tenant's current one" in refused.value.msg, refused.value
    check_bucket(bucket, tenant, timeline)

    # Restarts re-attach: the controller gives ps1 nothing (its local copy goes) and ps2
    # the tenant in generation 3.
    env.pageserver.stop()
    env.pageserver.start()
    assert not env.pageserver.tenant_dir(tenant).exists()
    assert tenant not in {t["id"] for t in env.http.tenant_list()}
    ps2.stop()
    ps2.start()
    wait_timeline_state(ps2.http, tenant, timeline, "Active")
    assert ps2.http.tenant_status(tenant)["generation"] == 3
    assert sc.http.tenant(tenant)["generation"] == 3
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'gen3' FROM generate_series(1, 5000) g")
    wait_for_pageserver_lsn(ps2.http, tenant, timeline, checkpoint_lsn(compute.pg))
    ps2.http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(ps2.http, tenant, timeline), 60, what="ps2 uploads in gen 3")
    index = check_bucket(bucket, tenant, timeline)
    assert f"{timeline_prefix(tenant, timeline)}index_part.json-00000003" in bucket.objects(
        timeline_prefix(tenant, timeline)
    )
    assert 3 in {m["generation"] for m in index["layer_metadata"].values()}, index


@pytest.mark.allowed_errors(r"failpoint controller-")
@pytest.mark.parametrize("failpoint", ["controller-before-persist", "controller-after-persist"])
def test_the_controller_survives_a_crash_mid_change_and_refuses_bad_input(
    storage_controller, failpoint
):
    """A crash (the process exits) just before or after the state file is replaced: after
    a restart the tenant is in the old or the new generation, never lower, and the next
    attach issues a generation above both. Bad input is refused and changes nothing."""
    sc = storage_controller
    tenant = "00112233445566778899aabbccddeeff"
    assert sc.attach_hook(tenant, 1) == 1
    sc.http.configure_failpoints((failpoint, "exit"))
    with pytest.raises(requests.RequestException):
        sc.attach_hook(tenant, 2)
    wait_until(lambda: not sc.is_running(), timeout=30, what="the controller exited")
    assert sc.returncode == 1, f"exit status {sc.returncode}"
    sc.start()
    placed = sc.http.tenant(tenant)
    expected = {"controller-before-persist": (1, 1), "controller-after-persist": (2, 2)}
    assert (placed["generation"], placed["node_id"]) == expected[failpoint], placed
    assert sc.attach_hook(tenant, 2) == placed["generation"] + 1

    # Bad input: a malformed body, an unknown field, a bad id, unknown tenants.
    for path, body in (
        ("/control/v1/attach-hook", b'{"tenant_id": '),
        ("/control/v1/attach-hook", b'{"tenant_id": "zz", "node_id": 1}'),
        ("/upcall/v1/re-attach", b'{"node_id": 1, "extra": true}'),
        ("/upcall/v1/validate", b'{"tenants": [{"id": "00", "generation": 1}]}'),
    ):
        with pytest.raises(ApiError) as refused:
            sc.http.request("POST", path, data=body, headers={"Content-Type": "application/json"})
        assert refused.value.status == 400, (path, body, refused.value)
    unknown = "ffeeddccbbaa99887766554433221100"
    with pytest.raises(ApiError) as missing:
        sc.http.tenant(unknown)
    assert missing.value.status == 404, missing.value
    with pytest.raises(ApiError) as missing:
        sc.attach_hook(unknown, None)
    assert missing.value.status == 404, missing.value
    assert sc.http.validate([(unknown, 1)]) == {unknown: False}
    assert sc.http.re_attach(7) == {}
    assert sc.http.tenant(tenant)["generation"] == placed["generation"] + 1


@pytest.mark.allowed_errors(r"AttachedStale", r"deleting timeline")
def test_attached_stale_serves_and_uploads_but_holds_deletions_and_remote_consistent_lsn(
    ps_env_factory, test_dir
):
    """The migration mode of the old node (no control plane here): AttachedStale keeps
    reading, ingesting and uploading, but `remote_consistent_lsn` stays put and the
    timeline cannot be removed from the bucket; it is remembered across a restart;
    AttachedSingle in the same generation releases what was held."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(config={"remote_storage": bucket.config})
    tenant, timeline = env.tenant, env.timeline
    compute = env.import_compute()
    compute.pg.safe_psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(tenant, timeline)
    before = wait_until(lambda: uploaded(env.http, tenant, timeline), 60, what="uploads")

    answer = env.http.location_config(tenant, "AttachedStale", generation=1)
    assert answer["mode"] == "AttachedStale", answer
    compute.pg.safe_psql("INSERT INTO t SELECT g FROM generate_series(1, 10000) g")
    lsn = env.checkpoint_and_wait()
    env.http.timeline_checkpoint(tenant, timeline)
    # The layers and the index go up (the new owner may read them) ...
    wait_until(
        lambda: (
            lsn_to_int(check_bucket(bucket, tenant, timeline)["metadata"]["disk_consistent_lsn"])
            >= lsn
        ),
        30,
        what="the index uploaded while stale",
    )
    # ... but nothing is advertised, and the timeline's objects cannot be removed.
    stale = env.detail()
    assert stale["remote_consistent_lsn"] == before["remote_consistent_lsn"], (before, stale)
    with pytest.raises(ApiError) as refused:
        env.http.timeline_delete(tenant, timeline)
    assert refused.value.status == 409 and "AttachedStale" in refused.value.msg, refused.value
    assert env.detail()["state"] == "Active"
    env.run_oracle(lsn).check()

    env.pageserver.stop()
    env.pageserver.start()
    wait_timeline_state(env.http, tenant, timeline, "Active")
    with pytest.raises(ApiError) as refused:
        env.http.timeline_delete(tenant, timeline)
    assert "AttachedStale" in refused.value.msg, refused.value

    answer = env.http.location_config(tenant, "AttachedSingle", generation=1)
    assert answer["mode"] == "AttachedSingle", answer
    compute.pg.safe_psql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(env.http, tenant, timeline), 60, what="released uploads")


@pytest.mark.openapi_fuzz
def test_storage_controller_openapi_schemathesis(storage_controller, test_dir):
    """`schemathesis run --checks all` against a live controller finds no failure and no
    server error (malformed bodies and ids are 400s, unknown tenants 404s)."""
    paths = storage_controller.http.openapi()["paths"]
    for p in ("/upcall/v1/re-attach", "/upcall/v1/validate", "/control/v1/attach-hook"):
        assert p in paths, sorted(paths)
    run_schemathesis(storage_controller.http.base, test_dir, exclude_paths=["/v1/failpoints"])
