"""A local cluster with auth on (`strata init --auth`): every HTTP and libpq port of every
service refuses a missing or wrongly signed token, a tenant token reaches only its own
tenant, and the cluster still works end to end (the CLI, the pageserver's WAL feed from the
safekeepers, and the endpoint's sidecar all carry their own tokens)."""

from __future__ import annotations

import re

import psycopg2
import pytest
import requests

from fixtures.auth import generate_keypair
from fixtures.paths import StrataBinaries
from fixtures.strata_cli import StrataEnv, connect_endpoint
from fixtures.workdir import TestDir


def _http(port: int, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10).status_code


def _libpq_refused(port: int, password: str | None) -> str:
    """Connects as the services' clients do (the token is the password); returns the error."""
    with pytest.raises(psycopg2.OperationalError) as err:
        psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user="strata",
            dbname="strata",
            password=password,
            connect_timeout=10,
        ).close()
    return str(err.value)


def test_strata_auth(strata_bin: StrataBinaries, test_dir: TestDir):
    foreign = generate_keypair(test_dir.subdir("foreign-keys"))
    with StrataEnv(strata_bin, test_dir.path / "repo", auth=True, remote_storage="local") as env:
        a = env.tenant_create("--set-default")
        b = env.tenant_create()
        tl_a, tl_b = env.timeline(a), env.timeline(b)

        # The cluster works end to end with tokens: write, restart the endpoint, read back.
        env.endpoint_create_start("main")
        env.sql("main", "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
        env.run("endpoint", "stop", "main")
        env.run("endpoint", "start", "main")
        assert env.sql("main", "SELECT sum(v) FROM t") == [(3,)]
        conn = connect_endpoint(env.repo, "main")
        conn.close()

        config = env.config()
        ps_admin = env.token("--scope", "pageserverapi")
        sk_admin = env.token("--scope", "safekeeperdata")
        token_a = env.token("--tenant-id", a)
        forged = foreign.generate_token("pageserverapi")
        forged_sk = foreign.generate_token("safekeeperdata")

        for ps in config["pageservers"]:
            port = ps["http_port"]
            assert _http(port, "/v1/status", None) == 200  # liveness needs no token
            assert _http(port, "/v1/tenant", None) == 401
            assert _http(port, "/v1/tenant", forged) == 401
            assert _http(port, "/v1/tenant", "not-a-jwt") == 401
            assert _http(port, "/v1/tenant", token_a) == 403  # cluster-wide: not a tenant's
            assert _http(port, "/v1/tenant", ps_admin) == 200
            assert _http(port, f"/v1/tenant/{a}/timeline/{tl_a}", token_a) == 200
            assert _http(port, f"/v1/tenant/{b}/timeline/{tl_b}", token_a) == 403
            assert _http(port, f"/v1/tenant/{b}/timeline/{tl_b}", ps_admin) == 200
            assert _http(port, f"/v1/tenant/{b}/timeline/{tl_b}/basebackup", token_a) == 403
            for password in (None, forged, "not-a-jwt"):
                msg = _libpq_refused(ps["pg_port"], password)
                assert re.search(r"(?i)auth|token|password|jwt", msg), msg

        # The storage controller (there with object storage): the pageservers reached it
        # with their generations_api token (the tenants were created through it).
        port = config["storage_controller"]["port"]
        admin = env.token("--scope", "admin")
        assert _http(port, "/v1/status", None) == 200
        assert _http(port, f"/control/v1/tenant/{a}", None) == 401
        assert _http(port, f"/control/v1/tenant/{a}", foreign.generate_token("admin")) == 401
        assert _http(port, f"/control/v1/tenant/{a}", ps_admin) == 403
        assert _http(port, f"/control/v1/tenant/{a}", admin) == 200

        for sk in config["safekeepers"]:
            port = sk["http_port"]
            assert _http(port, "/v1/status", None) == 200
            path_a, path_b = f"/v1/tenant/{a}/timeline/{tl_a}", f"/v1/tenant/{b}/timeline/{tl_b}"
            assert _http(port, path_a, None) == 401
            assert _http(port, path_a, forged_sk) == 401
            assert _http(port, path_a, token_a) == 200
            assert _http(port, path_b, token_a) == 403
            assert _http(port, path_b, sk_admin) == 200
            for password in (None, forged_sk, "not-a-jwt"):
                msg = _libpq_refused(sk["pg_port"], password)
                assert re.search(r"(?i)auth|token|password|jwt", msg), msg

        # `strata token` explains its misuse.
        bad = env.run("token", check=False)
        assert bad.returncode != 0 and "--tenant-id" in bad.stderr, bad.stderr
