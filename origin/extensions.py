"""What the wiring may add to the origin's app without the origin knowing the component:
chat is one (launch/http_app.py). The origin depends on this protocol, never on chat."""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI
from prometheus_client import CollectorRegistry


class OriginExtension(Protocol):
    def install(self, app: FastAPI, registry: CollectorRegistry) -> None:
        """Add routes, and background work started and stopped with the app's lifespan."""

    def beside_player(self, player_html: str, channel: str) -> str:
        """The live watch page's player with what the extension shows beside it."""
