"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from origin.context import Ctx

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

PING_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, ping: Awaitable[bool]) -> str | None:
    """None if the dependency answers in time, else its name."""
    try:
        ok = await asyncio.wait_for(ping, PING_TIMEOUT_S)
    except Exception:
        logger.warning("readiness check failed", extra={"dependency": name}, exc_info=True)
        return name
    return None if ok else name


@router.get("/readyz", summary="Readiness: catalog, live state and storage answer",
            responses={503: {"description": "Some dependency is down"}})
async def readyz(ctx: Ctx) -> Response:
    results = await asyncio.gather(
        _check("catalog", asyncio.to_thread(ctx.catalog.ping)),
        _check("live", ctx.live.ping()),
        _check("storage", asyncio.to_thread(ctx.storage.ping)))
    failing = [name for name in results if name is not None]
    headers = {"cache-control": "no-store"}
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503,
                            headers=headers)
    return JSONResponse({"status": "ready", "failing": []}, headers=headers)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST,
                    headers={"cache-control": "no-store"})
