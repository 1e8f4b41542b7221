"""What /healthz, /readyz and /metrics answer, whichever server shell serves them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

#: Probes and scrapers must always see the process as it is now, never a cached answer.
HEADERS = {"cache-control": "no-store"}
LIVENESS = {"status": "ok"}
#: A readiness check that has not answered by then counts as failing.
PING_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    status_code: int
    body: dict[str, object]


def readiness(failing: Sequence[str]) -> Readiness:
    """200 and ``ready`` when no dependency fails, else 503 naming the failing ones."""
    if failing:
        return Readiness(503, {"status": "unavailable", "failing": list(failing)})
    return Readiness(200, {"status": "ready", "failing": []})


def check_failed(name: str) -> None:
    """Log a readiness check that raised (with its traceback: the probe only sees a name)."""
    logger.warning("readiness check failed", extra={"dependency": name}, exc_info=True)


def metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
