"""The synthetic size of a tenant: the pageserver's `/v1/tenant/{id}/synthetic_size` on a
tenant with branches under pgbench, `strata tenant size`, the metric and its background
refresh, and the picture rendered in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import requests

from fixtures.chromium import image_size, ink_fraction, screenshot
from fixtures.paths import REPO_ROOT, StrataBinaries
from fixtures.pgbench import run_pgbench
from fixtures.strata_cli import StrataEnv, endpoint_port
from fixtures.utils import wait_until
from fixtures.workdir import TestDir

SNAPSHOTS = REPO_ROOT / "libs" / "tenant_size_model" / "testdata"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def svg_size(svg: str) -> tuple[int, int]:
    width = re.search(r'<svg[^>]*\bwidth="(\d+)"', svg)
    height = re.search(r'<svg[^>]*\bheight="(\d+)"', svg)
    assert width and height, svg[:300]
    return int(width.group(1)), int(height.group(1))


def test_size_model_pictures_render(test_dir: TestDir):
    """The committed pictures of the worked examples (the library's snapshot tests keep them
    equal to what it renders) load in Chromium at their own size and are not blank."""
    svgs = sorted(SNAPSHOTS.glob("*.svg"))
    assert len(svgs) >= 2, svgs
    for svg in svgs:
        width, height = svg_size(svg.read_text())
        png = test_dir.path / f"{svg.stem}.png"
        screenshot(svg, png, width, height)
        assert image_size(png) == (width, height)
        ink = ink_fraction(png)
        assert 0.01 < ink < 0.6, f"{png}: {ink:.3f} of the pixels are not white"


class SizeApi:
    """The pageserver's synthetic_size endpoint for one tenant."""

    def __init__(self, env: StrataEnv, tenant: str):
        config = env.config()
        self.base = f"http://127.0.0.1:{config['pageservers'][0]['http_port']}"
        self.sk_base = f"http://127.0.0.1:{config['safekeepers'][0]['http_port']}"
        self.tenant = tenant

    def size(self, **params) -> dict:
        r = requests.get(
            f"{self.base}/v1/tenant/{self.tenant}/synthetic_size", params=params, timeout=120
        )
        assert r.status_code == 200, r.text
        return r.json()

    def timeline(self, timeline: str) -> dict:
        r = requests.get(f"{self.base}/v1/tenant/{self.tenant}/timeline/{timeline}", timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def caught_up_size(self, **params) -> dict:
        """The size once the pageserver has ingested everything the safekeepers committed on
        every timeline (the endpoints are stopped, so nothing moves after that)."""
        timelines = requests.get(f"{self.base}/v1/tenant/{self.tenant}/timeline", timeout=30)
        assert timelines.status_code == 200, timelines.text
        for t in timelines.json():
            timeline = t["timeline_id"]
            status = requests.get(
                f"{self.sk_base}/v1/tenant/{self.tenant}/timeline/{timeline}", timeout=30
            )
            assert status.status_code == 200, status.text
            commit = status.json()["commit_lsn"]
            r = requests.get(
                f"{self.base}/v1/tenant/{self.tenant}/timeline/{timeline}/wait_lsn",
                params={"lsn": commit, "timeout": "60s"},
                timeout=90,
            )
            assert r.status_code == 200, r.text
        return self.size(**params)


def pgbench(env: StrataEnv, pg_bindir: Path, test_dir: TestDir, endpoint: str, *args: str):
    pg = SimpleNamespace(host="127.0.0.1", port=endpoint_port(env.repo, endpoint))
    log = test_dir.path / f"pgbench-{endpoint}-{args[0]}.log"
    run_pgbench(pg_bindir, pg, log, *args, timeout=300)


def check_inputs(api: SizeApi, size: dict, branches: dict[str, str]) -> None:
    """Every timeline's LSNs in the inputs are the timeline's own, and the model's branch
    starts and ends sit exactly there."""
    model = size["inputs"]["model"]
    segments, points = model["segments"], size["inputs"]["points"]
    assert len(points) == len(segments) == len(size["segment_sizes"])
    timelines = {t["timeline_id"]: t for t in size["inputs"]["timelines"]}
    assert set(timelines) == set(branches.values())
    for timeline_id, inputs in timelines.items():
        info = api.timeline(timeline_id)
        assert inputs["last_record_lsn"] == info["last_record_lsn"]
        assert inputs.get("ancestor_id") == info.get("ancestor_timeline_id")
        assert inputs.get("ancestor_lsn") == info.get("ancestor_lsn")
        mine = [i for i, p in enumerate(points) if p["timeline_id"] == timeline_id]
        kinds = {points[i]["kind"]: segments[i] for i in mine}
        assert kinds["BranchEnd"]["lsn"] == parse_lsn(info["last_record_lsn"])
        assert kinds["BranchEnd"]["needed"]
        start = kinds["BranchStart"]
        if info.get("ancestor_lsn"):
            assert start["lsn"] == parse_lsn(info["ancestor_lsn"])
            parent = segments[start["parent"]]
            assert points[start["parent"]]["timeline_id"] == info["ancestor_timeline_id"]
            assert parent["lsn"] == start["lsn"]
        else:
            assert start["lsn"] == parse_lsn(info["initdb_lsn"]) and start["parent"] is None
            assert start["size"] > 0
        cutoff = parse_lsn(inputs["retention_cutoff"])
        for i in mine:
            assert segments[i]["needed"] == (
                segments[i]["lsn"] > cutoff or points[i]["kind"] == "BranchEnd"
            )


def metric(base: str, tenant: str) -> int | None:
    text = requests.get(f"{base}/metrics", timeout=10).text
    found = re.search(
        rf'^pageserver_tenant_synthetic_size_bytes\{{tenant_id="{tenant}"\}} (\d+)', text, re.M
    )
    return int(found.group(1)) if found else None


def test_tenant_synthetic_size(strata_bin: StrataBinaries, test_dir: TestDir, pg_bindir: Path):
    """main, dev (from main) and feature (from dev) under pgbench, with 1 GiB of WAL inside
    retention: the size grows with WAL, the inputs match the timelines, a shorter
    retention_period never raises it, the HTML page renders in Chromium, the CLI reports it,
    the metric follows (also from the background task after a restart), and deleting a
    branch lowers it."""
    repo = test_dir.path / "repo"
    with StrataEnv(strata_bin, repo, num_safekeepers=1) as env:
        tenant = env.tenant_create("--set-default", "-c", "gc_horizon=1073741824")
        api = SizeApi(env, tenant)
        fresh = api.size()
        assert fresh["size"] > 0, fresh

        env.endpoint_create_start("main")
        pgbench(env, pg_bindir, test_dir, "main", "-i", "-s", "1")
        env.run("endpoint", "stop", "main")
        after_init = api.caught_up_size()
        env.run("endpoint", "start", "main")
        pgbench(env, pg_bindir, test_dir, "main", "-t", "300", "-c", "2")
        env.run("timeline", "branch", "--branch-name", "dev")
        env.endpoint_create_start("dev", "--branch-name", "dev")
        pgbench(env, pg_bindir, test_dir, "dev", "-t", "200")
        env.run("timeline", "branch", "--branch-name", "feature", "--ancestor-branch-name", "dev")
        env.endpoint_create_start("feature", "--branch-name", "feature")
        pgbench(env, pg_bindir, test_dir, "feature", "-t", "200")
        for endpoint in ("main", "dev", "feature"):
            env.run("endpoint", "stop", endpoint)

        full = api.caught_up_size()
        print(
            f"synthetic size: fresh={fresh['size']} after_init={after_init['size']} "
            f"with_branches={full['size']}"
        )
        assert fresh["size"] < after_init["size"] < full["size"]
        branches = {name: env.timeline(tenant, name) for name in ("main", "dev", "feature")}
        check_inputs(api, full, branches)

        # A shorter retention period never raises the size.
        sizes = [full["size"]]
        for period in ("1h", "10m", "1s", "0s"):
            sizes.append(api.size(retention_period=period)["size"])
        print(f"synthetic size by retention_period (default, 1h, 10m, 1s, 0s): {sizes}")
        assert sizes == sorted(sizes, reverse=True), sizes
        assert sizes[-1] < sizes[0], sizes
        inputs_only = api.size(inputs_only="true")
        assert "size" not in inputs_only and inputs_only["inputs"] == full["inputs"]

        # Clear errors for bad input; the tenant keeps being served.
        r = requests.get(f"{api.base}/v1/tenant/{tenant}/synthetic_size?retention_period=soon")
        assert r.status_code == 400 and "retention_period" in r.json()["msg"], r.text
        r = requests.get(f"{api.base}/v1/tenant/{'0' * 32}/synthetic_size")
        assert r.status_code == 404, r.text

        # The HTML page, rendered.
        page = requests.get(
            f"{api.base}/v1/tenant/{tenant}/synthetic_size",
            headers={"Accept": "text/html"},
            timeout=120,
        )
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<svg" in page.text and str(full["size"]) in page.text
        html = test_dir.path / "synthetic_size.html"
        html.write_text(page.text)
        png = test_dir.path / "synthetic_size.png"
        screenshot(html, png, 1100, 900)
        assert image_size(png) == (1100, 900)
        assert ink_fraction(png) > 0.01, png

        # The CLI, with branch names and the page.
        cli_html = test_dir.path / "cli_size.html"
        out = env.run("tenant", "size", "--html", str(cli_html)).stdout
        assert f"synthetic size {full['size']} bytes" in out, out
        for name in branches:
            assert name in out, out
        assert "<svg" in cli_html.read_text()

        # The metric: set by the calls above, then by the background task after a restart.
        assert metric(api.base, tenant) == full["size"]
        config = next(repo.glob("*/pageserver.toml"))
        config.write_text('synthetic_size_calculation_interval = "1s"\n' + config.read_text())
        env.run("pageserver", "restart")
        # No API call from here on: only the background task can set it.
        wait_until(lambda: metric(api.base, tenant) == full["size"], timeout=60)

        # Deleting a branch lowers the size.
        r = requests.delete(
            f"{api.base}/v1/tenant/{tenant}/timeline/{branches['feature']}", timeout=60
        )
        assert r.status_code == 200, r.text
        without_feature = api.size()
        print(f"synthetic size without feature: {without_feature['size']}")
        assert without_feature["size"] < full["size"]
