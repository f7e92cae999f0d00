"""The `strata` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import psycopg2
import pytest
import requests
import toml

from fixtures.paths import REPO_ROOT, StrataBinaries, find_pg_bindir
from fixtures.strata_cli import assert_clean_logs, endpoint_port, sql, strata
from fixtures.utils import wait_until
from fixtures.workdir import TestDir


def test_strata_doctor(strata_bin: StrataBinaries):
    """`strata doctor` (what scripts/demo runs) passes on a machine scripts/setup prepared."""
    result = subprocess.run(
        [strata_bin.path("strata"), "doctor", "--pg-bin", find_pg_bindir()],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "PostgreSQL 15" in result.stdout


def service_states(strata_bin: StrataBinaries, repo: Path) -> dict[str, str]:
    out = strata(strata_bin, repo, "status").stdout
    return {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("  ") and len(line.split()) >= 2
    }


def test_strata_cluster_lifecycle(strata_bin: StrataBinaries, test_dir: TestDir):
    """init → start → status → per-service stop/restart → a killed service is seen as
    stopped and started again → stop; clear errors for no repository, a second init, and
    init --force on a running cluster."""
    repo = test_dir.path / "repo"
    r = strata(strata_bin, repo, "status", check=False)
    assert r.returncode != 0 and "strata init" in r.stderr, r.stderr
    strata(strata_bin, repo, "init")
    r = strata(strata_bin, repo, "init", check=False)
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    config = toml.loads((repo / "config.toml").read_text())
    assert len(config["safekeepers"]) == 3 and len(config["pageservers"]) == 1
    try:
        strata(strata_bin, repo, "start")
        states = service_states(strata_bin, repo)
        assert set(states) == {
            "nats",
            "safekeeper-1",
            "safekeeper-2",
            "safekeeper-3",
            "pageserver-1",
        }
        assert all(s == "running" for s in states.values()), states
        ps = config["pageservers"][0]
        assert requests.get(f"http://127.0.0.1:{ps['http_port']}/v1/status", timeout=5).ok

        r = strata(strata_bin, repo, "init", "--force", check=False)
        assert r.returncode != 0 and "strata stop" in r.stderr, r.stderr

        strata(strata_bin, repo, "safekeeper", "restart", "--id", "2")
        strata(strata_bin, repo, "pageserver", "stop")
        assert service_states(strata_bin, repo)["pageserver-1"] == "stopped"
        r = strata(strata_bin, repo, "safekeeper", "stop", "--id", "9", check=False)
        assert r.returncode != 0 and "no safekeeper with id 9" in r.stderr, r.stderr

        pid = int((repo / "safekeeper_3" / "safekeeper-3.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: service_states(strata_bin, repo)["safekeeper-3"] == "stopped",
            timeout=10,
            what="safekeeper-3 seen as stopped",
        )
        out = strata(strata_bin, repo, "start").stdout
        assert "already running" in out and "safekeeper-3" in out, out
        assert all(s == "running" for s in service_states(strata_bin, repo).values())
    finally:
        strata(strata_bin, repo, "stop", check=False)
    assert all(s == "stopped" for s in service_states(strata_bin, repo).values())
    assert_clean_logs(repo)


def test_strata_failed_start_stops_what_it_started(strata_bin: StrataBinaries, test_dir: TestDir):
    """A pageserver that cannot bind its port: `strata start` fails naming it, with its log
    tail, and leaves nothing running."""
    repo = test_dir.path / "repo"
    strata(strata_bin, repo, "init", "--num-safekeepers", "1")
    config = toml.loads((repo / "config.toml").read_text())
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", config["pageservers"][0]["http_port"]))
    blocker.listen()
    try:
        r = strata(strata_bin, repo, "start", check=False)
        assert r.returncode != 0, r.stdout
        assert "starting pageserver-1 failed" in r.stderr, r.stderr
        assert "pageserver-1.log" in r.stderr, r.stderr
        assert all(s == "stopped" for s in service_states(strata_bin, repo).values())
    finally:
        blocker.close()
        strata(strata_bin, repo, "stop", check=False)


def test_strata_tenants_and_branches(strata_bin: StrataBinaries, test_dir: TestDir):
    """tenant create (bootstrap → branch main on the pageserver and every safekeeper), tenant
    list/config, timeline branch, a second root (timeline create), the tree in timeline list;
    clear errors for a duplicate or unknown branch; a branch refused by a stopped safekeeper
    leaves nothing behind."""
    repo = test_dir.path / "repo"
    strata(strata_bin, repo, "init")
    config = toml.loads((repo / "config.toml").read_text())
    try:
        strata(strata_bin, repo, "start")
        out = strata(
            strata_bin, repo, "tenant", "create", "-c", "checkpoint_distance=33554432"
        ).stdout
        m = re.search(r"tenant ([0-9a-f]{32}) created; branch main = timeline ([0-9a-f]{32})", out)
        assert m, out
        tenant, main = m.groups()
        assert "(default)" in strata(strata_bin, repo, "tenant", "list").stdout
        tconf = json.loads(strata(strata_bin, repo, "tenant", "config").stdout)
        assert "33554432" in json.dumps(tconf), tconf
        for sk in config["safekeepers"]:
            url = f"http://127.0.0.1:{sk['http_port']}/v1/tenant/{tenant}/timeline/{main}"
            assert requests.get(url, timeout=10).ok, url

        out = strata(strata_bin, repo, "timeline", "branch", "--branch-name", "dev").stdout
        dev = re.search(r"timeline ([0-9a-f]{32})", out).group(1)
        r = strata(strata_bin, repo, "timeline", "branch", "--branch-name", "dev", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr, r.stderr
        r = strata(
            strata_bin,
            repo,
            "timeline",
            "branch",
            "--branch-name",
            "x",
            "--ancestor-branch-name",
            "nope",
            check=False,
        )
        assert r.returncode != 0 and "main" in r.stderr and "nope" in r.stderr, r.stderr
        tree = strata(strata_bin, repo, "timeline", "list").stdout
        lines = tree.splitlines()
        assert lines[0].startswith(f"main [{main}]"), tree
        assert lines[1].startswith(f"┗━ dev [{dev}] from "), tree

        out = strata(strata_bin, repo, "timeline", "create", "--branch-name", "scratch").stdout
        scratch = re.search(r"timeline ([0-9a-f]{32}), a new root", out).group(1)
        tree = strata(strata_bin, repo, "timeline", "list").stdout
        assert re.search(rf"^scratch \[{scratch}\], last record", tree, re.MULTILINE), tree
        r = strata(strata_bin, repo, "timeline", "create", "--branch-name", "dev", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr, r.stderr

        strata(strata_bin, repo, "safekeeper", "stop", "--id", "3")
        r = strata(strata_bin, repo, "timeline", "branch", "--branch-name", "half", check=False)
        assert r.returncode != 0 and "safekeeper-3 is not reachable" in r.stderr, r.stderr
        assert "half" not in strata(strata_bin, repo, "timeline", "list").stdout
        ps = config["pageservers"][0]
        timelines = requests.get(
            f"http://127.0.0.1:{ps['http_port']}/v1/tenant/{tenant}/timeline", timeout=10
        ).json()
        assert {t["timeline_id"] for t in timelines} == {main, dev, scratch}, timelines
    finally:
        strata(strata_bin, repo, "stop", check=False)
    assert_clean_logs(repo)


def test_strata_endpoints(strata_bin: StrataBinaries, test_dir: TestDir):
    """Endpoints on branches you can write to: rows at L1 < L2; a branch at L1 and a
    read-only endpoint at L1 see exactly the rows as of L1; writes on the branch are
    invisible to main; the read-only endpoint refuses writes; main stopped and started
    (a fresh data directory each time, through sync → wait → basebackup) keeps every
    committed row, also after a kill -9; a second primary on a branch, a duplicate name,
    an unknown branch and a used port are refused; `strata stop` stops the endpoints."""
    repo = test_dir.path / "repo"
    strata(strata_bin, repo, "init")
    try:
        strata(strata_bin, repo, "start")
        strata(strata_bin, repo, "tenant", "create")
        strata(strata_bin, repo, "endpoint", "create", "main")
        out = strata(strata_bin, repo, "endpoint", "start", "main").stdout
        assert out.strip().splitlines()[-1].startswith("postgresql://postgres@127.0.0.1:"), out
        sql(repo, "main", "CREATE TABLE t (id int PRIMARY KEY, note text)")
        sql(repo, "main", "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
        l1 = sql(repo, "main", "SELECT pg_current_wal_insert_lsn()")[0][0]
        sql(repo, "main", "INSERT INTO t SELECT g, 'after' FROM generate_series(101, 300) g")

        strata(
            strata_bin,
            repo,
            "timeline",
            "branch",
            "--branch-name",
            "old",
            "--ancestor-start-lsn",
            l1,
        )
        strata(strata_bin, repo, "endpoint", "create", "old", "--branch-name", "old")
        strata(strata_bin, repo, "endpoint", "start", "old")
        assert sql(repo, "old", "SELECT count(*) FROM t") == [(100,)]
        sql(repo, "old", "INSERT INTO t VALUES (1000, 'on the branch')")
        assert sql(repo, "main", "SELECT count(*) FROM t WHERE id = 1000") == [(0,)]
        assert sql(repo, "main", "SELECT count(*) FROM t") == [(300,)]

        strata(strata_bin, repo, "endpoint", "create", "ro", "--lsn", l1)
        strata(strata_bin, repo, "endpoint", "start", "ro")
        assert sql(repo, "ro", "SELECT count(*) FROM t") == [(100,)]
        with pytest.raises(psycopg2.Error, match="read-only"):
            sql(repo, "ro", "INSERT INTO t VALUES (2000, 'no')")

        for immediate in (False, True):
            sql(repo, "main", f"INSERT INTO t VALUES ({3000 + immediate}, 'restart')")
            args = ["endpoint", "stop", "main"] + (["--immediate"] if immediate else [])
            strata(strata_bin, repo, *args)
            strata(strata_bin, repo, "endpoint", "start", "main")
            assert sql(repo, "main", "SELECT count(*) FROM t") == [(301 + immediate,)]

        strata(strata_bin, repo, "endpoint", "create", "main2")
        r = strata(strata_bin, repo, "endpoint", "start", "main2", check=False)
        assert r.returncode != 0 and "one primary per branch" in r.stderr, r.stderr
        r = strata(strata_bin, repo, "endpoint", "create", "main", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr, r.stderr
        r = strata(
            strata_bin, repo, "endpoint", "create", "x", "--branch-name", "nope", check=False
        )
        assert r.returncode != 0 and "no branch" in r.stderr, r.stderr
        port = str(endpoint_port(repo, "main"))
        r = strata(strata_bin, repo, "endpoint", "create", "y", "--pg-port", port, check=False)
        assert r.returncode != 0 and "in use" in r.stderr, r.stderr
        listing = strata(strata_bin, repo, "endpoint", "list").stdout
        assert re.search(r"^main .* running$", listing, re.MULTILINE), listing
        assert re.search(r"^main2 .* stopped$", listing, re.MULTILINE), listing
    finally:
        out = strata(strata_bin, repo, "stop", check=False).stdout
    assert "endpoint main" in out and "stopped" in out, out
    assert "running" not in strata(strata_bin, repo, "endpoint", "list").stdout
    assert_clean_logs(repo)


def test_demo(strata_bin: StrataBinaries, test_dir: TestDir):
    """scripts/demo (the README's first command) end to end in a repository of its own, run
    twice (the second run recreates its cluster); then the cluster it left running stops."""
    repo = test_dir.path / "demo-repo"
    assert strata_bin.dir.name == "debug", "the demo runs the debug build"
    env = {
        **os.environ,
        "STRATA_SKIP_BUILD": "1",
        "STRATA_DEMO_REPO": str(repo),
        "STRATA_DEMO_SECONDS": "2",
        "CARGO_TARGET_DIR": str(strata_bin.dir.parent),
    }
    try:
        for run in (1, 2):
            with open(test_dir.path / f"demo-{run}.log", "w") as log:
                result = subprocess.run(
                    [str(REPO_ROOT / "scripts" / "demo")],
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=600,
                    check=False,
                )
            output = (test_dir.path / f"demo-{run}.log").read_text()
            assert result.returncode == 0, output[-4000:]
            assert "Strata demo: done." in output, output[-2000:]
    finally:
        strata(strata_bin, repo, "stop", check=False)
    assert_clean_logs(repo)


def test_strata_init_remote_storage(strata_bin: StrataBinaries, test_dir: TestDir):
    """`init --remote-storage local`: the pageservers get `<repo>/remote_storage` and a
    storage controller that issues their generations; a new tenant is placed with it and
    its branches reach the bucket (an index per timeline); a pageserver restart re-attaches
    it in generation 2; a bad file is refused up front."""
    repo = test_dir.path / "repo"
    bad = test_dir.path / "bad.toml"
    bad.write_text('bucket_name = "b"\nno_such_field = 1\n')
    r = strata(strata_bin, repo, "init", "--remote-storage", str(bad), check=False)
    assert r.returncode != 0 and "no_such_field" in r.stderr, r.stderr
    assert not (repo / "config.toml").exists()
    r = strata(strata_bin, repo, "init", "--remote-storage", "nope.toml", check=False)
    assert r.returncode != 0 and "expected `local`" in r.stderr, r.stderr

    strata(strata_bin, repo, "init", "--remote-storage", "local")
    ps_toml = toml.loads((repo / "pageserver_1" / "pageserver.toml").read_text())
    bucket = repo / "remote_storage"
    assert ps_toml["remote_storage"]["local_path"] == str(bucket), ps_toml
    sc_port = toml.loads((repo / "config.toml").read_text())["storage_controller"]["port"]
    assert ps_toml["control_plane_api"] == f"http://127.0.0.1:{sc_port}/upcall/v1/", ps_toml
    try:
        strata(strata_bin, repo, "start")
        assert "storage_controller" in strata(strata_bin, repo, "status").stdout
        out = strata(strata_bin, repo, "tenant", "create").stdout
        tenant, main = re.search(
            r"tenant ([0-9a-f]{32}) created; branch main = timeline ([0-9a-f]{32})", out
        ).groups()
        out = strata(strata_bin, repo, "timeline", "branch", "--branch-name", "dev").stdout
        dev = re.search(r"timeline ([0-9a-f]{32})", out).group(1)
        for tl in (main, dev):
            index = bucket / "tenants" / tenant / "timelines" / tl / "index_part.json-00000001"
            wait_until(index.exists, timeout=30, what=f"{index} uploaded")
        sc = f"http://127.0.0.1:{sc_port}/control/v1/tenant/{tenant}"
        assert requests.get(sc, timeout=10).json() == {
            "tenant_id": tenant,
            "generation": 1,
            "node_id": 1,
        }
        r = strata(strata_bin, repo, "tenant", "create", "--tenant-id", tenant, check=False)
        assert r.returncode != 0 and "already exists" in r.stderr, r.stderr
        strata(strata_bin, repo, "pageserver", "restart")
        assert requests.get(sc, timeout=10).json()["generation"] == 2
        ps_port = toml.loads((repo / "config.toml").read_text())["pageservers"][0]["http_port"]
        ps = f"http://127.0.0.1:{ps_port}/v1/tenant/{tenant}"
        assert requests.get(ps, timeout=10).json()["generation"] == 2
    finally:
        strata(strata_bin, repo, "stop", check=False)
    assert_clean_logs(repo)
