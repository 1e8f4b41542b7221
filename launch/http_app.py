"""The platform's web app: the origin (HLS, API, pages, health) with chat on it."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from castway.catalog.base import Catalog
from castway.live.base import LiveState
from castway.settings import Settings
from castway.storage.base import Storage
from chat.extension import ChatExtension
from origin.app import create_app


def create_platform_app(settings: Settings, *, catalog: Catalog, live: LiveState,
                        storage: Storage, registry: CollectorRegistry) -> FastAPI:
    return create_app(settings, catalog=catalog, live=live, storage=storage,
                      registry=registry, extensions=(ChatExtension(settings),))
