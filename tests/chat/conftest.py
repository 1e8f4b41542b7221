"""Chat test helpers: an app under uvicorn in the test's event loop, a JSON WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from tests.support import serve_app

TOKEN = "chat-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECV_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """``app`` under uvicorn (lifespan on) on ``port`` (default: a free one); yields its
    http:// base URL."""
    async with serve_app(app, port or 0) as url:
        yield url


def ws_url(base: str, channel: str, nick: str, token: str | None = None) -> str:
    url = base.replace("http://", "ws://", 1) + f"/chat/{channel}?nick={nick}"
    return url + (f"&token={token}" if token else "")


async def recv(ws: ClientConnection, timeout_s: float = RECV_TIMEOUT_S) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return frame


async def recv_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` (pongs and others in between are skipped)."""
    while True:
        frame = await recv(ws)
        if frame["type"] == kind:
            return frame


@contextlib.asynccontextmanager
async def joined(base: str, channel: str, nick: str, token: str | None = None
                 ) -> AsyncIterator[tuple[ClientConnection, dict[str, Any], dict[str, Any]]]:
    """A connected client with its welcome and history frames already read."""
    async with connect(ws_url(base, channel, nick, token)) as ws:
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        history = await recv(ws)
        assert history["type"] == "history", history
        yield ws, welcome, history


async def send(ws: ClientConnection, text: str, ref: str | None = None) -> None:
    frame: dict[str, Any] = {"type": "send", "text": text}
    if ref is not None:
        frame["ref"] = ref
    await ws.send(json.dumps(frame))
