"""Tests of the harness itself: real nats-server and PostgreSQL through the fixtures, and the
pieces every later test leans on (ports, log scanner, process helper, wait_until, JWTs)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from fixtures.auth import AuthKeys
from fixtures.log_scan import (
    NATS_ERROR_PATTERN,
    POSTGRES_ERROR_PATTERN,
    RUST_ERROR_PATTERN,
    TORN_LINE_MARKER,
    UnexpectedLogErrors,
    scan_log,
)
from fixtures.nats import NatsServer
from fixtures.ports import PortAllocator, port_is_free, worker_index, worker_port_range
from fixtures.postgres import VanillaPostgres
from fixtures.process import ServiceError, ServiceProcess, http_status_ready
from fixtures.run_as import RunAs
from fixtures.services import ServiceRegistry
from fixtures.utils import wait_until
from fixtures.workdir import TestDir, prune_to_logs, sanitize_test_name


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_nats_info(port: int) -> dict:
    """nats-server greets every client with `INFO {json}\\r\\n`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0].decode()
    assert line.startswith("INFO "), f"unexpected greeting {line!r}"
    return json.loads(line[len("INFO ") :])


def test_nats_and_postgres(
    nats_server: NatsServer, vanilla_pg: VanillaPostgres, run_as: RunAs, test_output_dir: Path
):
    # nats-server answers with its INFO line.
    info = read_nats_info(nats_server.port)
    assert info["port"] == nats_server.port
    assert info["version"]

    # PostgreSQL 15, run as the unprivileged user when we are root.
    vanilla_pg.start()
    assert vanilla_pg.pid is not None
    assert process_uid(vanilla_pg.pid) == run_as.uid
    if os.geteuid() == 0:
        assert run_as.uid != 0
    version = vanilla_pg.safe_psql("SHOW server_version_num")[0][0]
    assert version.startswith("15"), version
    assert vanilla_pg.safe_psql("SELECT current_user, 6 * 7") == [("postgres", 42)]
    assert vanilla_pg.safe_psql("CREATE TABLE t (x int)") == []
    vanilla_pg.safe_psql("INSERT INTO t SELECT generate_series(1, 100)")
    assert vanilla_pg.safe_psql("SELECT count(*) FROM t") == [(100,)]
    # Its own port and socket directory, never the machine's defaults.
    assert vanilla_pg.port != 5432
    settings = dict(
        vanilla_pg.safe_psql(
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('port', 'unix_socket_directories', 'listen_addresses', 'fsync')"
        )
    )
    assert settings == {
        "port": str(vanilla_pg.port),
        "unix_socket_directories": str(vanilla_pg.socket_dir),
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
    }
    assert (vanilla_pg.socket_dir / f".s.PGSQL.{vanilla_pg.port}").is_socket()
    assert (test_output_dir / "vanilla_pg.log").exists()
    assert (test_output_dir / "nats-server.log").exists()

    # Both stop cleanly and are gone.
    pg_pid, nats_pid = vanilla_pg.pid, nats_server.pid
    assert vanilla_pg.stop() == 0
    assert not vanilla_pg.is_running()
    assert not pid_alive(pg_pid)
    assert not (vanilla_pg.datadir / "postmaster.pid").exists()
    nats_server.stop()
    assert not nats_server.is_running()
    assert not pid_alive(nats_pid)
    assert port_is_free(nats_server.port)
    assert port_is_free(vanilla_pg.port)


def test_postgres_immediate_stop_and_restart(vanilla_pg: VanillaPostgres):
    vanilla_pg.start()
    conn = vanilla_pg.connect()  # a session open across the immediate stop
    try:
        vanilla_pg.stop(mode="immediate")
    finally:
        conn.close()
    assert not vanilla_pg.is_running()
    vanilla_pg.start()  # crash recovery
    assert vanilla_pg.safe_psql("SELECT 1") == [(1,)]


def test_owned_dirs_outside_untraversable_parent(test_dir: TestDir, run_as: RunAs):
    """A test output directory the PostgreSQL user cannot reach (a clone under /root)."""
    if not run_as.switches:
        pytest.skip("PostgreSQL runs as ourselves: no traversal problem to solve")
    hidden = test_dir.path / "hidden"
    hidden.mkdir(mode=0o700)
    inner = TestDir(hidden / "t", f"{test_dir.name}-inner", run_as)
    inner.reset()
    assert not run_as.can_traverse(inner.path)
    real = inner.owned_dir("pg")
    assert real == inner.alt_path / "pg"
    assert (inner.path / "pg").is_symlink()
    assert (inner.path / "pg").resolve() == real
    assert real.stat().st_uid == run_as.uid
    assert run_as.can_traverse(real)
    inner.reset()  # wipes the /var/tmp side too
    assert not real.exists()


def test_port_allocator():
    assert worker_index("gw3") == 3
    assert worker_index("") == 0
    assert worker_port_range(2, base=15000) == range(17000, 18000)

    ports = worker_port_range(worker_index())
    allocator = PortAllocator.for_this_worker()
    first = allocator.get_many(5)
    assert len(set(first)) == 5
    assert all(p in ports for p in first)

    # A port with a listener is skipped, also after wrapping around. (Which of the others
    # comes back is not asserted: any port here may be some connection's ephemeral port at
    # the moment, which the allocator rightly skips too.)
    small = PortAllocator(range(ports.start + 900, ports.start + 903))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", small.range.start))
        busy.listen()
        assert not port_is_free(small.range.start)
        got = [small.get() for _ in range(4)]
        assert small.range.start not in got, got
        assert all(p in small.range for p in got), got
    single = PortAllocator(range(ports.start + 950, ports.start + 951))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", single.range.start))
        busy.listen()
        with pytest.raises(RuntimeError, match="no free port"):
            single.get()


def test_log_scanner(tmp_path: Path):
    log = tmp_path / "pageserver.log"
    log.write_text(
        "2025-01-01T00:00:00.000001Z  INFO pageserver: starting\n"
        "2025-01-01T00:00:00.000002Z  WARN pageserver: slow flush\n"
        "2025-01-01T00:00:00.000003Z ERROR pageserver: timeline not found\n"
        "2025-01-01T00:00:00.000004Z  INFO pageserver: the word ERROR: inside a message\n"
        "2025-01-01T00:00:00.000004Z  INFO pageserver: server error: ERROR 42704: quoted\n"
        "2025-01-01T00:00:00.000005Z ERROR pageserver: torn before restart\n"
        f"{TORN_LINE_MARKER}\n"
        "[strata-test] 2025-01-01 00:00:01 starting: ['pageserver', '--log', 'WARN ']\n"
        "thread 'main' panicked at pageserver/src/main.rs:1:1:\n"
        '{"timestamp":"2025-01-01T00:00:00Z","level":"WARN","message":"json warning"}\n'
        '{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","message":"json info"}\n'
        "2025-01-01T00:00:00.000006Z ERROR pageserver: cut short by kill -9"
    )
    found = scan_log(log, RUST_ERROR_PATTERN)
    assert [m.lineno for m in found] == [2, 3, 9, 10]
    assert "slow flush" in found[0].line
    assert str(found[1]).startswith(f"{log}:3: ")
    # Allow-lists are regexes searched anywhere in the line.
    allowed = [r"slow flush", "panicked", "json warning"]
    assert [m.lineno for m in scan_log(log, RUST_ERROR_PATTERN, allowed)] == [3]
    # Without a timestamp (a line printed on stderr), the level still counts first.
    bare = tmp_path / "bare.log"
    bare.write_text("WARN something\nnot a WARN level\n")
    assert [m.lineno for m in scan_log(bare, RUST_ERROR_PATTERN)] == [1]

    nats_log = tmp_path / "nats.log"
    nats_log.write_text(
        "[1] 2025/01/01 00:00:00.000000 [INF] Server is ready\n"
        "[1] 2025/01/01 00:00:00.000000 [WRN] Plaintext passwords detected\n"
        "[1] 2025/01/01 00:00:00.000000 [ERR] Error listening on port\n"
    )
    assert len(scan_log(nats_log, NATS_ERROR_PATTERN)) == 2

    pg_log = tmp_path / "pg.log"
    pg_log.write_text(
        "2025-01-01 00:00:00.000 UTC [7] LOG:  database system is ready\n"
        '2025-01-01 00:00:00.000 UTC [8] ERROR:  relation "x" does not exist\n'
        "2025-01-01 00:00:00.000 UTC [8] STATEMENT:  select * from x\n"
    )
    assert [m.lineno for m in scan_log(pg_log, POSTGRES_ERROR_PATTERN)] == [2]


def test_registry_reports_unexpected_errors(test_dir: TestDir):
    """What the `services` fixture does at teardown, on a fake service's log."""
    script = test_dir.path / "noisy.py"
    script.write_text(
        "import time\n"
        "print('2025-01-01T00:00:00Z ERROR noisy: expected failure', flush=True)\n"
        "print('2025-01-01T00:00:00Z  WARN noisy: unexpected warning', flush=True)\n"
        "time.sleep(60)\n"
    )
    registry = ServiceRegistry()
    service = registry.register(
        ServiceProcess(
            "noisy",
            [sys.executable, script],
            test_dir.subdir("noisy"),
            error_pattern=RUST_ERROR_PATTERN,
            allowed_errors=[r"expected failure"],
        )
    )
    service.start()
    wait_until(lambda: "unexpected warning" in service.log_path.read_text(), timeout=10)
    registry.kill_all()
    assert not service.is_running()
    with pytest.raises(UnexpectedLogErrors, match="unexpected warning"):
        registry.check_logs()
    registry.check_logs(test_allowed=[r"unexpected warning"])


HTTP_STATUS_SERVER = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v1/status" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

print("2025-01-01T00:00:00Z  INFO fake: listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_process_helper(
    test_dir: TestDir, port_allocator: PortAllocator, services: ServiceRegistry
):
    script = test_dir.path / "fake_service.py"
    script.write_text(HTTP_STATUS_SERVER)
    port = port_allocator.get()
    service = services.register(
        ServiceProcess(
            "fake_service",
            [sys.executable, script, str(port)],
            test_dir.subdir("fake_service"),
            ready=http_status_ready(f"http://127.0.0.1:{port}/v1/status"),
            error_pattern=RUST_ERROR_PATTERN,
        )
    )
    service.start()
    assert service.is_running()
    assert service.pid_file.read_text().strip() == str(service.pid)
    first_pid = service.pid

    service.restart()
    assert service.is_running() and service.pid != first_pid
    assert not pid_alive(first_pid)

    assert service.stop(immediate=True) == -9
    assert not service.is_running()
    assert not service.pid_file.exists()
    log = service.log_path.read_text()
    assert log.count("starting: ") == 2 and log.count("INFO fake: listening") == 2

    # A process that dies while starting is reported with its log.
    broken = services.register(
        ServiceProcess(
            "broken",
            [sys.executable, "-c", "print('no config file'); raise SystemExit(3)"],
            test_dir.subdir("broken"),
            ready=lambda: False,
        )
    )
    with pytest.raises(ServiceError, match=r"exited with status 3(.|\n)*no config file"):
        broken.start()

    # One left running is killed by the `services` fixture at teardown.
    services.register(
        ServiceProcess(
            "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], test_dir.path
        )
    ).start()


def test_wait_until():
    calls = []

    def third_time_lucky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)}")
        return len(calls)

    assert wait_until(third_time_lucky, timeout=5, interval=0.01) == 3

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="ValueError: always") as excinfo:
        wait_until(lambda: (_ for _ in ()).throw(ValueError("always")), timeout=0.3, interval=0.05)
    assert isinstance(excinfo.value.__cause__, ValueError)
    assert time.monotonic() - started < 5
    with pytest.raises(TimeoutError, match="returned False"):
        wait_until(lambda: False, timeout=0.1, interval=0.05)


def test_jwt(auth_keys: AuthKeys):
    assert auth_keys.private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert auth_keys.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    token = auth_keys.generate_token("tenant", tenant_id="0123456789abcdef0123456789abcdef")
    assert auth_keys.decode(token) == {
        "scope": "tenant",
        "tenant_id": "0123456789abcdef0123456789abcdef",
    }
    assert auth_keys.decode(auth_keys.generate_token("pageserverapi")) == {"scope": "pageserverapi"}


def test_sanitize_test_name():
    assert sanitize_test_name("test_x[a/b-1]") == "test_x_a_b-1"
    long = sanitize_test_name("test_" + "y" * 300)
    assert len(long) <= 100
    assert long != sanitize_test_name("test_" + "y" * 299)


def test_prune_to_logs_keeps_logs_and_top_level_files(tmp_path: Path, run_as: RunAs):
    """What a passed test leaves: its top-level files and every `*.log`, nothing else."""
    test = TestDir(tmp_path / "t", "test_prune_to_logs_probe", run_as)
    test.reset()
    (test.path / "pageserver-1.log").write_text("log")
    (test.path / "results.json").write_text("{}")
    data = test.path / "pageserver-1" / "tenants" / "t1"
    data.mkdir(parents=True)
    (data / "layer-000").write_bytes(b"x" * 4096)
    (test.path / "pageserver-1" / "inner.log").write_text("kept")
    (test.path / "bucket").mkdir()
    (test.path / "bucket" / "index_part.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("never followed")
    (test.path / "link").symlink_to(outside, target_is_directory=True)

    prune_to_logs(test)

    left = sorted(str(p.relative_to(test.path)) for p in test.path.rglob("*"))
    assert left == ["pageserver-1", "pageserver-1.log", "pageserver-1/inner.log", "results.json"]
    assert (outside / "precious").read_text() == "never followed"
