"""The origin's FastAPI application: HLS delivery, control API, health, metrics, pages.

``create_app`` builds everything from what it is given; nothing happens at import time.
The app is stateless (any replica serves any broadcast from the live state and storage);
the caller owns the catalog, live state and storage and closes them. The app's own
background work (the per-broadcast event watches of blocking reloads) stops with its
lifespan, or with ``await app.state.origin.notifier.close()`` when no server runs it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from castway.catalog.base import AlreadyExists, Catalog, CatalogError, NotFound
from castway.health import asgi as health
from castway.live.base import LiveState, LiveStateError
from castway.settings import Settings
from castway.storage.base import Storage, StorageError
from origin import api, encoder_config, hls, pages, restreams, webhooks
from origin.access import VodAccess
from origin.context import OriginContext
from origin.edge import CORS_EXPOSE, EdgeMiddleware
from origin.extensions import OriginExtension
from origin.fastpath import FastPath
from origin.limits import BodyLimit
from origin.metrics import OriginMetrics
from origin.notify import MediaNotifier
from origin.responses import CacheKind

logger = logging.getLogger(__name__)

__all__ = ["CORS_EXPOSE", "create_app"]  # CORS_EXPOSE: the CDN's CORS policy mirrors it

def create_app(settings: Settings, *, catalog: Catalog, live: LiveState, storage: Storage,
               registry: CollectorRegistry | None = None,
               extensions: Sequence[OriginExtension] = ()) -> FastAPI:
    metrics = OriginMetrics(registry if registry is not None else CollectorRegistry())
    notifier = MediaNotifier(live, on_wake=metrics.wakeup_seconds.observe)
    ctx = OriginContext(settings=settings, catalog=catalog, live=live, storage=storage,
                        metrics=metrics, notifier=notifier, access=VodAccess(settings),
                        extensions=tuple(extensions))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await notifier.close()

    app = FastAPI(title="castway origin", version="1",
                  description="LL-HLS origin, control API and web pages of castway.",
                  lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.origin = ctx
    app.state.health = health.HealthDeps(catalog, live, storage, metrics.registry)

    app.include_router(health.router)
    app.include_router(hls.router)
    for router in api.ROUTERS:
        app.include_router(router)
    app.include_router(webhooks.router)
    app.include_router(restreams.router)
    app.include_router(encoder_config.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR, check_dir=False),
              name="static")

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(CatalogError, _unavailable)
    app.add_exception_handler(LiveStateError, _unavailable)
    app.add_exception_handler(StorageError, _unavailable)

    for extension in extensions:
        extension.install(app, metrics.registry)

    app.add_middleware(FastPath, ctx=ctx, on_error=_unavailable)  # viewer hot paths
    app.add_middleware(BodyLimit)  # 413 past MAX_REQUEST_BODY_BYTES
    app.add_middleware(EdgeMiddleware, metrics=metrics)  # metrics, CORS, gzip (outermost)
    return app


def _cache_for(request: Request) -> str:
    if request.url.path.startswith("/api/"):
        return CacheKind.NO_STORE.value
    return CacheKind.ERROR.value


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # registered for this type only
    headers = dict(exc.headers or {})
    headers.setdefault("cache-control", _cache_for(request))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """Backing-service errors the routes did not handle: 503 (409/404 for the catalog's
    conflict and not-found errors)."""
    logger.warning("dependency unavailable", extra={"path": request.url.path,
                                                     "error": repr(exc)})
    if isinstance(exc, AlreadyExists | NotFound):
        status = 409 if isinstance(exc, AlreadyExists) else 404
        return JSONResponse({"detail": str(exc)}, status_code=status,
                            headers={"cache-control": _cache_for(request)})
    return JSONResponse({"detail": "a backing service is unavailable, retry later"},
                        status_code=503,
                        headers={"cache-control": "no-store", "retry-after": "1"})
