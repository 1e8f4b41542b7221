"""Chat as a service of its own: ``create_chat_app(settings)`` (the origin mounts the same
routes with :func:`chat.router.install_chat`).

Run it with ``uvicorn --factory chat.app:app_from_env`` (settings from CASTWAY_* variables).
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import PlainTextResponse, Response

from castway.settings import Settings
from chat.router import install_chat


def create_chat_app(settings: Settings, *, registry: CollectorRegistry | None = None
                    ) -> FastAPI:
    registry = registry if registry is not None else CollectorRegistry()
    app = FastAPI(title="castway chat", version="1", redoc_url=None)
    hub = install_chat(app, settings, registry=registry)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok" if hub.started else "starting",
                                 status_code=200 if hub.started else 503)

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: the settings come from the environment."""
    return create_chat_app(Settings())
