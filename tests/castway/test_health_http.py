"""Processes without a web app (the Celery worker, `castway scheduler run`) still answer
/healthz, /readyz and /metrics: the health listener, and both processes for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from castway.health.wsgi import HealthApp, HealthServer
from tests.support import free_port, wait_for_port


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, dict[str, bool]]]:
    state = {"db": True}
    registry = CollectorRegistry()
    Counter("castway_demo", "a demo counter", registry=registry).inc(3)

    def broken() -> bool:
        raise ConnectionError("refused")

    app = HealthApp({"db": lambda: state["db"], "broken": broken}, registry)
    srv = HealthServer(app, "127.0.0.1", 0).start()
    try:
        yield srv, state
    finally:
        srv.close()


def test_silent_and_slow_clients_do_not_block_the_probes(
        server: tuple[HealthServer, dict[str, bool]]) -> None:
    srv, _ = server
    silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
    for sock in silent[1:]:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    try:
        response = httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=2.0)
        assert response.status_code == 200
    finally:
        for sock in silent:
            sock.close()


def test_liveness_readiness_metrics_and_404(server: tuple[HealthServer, dict[str, bool]]
                                            ) -> None:
    srv, state = server
    base = f"http://127.0.0.1:{srv.port}"
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 503  # a check that raises counts as failing
    assert ready.json()["failing"] == ["broken"]
    state["db"] = False
    assert httpx.get(f"{base}/readyz").json()["failing"] == ["db", "broken"]
    metrics = httpx.get(f"{base}/metrics")
    assert "castway_demo_total 3.0" in metrics.text
    assert httpx.get(f"{base}/nope").status_code == 404
    assert httpx.get(f"{base}/healthz").headers["cache-control"] == "no-store"


def test_all_ready_is_200() -> None:
    srv = HealthServer(HealthApp({"ok": lambda: True}), "127.0.0.1", 0).start()
    try:
        assert httpx.get(f"http://127.0.0.1:{srv.port}/readyz").status_code == 200
    finally:
        srv.close()


def _start(args: list[str], tmp_path: Path, redis_url: str, port: int
           ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(CASTWAY_DATA_DIR=str(tmp_path / "data"), CASTWAY_REDIS_URL=redis_url,
               CASTWAY_HTTP_PORT=str(port), CASTWAY_SCHEDULER_BACKEND="static",
               CASTWAY_LOG_JSON="true")
    return subprocess.Popen([sys.executable, "-m", "launch.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("args", [["worker", "--pool", "solo"], ["scheduler", "run"]],
                         ids=["worker", "scheduler-run"])
def test_worker_and_scheduler_processes_answer_health_checks(
        args: list[str], tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    proc = _start(args, tmp_path, redis_url, port)
    try:
        wait_for_port(port, timeout_s=60, proc=proc)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
