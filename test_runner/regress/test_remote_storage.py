"""The pageserver's object storage, on LocalFs, S3 (moto) and Azure (Azurite): every
flushed layer and an index naming it reach the bucket through the timeline's upload queue,
`remote_consistent_lsn` follows what the bucket holds, a restart resumes from the remote
index without uploading again, and detach + attach restores a tenant from the bucket alone.

The bucket checker reads the bucket as a restore would: the newest index of the timeline
must name only layer objects that exist, with the size it says; every local layer must be
named by it once the queue is drained.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests

from fixtures.http_api import ApiError
from fixtures.pageserver import wait_timeline_state
from fixtures.pageserver_env import PageserverEnv
from fixtures.paths import StrataBinaries
from fixtures.remote_storage import check_bucket, local_fs_bucket, timeline_prefix
from fixtures.safekeeper import int_to_lsn, lsn_to_int
from fixtures.strata_cli import StrataEnv
from fixtures.utils import wait_until
from fixtures.workdir import TestDir


def local_layers(env: PageserverEnv) -> set[str]:
    d = env.pageserver.timeline_dir(env.tenant, env.timeline)
    return {
        p.name
        for p in d.iterdir()
        if "__" in p.name and not p.name.endswith(("___temp", ".evicted"))
    }


def flush_to_layers(env: PageserverEnv) -> None:
    """CHECKPOINT the compute, wait until the pageserver has its WAL, and write it out to
    layer files (which the upload queue then uploads)."""
    env.checkpoint_and_wait()
    env.http.timeline_checkpoint(env.tenant, env.timeline)


def wait_uploaded(env: PageserverEnv, timeout: float = 60.0) -> dict:
    """Until remote_consistent_lsn reaches disk_consistent_lsn; returns the detail."""

    def caught_up():
        d = env.detail()
        disk = lsn_to_int(d["disk_consistent_lsn"])
        return d if lsn_to_int(d["remote_consistent_lsn"]) >= disk > 0 else None

    return wait_until(caught_up, timeout=timeout, what="remote_consistent_lsn reaches disk")


def test_layers_and_index_reach_the_bucket_and_survive_a_restart(ps_env_factory, remote_bucket):
    bucket = remote_bucket
    env = ps_env_factory(config={"remote_storage": bucket.config})
    compute = env.import_compute()
    # The imported timeline's layers and first index are uploaded at start.
    first = wait_uploaded(env)
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)

    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g"
    )
    flush_to_layers(env)
    detail = wait_uploaded(env)
    assert lsn_to_int(detail["remote_consistent_lsn"]) > lsn_to_int(first["remote_consistent_lsn"])
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    assert index["metadata"]["disk_consistent_lsn"] == detail["disk_consistent_lsn"]
    gauge = env.http.metric_value(
        f'pageserver_remote_consistent_lsn{{tenant_id="{env.tenant}",timeline_id="{env.timeline}"'
    )
    assert gauge == lsn_to_int(detail["remote_consistent_lsn"]), gauge
    prefix = timeline_prefix(env.tenant, env.timeline)
    objects_before = bucket.objects(prefix)

    # A restart resumes from the remote index: nothing is uploaded again.
    env.pageserver.stop()
    env.pageserver.start()
    wait_timeline_state(env.http, env.tenant, env.timeline, "Active")
    after = wait_uploaded(env)
    assert after["remote_consistent_lsn"] == detail["remote_consistent_lsn"]
    objects_after = bucket.objects(prefix)
    for key, stamp in objects_before.items():
        if "index_part.json" not in key:
            assert objects_after.get(key) == stamp, f"{key} was uploaded again"

    # And it goes on uploading.
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'y' FROM generate_series(1, 20000) g")
    flush_to_layers(env)
    final = wait_uploaded(env)
    assert lsn_to_int(final["remote_consistent_lsn"]) > lsn_to_int(after["remote_consistent_lsn"])
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    # remote_consistent_lsn, what the safekeepers are told, is what the bucket holds.
    assert index["metadata"]["disk_consistent_lsn"] == final["remote_consistent_lsn"]


@pytest.mark.allowed_errors(r"request failed: attach: .*corrupt index_part\.json")
def test_detach_and_attach_restore_the_tenant_from_the_bucket(ps_env_factory, remote_bucket):
    """Backup and restore: the local directory goes (detach), the tenant comes back from
    the bucket alone (attach in a newer generation), every page equals the compute's, and
    ingest goes on. Bad attaches are refused with clear errors and change nothing."""
    bucket = remote_bucket
    env = ps_env_factory(config={"remote_storage": bucket.config})
    compute = env.import_compute()
    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 40000) g"
    )
    flush_to_layers(env)
    wait_uploaded(env)
    check_bucket(bucket, env.tenant, env.timeline)

    http = env.http
    http.location_config(env.tenant, "Detached")
    assert not env.pageserver.tenant_dir(env.tenant).exists()
    assert env.tenant not in {t["id"] for t in http.tenant_list()}
    http.location_config(env.tenant, "Detached")  # idempotent

    # The compute keeps writing meanwhile; the safekeepers keep the WAL for the pageserver.
    compute.pg.safe_psql("INSERT INTO t SELECT g, 'after detach' FROM generate_series(1, 5000) g")

    manifests = bucket.objects(f"tenants/{env.tenant}/tenant-manifest")
    assert list(manifests) == [f"tenants/{env.tenant}/tenant-manifest-00000001.json"], manifests
    # No tenant_conf: the tenant's config comes back from its manifest (its safekeepers:
    # without them it would ingest nothing).
    answer = http.location_config(env.tenant, "AttachedSingle", generation=2)
    assert answer["attached_from_remote"] is True, answer
    overrides = http.tenant_config(env.tenant)["overrides"]
    assert overrides == {**overrides, **env.tenant_config()}, overrides
    assert answer["tenant"]["generation"] == 2 and answer["tenant"]["timelines"] == 1, answer
    wait_timeline_state(http, env.tenant, env.timeline, "Active")
    lsn = env.checkpoint_and_wait()
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()

    # Uploads go on in generation 2; generation 1's objects stay readable.
    env.http.timeline_checkpoint(env.tenant, env.timeline)
    wait_uploaded(env)
    prefix = timeline_prefix(env.tenant, env.timeline)
    assert f"{prefix}index_part.json-00000002" in bucket.objects(prefix)
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert {m["generation"] for m in index["layer_metadata"].values()} == {1, 2}, index

    # Bad input: an older generation, no generation, a corrupt index of another tenant.
    for mode, kwargs, status in (
        ("AttachedSingle", {"generation": 1}, 409),
        ("AttachedSingle", {}, 400),
        ("AttachedSingle", {"generation": 0}, 400),
        ("AttachedSingle", {"generation": 2, "tenant_conf": {"no_such_key": 1}}, 400),
        ("Detached", {"generation": 2}, 400),
        ("AttachedStale", {"generation": 1}, 409),
        ("AttachedStale", {}, 400),
    ):
        with pytest.raises(ApiError) as refused:
            http.location_config(env.tenant, mode, **kwargs)
        assert refused.value.status == status, (mode, kwargs, refused.value)
    other = "0123456789abcdef0123456789abcdef"
    bad = timeline_prefix(other, "fedcba9876543210fedcba9876543210")
    bucket.write(f"{bad}index_part.json-00000001", b'{"version": 1, "layer_meta')
    with pytest.raises(ApiError) as corrupt:
        http.location_config(other, "AttachedSingle", generation=1)
    assert corrupt.value.status == 500, corrupt.value
    assert "index_part.json-00000001" in corrupt.value.msg, corrupt.value
    assert other not in {t["id"] for t in http.tenant_list()}
    assert not env.pageserver.tenant_dir(other).exists()
    # The attached tenant kept serving.
    assert env.detail()["state"] == "Active"


@pytest.mark.allowed_errors(r"simulated failure of")
def test_a_flaky_bucket_delays_uploads_but_loses_nothing(ps_env_factory, test_dir):
    """A third of the remote calls fail (and the first attempt of each always does): the
    upload queue retries, the bucket never holds an index naming a missing layer (checked
    while it runs), and once drained it holds everything."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(
        config={
            "remote_storage": bucket.config,
            "test_remote_failures": 1,
            "test_remote_failures_probability": 0.3,
        }
    )
    compute = env.import_compute()
    for i in range(4):
        compute.pg.safe_psql(
            f"CREATE TABLE t{i} AS SELECT g, repeat('x', 200) AS pad "
            "FROM generate_series(1, 8000) g"
        )
        flush_to_layers(env)
        if any(
            "index_part.json" in k
            for k in bucket.objects(timeline_prefix(env.tenant, env.timeline))
        ):
            check_bucket(bucket, env.tenant, env.timeline)
    detail = wait_uploaded(env, timeout=120)
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    assert index["metadata"]["disk_consistent_lsn"] == detail["disk_consistent_lsn"]
    failures = env.http.metric_value("pageserver_remote_operation_failures_total")
    assert failures is not None and failures > 0, failures


@pytest.mark.allowed_errors(
    r"failpoint timeline-delete-after-mark",
    r"marked deleted in remote storage .* did not finish",
    r"timeline is broken",
)
def test_timeline_deletion_marks_then_removes_and_resumes_after_a_crash(ps_env_factory, test_dir):
    """DELETE of a timeline marks its index deleted, then removes its objects, then the local
    files; the other timelines keep theirs. A crash (the process exits) after the mark leaves
    a timeline that starts Broken saying so; DELETE again finishes; an attach never brings a
    marked timeline back."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(config={"remote_storage": bucket.config})
    env.import_compute()
    wait_uploaded(env)
    http = env.http
    branches = []
    for name in ("a", "b"):
        tl = uuid.uuid4().hex
        http.timeline_branch(env.tenant, tl, env.timeline)
        wait_timeline_state(http, env.tenant, tl, "Active")
        wait_until(
            lambda tl=tl: any(
                "index_part.json" in k for k in bucket.objects(timeline_prefix(env.tenant, tl))
            ),
            what=f"branch {name}'s index uploaded",
        )
        branches.append(tl)
    a, b = branches

    http.timeline_delete(env.tenant, a)
    assert bucket.objects(timeline_prefix(env.tenant, a)) == {}
    assert not env.pageserver.timeline_dir(env.tenant, a).exists()
    check_bucket(bucket, env.tenant, env.timeline)

    # A crash right after the mark.
    http.configure_failpoints(("timeline-delete-after-mark", "exit"))
    with pytest.raises(requests.RequestException):
        http.timeline_delete(env.tenant, b)
    ps = env.pageserver
    wait_until(lambda: not ps.is_running(), timeout=30, what="the pageserver exited")
    assert ps.returncode == 1, f"exit status {ps.returncode}"
    index = json.loads(bucket.read(f"{timeline_prefix(env.tenant, b)}index_part.json-00000001"))
    assert index.get("deleted_at"), index
    env.pageserver.start()
    info = wait_timeline_state(http, env.tenant, b, "Broken")
    assert "marked deleted" in json.dumps(info), info
    http.timeline_delete(env.tenant, b)
    assert bucket.objects(timeline_prefix(env.tenant, b)) == {}
    assert {t["timeline_id"] for t in http.timeline_list(env.tenant)} == {env.timeline}
    wait_timeline_state(http, env.tenant, env.timeline, "Active")


CRASH_POINTS = [
    ("remote-before-upload_layer", "flush"),
    ("remote-after-upload_layer", "flush"),
    ("remote-before-upload_index", "flush"),
    ("remote-after-upload_index", "flush"),
    ("attach-before-rename", "attach"),
    ("detach-before-remove", "detach"),
    ("timeline-delete-after-mark", "timeline_delete"),
    ("timeline-delete-before-indexes", "timeline_delete"),
    ("timeline-delete-after-mark", "tenant_delete"),
]


@pytest.mark.allowed_errors(
    r"marked deleted in remote storage .* did not finish",
    r"timeline is broken",
)
@pytest.mark.parametrize(("failpoint", "operation"), CRASH_POINTS)
def test_a_crash_at_any_step_converges(ps_env_factory, test_dir, failpoint, operation):
    """The process exits at one step of an upload, an attach, a detach or a deletion; after
    a restart (and, where the operation was cut short, repeating it) the state converges:
    the bucket's index names only objects that exist, local and remote agree, and the
    tenant restored from the bucket alone has the compute's relations."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(config={"remote_storage": bucket.config})
    compute = env.import_compute()
    wait_uploaded(env)
    http, ps = env.http, env.pageserver
    branch = uuid.uuid4().hex
    if operation == "timeline_delete":
        http.timeline_branch(env.tenant, branch, env.timeline)
        wait_timeline_state(http, env.tenant, branch, "Active")
    if operation == "attach":
        http.location_config(env.tenant, "Detached")

    http.configure_failpoints((failpoint, "exit"))
    try:
        if operation == "flush":
            compute.pg.safe_psql(
                "CREATE TABLE t AS SELECT g, repeat('x', 200) AS pad "
                "FROM generate_series(1, 20000) g"
            )
            flush_to_layers(env)
        elif operation == "attach":
            http.location_config(
                env.tenant, "AttachedSingle", generation=2, tenant_conf=env.tenant_config()
            )
        elif operation == "detach":
            http.location_config(env.tenant, "Detached")
        elif operation == "timeline_delete":
            http.timeline_delete(env.tenant, branch)
        else:
            http.tenant_delete(env.tenant)
    except requests.RequestException:
        pass
    wait_until(
        lambda: not ps.is_running(), timeout=60, what=f"the pageserver exited at {failpoint}"
    )
    assert ps.returncode == 1, f"exit status {ps.returncode}"
    ps.start()

    tenants = {t["id"] for t in http.tenant_list()}
    if operation == "attach":
        assert env.tenant not in tenants, "a half-attached tenant is listed"
        http.location_config(
            env.tenant, "AttachedSingle", generation=2, tenant_conf=env.tenant_config()
        )
    elif operation == "detach":
        assert env.tenant in tenants
        wait_timeline_state(http, env.tenant, env.timeline, "Active")
    elif operation == "timeline_delete":
        http.timeline_delete(env.tenant, branch)
        assert bucket.objects(timeline_prefix(env.tenant, branch)) == {}
    elif operation == "tenant_delete":
        http.tenant_delete(env.tenant)
        assert bucket.objects(f"tenants/{env.tenant}/") == {}
        assert env.tenant not in {t["id"] for t in http.tenant_list()}
        return

    wait_timeline_state(http, env.tenant, env.timeline, "Active")
    flush_to_layers(env)
    wait_uploaded(env)
    index = check_bucket(bucket, env.tenant, env.timeline)
    assert set(index["layer_metadata"]) == local_layers(env)
    # The bucket alone is a complete copy.
    generation = max(t["generation"] for t in http.tenant_list() if t["id"] == env.tenant)
    http.location_config(env.tenant, "Detached")
    http.location_config(
        env.tenant, "AttachedSingle", generation=generation + 1, tenant_conf=env.tenant_config()
    )
    wait_timeline_state(http, env.tenant, env.timeline, "Active")
    lsn = env.checkpoint_and_wait()
    env.compare_relations(lsn).check()


SEG_SIZE = 16 * 1024 * 1024
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
# One pass of the safekeepers' WAL removal (`--wal-removal-interval`, 10 s) plus a margin.
REMOVAL_PASS_S = 12


def test_safekeepers_keep_wal_until_the_bucket_holds_it(
    strata_bin: StrataBinaries, test_dir: TestDir
):
    """The whole cluster (`strata init --remote-storage local`): with the pageserver's index
    uploads held (a paused failpoint), its layers are on its disk but not in the bucket, so
    `remote_consistent_lsn` stays and no safekeeper deletes WAL above it; once uploads go on,
    it advances and the old segments go."""
    with StrataEnv(strata_bin, test_dir.path / "repo", remote_storage="local") as env:
        tenant = env.tenant_create(
            "-c", "checkpoint_distance=1048576", "-c", "checkpoint_timeout=1s"
        )
        timeline = env.timeline(tenant)
        env.endpoint_create_start("main")
        env.sql("main", "CREATE TABLE t (id int, tag text, pad text)")
        ps_port = env.config()["pageservers"][0]["http_port"]
        ps = f"http://127.0.0.1:{ps_port}"

        def detail() -> dict:
            r = requests.get(f"{ps}/v1/tenant/{tenant}/timeline/{timeline}", timeout=10)
            r.raise_for_status()
            return r.json()

        def segments(sk: int) -> list[int]:
            tl_dir = env.repo / f"safekeeper_{sk}" / tenant / timeline
            names = [p.name.removesuffix(".partial") for p in tl_dir.iterdir()]
            return sorted(
                int(n[8:16], 16) * 256 + int(n[16:], 16) for n in names if SEGMENT_NAME.match(n)
            )

        def write_segments(n: int, tag: str) -> int:
            for i in range(n):
                env.sql(
                    "main",
                    f"INSERT INTO t SELECT g, '{tag}-{i}', repeat('x', 200) "
                    "FROM generate_series(1, 1000) g",
                )
                env.sql("main", "SELECT pg_switch_wal()")
            return lsn_to_int(env.sql("main", "SELECT pg_current_wal_lsn()")[0][0])

        wait_until(lambda: lsn_to_int(detail()["remote_consistent_lsn"]) > 0, what="first index")
        body = [{"name": "remote-before-upload_index", "actions": "pause"}]
        requests.put(f"{ps}/v1/failpoints", json=body, timeout=10).raise_for_status()
        held = lsn_to_int(detail()["remote_consistent_lsn"])
        end = write_segments(4, "held")
        wait_until(
            lambda: lsn_to_int(detail()["disk_consistent_lsn"]) >= end - SEG_SIZE,
            timeout=60,
            what="the pageserver's layers past the written segments",
        )
        time.sleep(REMOVAL_PASS_S)
        assert lsn_to_int(detail()["remote_consistent_lsn"]) == held, detail()
        for sk in (1, 2, 3):
            first = segments(sk)[0]
            assert first <= held // SEG_SIZE, (
                f"safekeeper {sk} removed WAL the bucket does not hold: it starts at segment "
                f"{first}, remote_consistent_lsn {int_to_lsn(held)} is in {held // SEG_SIZE}"
            )

        body = [{"name": "remote-before-upload_index", "actions": "off"}]
        requests.put(f"{ps}/v1/failpoints", json=body, timeout=10).raise_for_status()
        wait_until(
            lambda: lsn_to_int(detail()["remote_consistent_lsn"]) >= end - SEG_SIZE,
            timeout=60,
            what="remote_consistent_lsn advancing once uploads go on",
        )
        wait_until(
            lambda: any(segments(sk)[0] > held // SEG_SIZE for sk in (1, 2, 3)),
            timeout=60,
            what="a safekeeper removing the segments the bucket now holds",
        )
