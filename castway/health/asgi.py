"""The ASGI shell of castway.health: a router the origin includes, and a small app of its
own for processes without HLS (``castway ingest`` nodes: :func:`create_health_app`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.responses import JSONResponse, Response

from castway.catalog.base import Catalog
from castway.health import report
from castway.live.base import LiveState
from castway.storage.base import Storage
from castway.storage.pool import StoragePool

router = APIRouter(tags=["health"])

PING_THREADS = 2


@dataclass(frozen=True, slots=True)
class HealthDeps:
    catalog: Catalog
    live: LiveState
    storage: Storage
    registry: CollectorRegistry
    # Pings of a frozen storage hold their thread until the client's timeouts: a few of
    # their own at most, the readiness answer itself comes after PING_TIMEOUT_S.
    storage_pool: StoragePool = field(
        default_factory=lambda: StoragePool(PING_THREADS, name="readyz-storage"))


async def get_health(request: Request) -> HealthDeps:
    deps: HealthDeps = request.app.state.health
    return deps


Deps = Annotated[HealthDeps, Depends(get_health)]


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return report.LIVENESS


async def _check(name: str, ping: Awaitable[bool]) -> str | None:
    """None if the dependency answers in time, else its name."""
    try:
        async with asyncio.timeout(report.PING_TIMEOUT_S):
            ok = await ping
    except Exception:
        report.check_failed(name)
        return name
    return None if ok else name


@router.get("/readyz", summary="Readiness: catalog, live state and storage answer",
            responses={503: {"description": "Some dependency is down"}})
async def readyz(deps: Deps) -> Response:
    results = await asyncio.gather(
        _check("catalog", asyncio.to_thread(deps.catalog.ping)),
        _check("live", deps.live.ping()),
        _check("storage", deps.storage_pool.run(deps.storage.ping)))
    answer = report.readiness([name for name in results if name is not None])
    return JSONResponse(answer.body, status_code=answer.status_code, headers=report.HEADERS)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(deps: Deps) -> Response:
    body, content_type = report.metrics(deps.registry)
    return Response(body, media_type=content_type, headers=report.HEADERS)


def create_health_app(catalog: Catalog, live: LiveState, storage: Storage,
                      registry: CollectorRegistry) -> FastAPI:
    """/healthz, /readyz and /metrics alone (an ingest node's HTTP port)."""
    app = FastAPI(title="castway health", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.health = HealthDeps(catalog, live, storage, registry)
    app.include_router(router)
    return app
