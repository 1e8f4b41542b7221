"""The origin's one ASGI middleware (:class:`EdgeMiddleware`): metrics, CORS and gzip in a
single pass.

Design: docs/origin.md, "URLs" (why one layer, and what each part does).
"""

from __future__ import annotations

import gzip
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from origin.metrics import OriginMetrics, request_kind

GZIP_MINIMUM_BYTES = 512
GZIP_LEVEL = 6
CORS_METHODS = ("GET", "HEAD", "OPTIONS")
CORS_ALLOW_HEADERS = ("range", "if-none-match", "if-range")
CORS_EXPOSE = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Age", "Date",
               "Cache-Control", "Content-Type")
CORS_MAX_AGE_S = 86400
_COMPRESSIBLE = ("application/vnd.apple.mpegurl", "application/json", "text/",
                 "application/javascript", "image/svg+xml")


def _compressible(content_type: str) -> bool:
    return content_type.startswith(_COMPRESSIBLE)


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, metrics: OriginMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        kind = request_kind(str(scope.get("path", "")))
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        status = 500
        if (origin is not None and scope["method"] == "OPTIONS"
                and "access-control-request-method" in headers):
            status = await self._preflight(headers, send)
            self.metrics.requests.labels(kind, str(status)).inc()
            return
        accepts_gzip = "gzip" in headers.get("accept-encoding", "")
        start: Message | None = None

        async def edge_send(message: Message) -> None:
            nonlocal start, status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.request_seconds.labels(kind).observe(
                    time.perf_counter() - started)
                response_headers = MutableHeaders(scope=message)
                if origin is not None:
                    response_headers["access-control-allow-origin"] = "*"
                    response_headers["access-control-expose-headers"] = ", ".join(CORS_EXPOSE)
                if _compressible(response_headers.get("content-type", "")):
                    response_headers.add_vary_header("Accept-Encoding")
                    if accepts_gzip and "content-encoding" not in response_headers \
                            and "content-range" not in response_headers:
                        start = message  # decide on the body
                        return
                await send(message)
                return
            if start is not None and message["type"] == "http.response.body":
                held, start = start, None
                body = message.get("body", b"")
                if not message.get("more_body", False) and len(body) >= GZIP_MINIMUM_BYTES:
                    body = gzip.compress(body, GZIP_LEVEL, mtime=0)
                    held_headers = MutableHeaders(scope=held)
                    held_headers["content-encoding"] = "gzip"
                    held_headers["content-length"] = str(len(body))
                    message = {**message, "body": body}
                await send(held)
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            self.metrics.requests.labels(kind, str(status)).inc()

    async def _preflight(self, headers: Headers, send: Send) -> int:
        method = headers["access-control-request-method"].upper()
        requested = [h.strip().lower() for h in
                     headers.get("access-control-request-headers", "").split(",") if h.strip()]
        ok = method in CORS_METHODS and all(h in CORS_ALLOW_HEADERS for h in requested)
        status = 200 if ok else 400
        response_headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", ", ".join(CORS_METHODS).encode()),
            (b"access-control-allow-headers", ", ".join(CORS_ALLOW_HEADERS).encode()),
            (b"access-control-max-age", str(CORS_MAX_AGE_S).encode()),
            (b"vary", b"Origin"),
        ]
        body = b"OK" if ok else b"Disallowed CORS request"
        response_headers += [(b"content-type", b"text/plain; charset=utf-8"),
                             (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status,
                    "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        return status
