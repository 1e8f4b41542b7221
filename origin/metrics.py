"""Prometheus metrics of the origin, registered in the registry the caller gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from castway.layout import InitName, PartName, parse_media_name

WAKEUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class OriginMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("castway_origin_requests", "HTTP requests by kind and status",
                                ["kind", "status"], registry=registry)
        self.request_seconds = Histogram("castway_origin_request_seconds",
                                         "Time to first response byte by kind", ["kind"],
                                         registry=registry)
        self.blocked_reloads = Gauge("castway_origin_blocked_reloads",
                                     "Blocking playlist reloads (and part requests) in flight",
                                     registry=registry)
        self.wakeup_seconds = Histogram("castway_origin_wakeup_seconds",
                                        "From the media event to the blocked request resuming",
                                        buckets=WAKEUP_BUCKETS, registry=registry)
        self.blocked_timeouts = Counter("castway_origin_blocked_timeouts",
                                        "Blocking requests answered 503 after the timeout",
                                        registry=registry)


def request_kind(path: str) -> str:
    """A bounded label for a request path (never the path itself: unbounded cardinality)."""
    if path.startswith(("/hls/", "/vod/")):
        if path.endswith(".m3u8"):
            return "playlist"
        name = parse_media_name(path.rsplit("/", 1)[-1])
        if isinstance(name, InitName):
            return "init"
        if isinstance(name, PartName):
            return "part"
        return "media"
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/static/"):
        return "static"
    if path in ("/healthz", "/readyz", "/metrics"):
        return "health"
    return "page"
