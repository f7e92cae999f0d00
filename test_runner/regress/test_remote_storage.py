"""The pageserver's object storage (LocalFs here): every flushed layer and an index naming
it reach the bucket through the timeline's upload queue, `remote_consistent_lsn` follows
what the bucket holds, and a restart resumes from the remote index without uploading again.

The bucket checker reads the bucket as a restore would: the newest index of the timeline
must name only layer objects that exist, with the size it says; every local layer must be
named by it once the queue is drained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.http_api import ApiError
from fixtures.pageserver import wait_timeline_state
from fixtures.pageserver_env import PageserverEnv
from fixtures.safekeeper import lsn_to_int
from fixtures.utils import wait_until


def timeline_prefix(bucket: Path, tenant: str, timeline: str) -> Path:
    return bucket / "tenants" / tenant / "timelines" / timeline


def check_bucket(bucket: Path, tenant: str, timeline: str) -> dict:
    """The newest index of the timeline, after checking that it names only objects that
    exist with the size it says."""
    prefix = timeline_prefix(bucket, tenant, timeline)
    indexes = sorted(prefix.glob("index_part.json-*"))
    assert indexes, f"no index in {prefix}: {sorted(p.name for p in prefix.glob('*'))}"
    index = json.loads(indexes[-1].read_text())
    assert index["version"] == 1, index
    for name, meta in index["layer_metadata"].items():
        obj = prefix / f"{name}-{meta['generation']:08x}"
        assert obj.is_file(), f"{indexes[-1].name} names {obj.name}, which is not in the bucket"
        assert obj.stat().st_size == meta["file_size"], obj
    return index


def local_layers(env: PageserverEnv) -> set[str]:
    d = env.pageserver.timeline_dir(env.tenant, env.timeline)
    return {p.name for p in d.iterdir() if "__" in p.name and not p.name.endswith("___temp")}


def wait_uploaded(env: PageserverEnv, timeout: float = 60.0) -> dict:
    """Until remote_consistent_lsn reaches disk_consistent_lsn; returns the detail."""

    def caught_up():
        d = env.detail()
        disk = lsn_to_int(d["disk_consistent_lsn"])
        return d if lsn_to_int(d["remote_consistent_lsn"]) >= disk > 0 else None

    return wait_until(caught_up, timeout=timeout, what="remote_consistent_lsn reaches disk")


def test_layers_and_index_reach_the_bucket_and_survive_a_restart(ps_env_factory, test_dir):
    bucket = test_dir.path / "bucket"
    env = ps_env_factory(config={"remote_storage": {"local_path": str(bucket)}})
    compute = env.import_compute()
    # The imported timeline's layers and first index are uploaded at start.
    first = wait_uploaded(env)
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)

    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g"
    )
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(env.tenant, env.timeline)
    detail = wait_uploaded(env)
    assert lsn_to_int(detail["remote_consistent_lsn"]) > lsn_to_int(first["remote_consistent_lsn"])
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    assert index["metadata"]["disk_consistent_lsn"] == detail["disk_consistent_lsn"]
    objects_before = {
        p.name: p.stat().st_mtime_ns
        for p in timeline_prefix(bucket, env.tenant, env.timeline).iterdir()
    }

    # A restart resumes from the remote index: nothing is uploaded again.
    env.pageserver.stop()
    env.pageserver.start()
    wait_timeline_state(env.http, env.tenant, env.timeline, "Active")
    after = wait_uploaded(env)
    assert after["remote_consistent_lsn"] == detail["remote_consistent_lsn"]
    for name, mtime in objects_before.items():
        if not name.startswith("index_part.json"):
            obj = timeline_prefix(bucket, env.tenant, env.timeline) / name
            assert obj.stat().st_mtime_ns == mtime, f"{name} was uploaded again"

    # And it goes on uploading.
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'y' FROM generate_series(1, 20000) g")
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(env.tenant, env.timeline)
    final = wait_uploaded(env)
    assert lsn_to_int(final["remote_consistent_lsn"]) > lsn_to_int(after["remote_consistent_lsn"])
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    # The pageserver reports what the bucket holds to the safekeepers.
    assert index["metadata"]["disk_consistent_lsn"] == final["remote_consistent_lsn"]


@pytest.mark.allowed_errors(r"request failed: attach: .*corrupt index_part\.json")
def test_detach_and_attach_restore_the_tenant_from_the_bucket(ps_env_factory, test_dir):
    """Backup and restore: the local directory goes (detach), the tenant comes back from
    the bucket alone (attach in a newer generation), every page equals the compute's, and
    ingest goes on. Bad attaches are refused with clear errors and change nothing."""
    bucket = test_dir.path / "bucket"
    env = ps_env_factory(config={"remote_storage": {"local_path": str(bucket)}})
    compute = env.import_compute()
    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 40000) g"
    )
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(env.tenant, env.timeline)
    wait_uploaded(env)
    check_bucket(bucket, env.tenant, env.timeline)

    http = env.http
    http.location_config(env.tenant, "Detached")
    assert not env.pageserver.tenant_dir(env.tenant).exists()
    assert env.tenant not in {t["id"] for t in http.tenant_list()}
    http.location_config(env.tenant, "Detached")  # idempotent

    # The compute keeps writing meanwhile; the safekeepers keep the WAL for the pageserver.
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'after detach' FROM generate_series(1, 5000) g")

    answer = http.location_config(
        env.tenant, "AttachedSingle", generation=2, tenant_conf=env.tenant_config()
    )
    assert answer["attached_from_remote"] is True, answer
    assert answer["tenant"]["generation"] == 2 and answer["tenant"]["timelines"] == 1, answer
    wait_timeline_state(http, env.tenant, env.timeline, "Active")
    lsn = env.checkpoint_and_wait()
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()

    # Uploads go on in generation 2; generation 1's objects stay readable.
    env.http.timeline_checkpoint(env.tenant, env.timeline)
    wait_uploaded(env)
    prefix = timeline_prefix(bucket, env.tenant, env.timeline)
    assert (prefix / "index_part.json-00000002").is_file()
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert {m["generation"] for m in index["layer_metadata"].values()} == {1, 2}, index

    # Bad input: an older generation, no generation, a corrupt index of another tenant.
    for mode, kwargs, status in (
        ("AttachedSingle", {"generation": 1}, 409),
        ("AttachedSingle", {}, 400),
        ("AttachedSingle", {"generation": 0}, 400),
        ("AttachedSingle", {"generation": 2, "tenant_conf": {"no_such_key": 1}}, 400),
        ("Detached", {"generation": 2}, 400),
        ("AttachedStale", {"generation": 2}, 400),
    ):
        with pytest.raises(ApiError) as refused:
            http.location_config(env.tenant, mode, **kwargs)
        assert refused.value.status == status, (mode, kwargs, refused.value)
    other = "0123456789abcdef0123456789abcdef"
    bad = timeline_prefix(bucket, other, "fedcba9876543210fedcba9876543210")
    bad.mkdir(parents=True)
    (bad / "index_part.json-00000001").write_text('{"version": 1, "layer_meta')
    with pytest.raises(ApiError) as corrupt:
        http.location_config(other, "AttachedSingle", generation=1)
    assert corrupt.value.status == 500, corrupt.value
    assert "index_part.json-00000001" in corrupt.value.msg, corrupt.value
    assert other not in {t["id"] for t in http.tenant_list()}
    assert not env.pageserver.tenant_dir(other).exists()
    # The attached tenant kept serving.
    assert env.detail()["state"] == "Active"
