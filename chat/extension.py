"""Chat as an extension of the origin's app: its routes and hub, and the widget beside the
live player on the watch page (origin.extensions.OriginExtension, matched by shape)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from castway.settings import Settings
from chat.router import install_chat
from chat.widget import with_chat


@dataclass(frozen=True)
class ChatExtension:
    settings: Settings

    def install(self, app: FastAPI, registry: CollectorRegistry) -> None:
        install_chat(app, self.settings, registry=registry)  # /chat/{channel} + moderation

    def beside_player(self, player_html: str, channel: str) -> str:
        return with_chat(player_html, channel)
