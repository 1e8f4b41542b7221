"""Prometheus metrics of chat, registered in the registry the caller gives."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ChatMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.connections = Gauge("castway_chat_connections", "Open chat WebSocket connections",
                                 registry=registry)
        self.connects = Counter("castway_chat_connects", "Chat connection attempts by result "
                                "(accepted, busy, invalid)", ["result"], registry=registry)
        self.messages_in = Counter("castway_chat_messages_in",
                                   "Chat messages accepted from this server's clients",
                                   registry=registry)
        self.messages_out = Counter("castway_chat_messages_out",
                                    "Chat message frames queued to this server's clients",
                                    registry=registry)
        self.refused = Counter("castway_chat_refused", "Client frames refused by reason",
                               ["reason"], registry=registry)
        self.slow_consumers = Counter("castway_chat_slow_consumers",
                                      "Connections dropped for falling behind",
                                      registry=registry)
        self.fanout_seconds = Histogram("castway_chat_fanout_seconds",
                                        "From the accepting server's timestamp to the "
                                        "message queued to every local client",
                                        buckets=FANOUT_BUCKETS, registry=registry)
