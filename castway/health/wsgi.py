"""The WSGI shell of castway.health, for processes that have no web app of their own (the
Celery worker, ``castway scheduler run``): a small server on a daemon thread, so it answers
even while the process's main thread belongs to Celery's or the scheduler's loop."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry

from castway.health import report

Check = Callable[[], bool]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

#: A client must send its request (each read) within this, else it is dropped.
HEALTH_REQUEST_TIMEOUT_S = 5.0
#: Requests served at once; more are closed at accept (probes need one or two).
HEALTH_MAX_CONCURRENT = 16


class _QuietHandler(WSGIRequestHandler):
    timeout = HEALTH_REQUEST_TIMEOUT_S  # StreamRequestHandler sets it on the socket

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        return None  # health probes every few seconds would flood the logs


@dataclass
class HealthApp:
    """The WSGI app: liveness, readiness over named checks, Prometheus text."""

    checks: Mapping[str, Check]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def failing(self) -> list[str]:
        failing = []
        for name, check in self.checks.items():
            try:
                ok = check()
            except Exception:
                report.check_failed(name)
                ok = False
            if not ok:
                failing.append(name)
        return failing

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        headers = list(report.HEADERS.items())
        if path == "/healthz":
            status, body, ctype = "200 OK", json.dumps(report.LIVENESS).encode(), \
                "application/json"
        elif path == "/readyz":
            answer = report.readiness(self.failing())
            status = "200 OK" if answer.status_code == 200 else "503 Service Unavailable"
            body, ctype = json.dumps(answer.body).encode(), "application/json"
        elif path == "/metrics":
            status = "200 OK"
            body, ctype = report.metrics(self.registry)
        else:
            status, body, ctype = "404 Not Found", b'{"detail": "not found"}', \
                "application/json"
        start_response(status, [("Content-Type", ctype),
                                ("Content-Length", str(len(body))), *headers])
        return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per request, at most :data:`HEALTH_MAX_CONCURRENT`: wsgiref's server
    serves one connection at a time, so one client that connected and sent nothing
    blocked every probe for good (and the orchestrator then killed a healthy worker)."""

    daemon_threads = True
    block_on_close = False

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(HEALTH_MAX_CONCURRENT)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """Serves a :class:`HealthApp` on host:port (0: any free port) until ``close()``."""

    def __init__(self, app: HealthApp, host: str, port: int) -> None:
        self._server: WSGIServer = make_server(host, port, app,
                                               server_class=_ThreadingServer,
                                               handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
