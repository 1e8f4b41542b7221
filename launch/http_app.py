"""The platform's web app: the origin (HLS, API, pages, health) with chat on it, and WHIP
ingest when the process runs an ingest node (``castway serve``)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.settings import Settings
from castway.storage.base import Storage
from chat.extension import ChatExtension
from ingest.whip.routes import whip_router
from ingest.whip.server import WhipServer
from origin.app import create_app
from origin.extensions import OriginExtension


class WhipExtension:
    """WHIP's resources on the origin's app (the ingest node's publish path behind them)."""

    def __init__(self, server: WhipServer) -> None:
        self.server = server

    def install(self, app: FastAPI, registry: CollectorRegistry) -> None:
        app.include_router(whip_router(self.server))

    def beside_player(self, player_html: str, channel: str) -> str:
        return player_html


def create_platform_app(settings: Settings, *, catalog: Catalog, live: LiveState,
                        storage: Storage, registry: CollectorRegistry,
                        whip: WhipServer | None = None) -> FastAPI:
    extensions: list[OriginExtension] = [ChatExtension(settings)]
    if whip is not None:
        extensions.append(WhipExtension(whip))
    return create_app(settings, catalog=catalog, live=live, storage=storage,
                      registry=registry, extensions=extensions)
