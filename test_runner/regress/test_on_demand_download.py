"""Layers evicted from the pageserver's disk (kept in object storage) come back on
demand: a read downloads only the layers it needs, verified against the index; every page
still equals the compute's (the page oracle); eviction survives a restart; and an attach
downloads nothing up front. On LocalFs, S3 (moto) and Azure (Azurite)."""

from __future__ import annotations

import io
import tarfile

import pytest
import requests

from fixtures.http_api import ApiError
from fixtures.pageserver import wait_timeline_state
from fixtures.remote_storage import check_bucket, local_fs_bucket
from fixtures.safekeeper import lsn_to_int
from fixtures.utils import wait_until


def uploaded(env) -> dict | None:
    d = env.detail()
    disk = lsn_to_int(d["disk_consistent_lsn"])
    return d if lsn_to_int(d["remote_consistent_lsn"]) >= disk > 0 else None


def residence(env) -> dict[str, bool]:
    return {
        layer["name"]: layer["resident"]
        for layer in env.http.layers(env.tenant, env.timeline)
        if layer["kind"] != "in_memory"
    }


def downloads(env) -> float:
    return env.http.metric_value('pageserver_layer_downloads_total{outcome="ok"') or 0.0


def test_evicted_layers_come_back_on_demand(ps_env_factory, remote_bucket):
    bucket = remote_bucket
    env = ps_env_factory(config={"remote_storage": bucket.config})
    http, tenant, timeline = env.http, env.tenant, env.timeline
    compute = env.import_compute()
    compute.pg.safe_psql(
        "CREATE TABLE t AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 30000) g"
    )
    lsn = env.checkpoint_and_wait()
    http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(env), 60, what="the layers uploaded")
    index = check_bucket(bucket, tenant, timeline)
    assert set(residence(env)) == set(index["layer_metadata"])

    evicted = http.evict_layers(tenant, timeline)
    assert evicted == len(index["layer_metadata"]) >= 2, evicted
    assert not any(residence(env).values())
    assert http.evict_layers(tenant, timeline) == 0
    d = env.pageserver.timeline_dir(tenant, timeline)
    assert not [p for p in d.iterdir() if "__" in p.name and not p.name.endswith(".evicted")]

    # One page of t: the layer written after the import holds it whole (its first record
    # initializes the page), so the import's image layer stays in the bucket.
    db, relnode = compute.pg.safe_psql(
        "SELECT (SELECT oid FROM pg_database WHERE datname = current_database()), "
        "pg_relation_filenode('t')"
    )[0]
    before = downloads(env)
    page = http.getpage(tenant, timeline, (1663, int(db), int(relnode), 0), 0, lsn)
    assert len(page) == 8192
    after = downloads(env)
    assert 1 <= after - before < evicted, (before, after, residence(env))
    assert not all(residence(env).values()), residence(env)

    # Every page equals the compute's; whatever else it needs comes back on the way.
    env.run_oracle(lsn).check()
    env.compare_relations(lsn).check()

    # A basebackup (metadata scans, then every page) reads through evicted layers too.
    full = http.basebackup(tenant, timeline, lsn)
    http.evict_layers(tenant, timeline)
    again = http.basebackup(tenant, timeline, lsn)
    assert len(again) == len(full) > 0
    with tarfile.open(fileobj=io.BytesIO(again)) as tar:
        assert "global/pg_control" in tar.getnames()

    # Evicted stays evicted across a restart (the stubs are what the load finds), and
    # reads still work. (Ingest may bring layers back at once: metadata such as relation
    # sizes lives in the same layers as pages.)
    http.evict_layers(tenant, timeline)
    env.pageserver.stop()
    files = sorted(p.name for p in d.iterdir() if "__" in p.name)
    assert files and all(f.endswith(".evicted") for f in files), files
    env.pageserver.start()
    wait_timeline_state(http, tenant, timeline, "Active")
    assert set(residence(env)) == {f.removesuffix(".evicted") for f in files}
    env.run_oracle(lsn).check()

    # Bad input: unknown layers are 404; a layer not uploaded yet cannot be evicted.
    for call in (http.evict_layer, http.download_layer):
        with pytest.raises(ApiError) as missing:
            call(tenant, timeline, "not-a-layer")
        assert missing.value.status == 404, missing.value
    name = next(iter(residence(env)))
    # (Ingest runs meanwhile and may bring the layer back itself: only what it cannot
    # undo is asserted exactly.)
    http.evict_layer(tenant, timeline, name)
    http.download_layer(tenant, timeline, name)
    assert residence(env)[name] is True
    assert http.download_layer(tenant, timeline, name) == 0  # resident already
    assert http.evict_layer(tenant, timeline, name) == 1

    # An attach downloads nothing up front (a stub per layer); the first reads do.
    http.location_config(tenant, "Detached")
    answer = http.location_config(tenant, "AttachedSingle", generation=2)
    assert answer["attached_from_remote"] is True, answer
    assert "bytes, downloaded on demand)" in env.pageserver.log_path.read_text()
    wait_timeline_state(http, tenant, timeline, "Active")
    lsn = env.checkpoint_and_wait()
    env.run_oracle(lsn).check()
    assert any(residence(env).values())


@pytest.mark.allowed_errors(r"disk usage: .* bytes over the limit, but only")
def test_disk_pressure_evicts_uploaded_layers_and_reads_bring_them_back(ps_env_factory, test_dir):
    """`disk_usage_based_eviction`: while the file system looks full (a failpoint makes
    statvfs's free space 0), every uploaded layer is evicted; once it does not, nothing
    more is; pages stay correct throughout (the oracle reads through evicted layers)."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(
        config={
            "remote_storage": bucket.config,
            "disk_usage_based_eviction": {
                "max_usage_pct": 100,
                "min_avail_bytes": 1,
                "period": "200ms",
            },
        }
    )
    http, tenant, timeline = env.http, env.tenant, env.timeline
    compute = env.import_compute()
    compute.pg.safe_psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g")
    lsn = env.checkpoint_and_wait()
    http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(env), 60, what="the layers uploaded")
    # Any real disk has a byte free: the failpoint makes it look full (0 bytes free).
    assert all(residence(env).values())
    http.configure_failpoints(("disk-usage-eviction-avail", "return(0)"))
    wait_until(lambda: not any(residence(env).values()), 30, what="every uploaded layer evicted")
    assert (http.metric_value("pageserver_disk_usage_evicted_bytes_total") or 0) > 0
    http.configure_failpoints(("disk-usage-eviction-avail", "off"))
    before = http.metric_value("pageserver_disk_usage_evicted_bytes_total")
    env.run_oracle(lsn).check()
    assert all(residence(env).values())
    env.compare_relations(lsn).check()
    assert http.metric_value("pageserver_disk_usage_evicted_bytes_total") == before


@pytest.mark.allowed_errors(r"failpoint layer-")
@pytest.mark.parametrize("failpoint", ["layer-evict-after-stub", "layer-download-after-rename"])
def test_a_crash_mid_eviction_or_download_loses_nothing(ps_env_factory, test_dir, failpoint):
    """The process exits with both a layer's file and its stub on disk (right after an
    eviction wrote the stub, or right after a download renamed the file into place): the
    restart keeps the file, removes the stub, and every page is still the compute's."""
    bucket = local_fs_bucket(test_dir.path / "bucket")
    env = ps_env_factory(config={"remote_storage": bucket.config})
    http, tenant, timeline = env.http, env.tenant, env.timeline
    compute = env.import_compute()
    compute.pg.safe_psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g")
    lsn = env.checkpoint_and_wait()
    http.timeline_checkpoint(tenant, timeline)
    wait_until(lambda: uploaded(env), 60, what="the layers uploaded")
    name = next(iter(residence(env)))
    if failpoint == "layer-download-after-rename":
        http.evict_layer(tenant, timeline, name)
    http.configure_failpoints((failpoint, "exit"))
    call = http.evict_layer if failpoint == "layer-evict-after-stub" else http.download_layer
    with pytest.raises(requests.RequestException):
        call(tenant, timeline, name)
    ps = env.pageserver
    wait_until(lambda: not ps.is_running(), timeout=30, what="the pageserver exited")
    d = ps.timeline_dir(tenant, timeline)
    assert (d / name).exists() and (d / f"{name}.evicted").exists()
    ps.start()
    wait_timeline_state(http, tenant, timeline, "Active")
    assert not (d / f"{name}.evicted").exists()
    assert residence(env)[name] is True
    env.run_oracle(lsn).check()
