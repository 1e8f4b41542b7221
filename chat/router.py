"""Chat routes: the WebSocket ``/chat/{channel}``, moderation under /api/v1, the widget.

``create_chat_router(settings, hub)`` returns one APIRouter; ``install_chat(app, settings)``
adds it to an existing app (the origin) and ties the hub to that app's lifespan.
Moderation uses the control API's bearer token (``settings.admin_token``, compared in
constant time), checked here from the settings given, so it works inside the origin and in
the standalone chat service alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field, model_validator
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from castway.model import CHANNEL_NAME_MAX, CHANNEL_NAME_PATTERN, valid_channel_name
from castway.settings import Settings
from chat.bus import BusError
from chat.hub import Busy, ChatHub, Session
from chat.protocol import (
    MAX_NICK_CHARS,
    PONG_FRAME,
    TOKEN_RE,
    CloseCode,
    ErrorCode,
    Ping,
    Refused,
    error_frame,
    nick_key,
    parse_client_frame,
    valid_nick,
)

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_ASSETS = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}
CLOSE_TIMEOUT_S = 2.0
ChannelPath = Annotated[str, PathParam(pattern=CHANNEL_NAME_PATTERN,
                                       max_length=CHANNEL_NAME_MAX)]
MessageIdPath = Annotated[int, PathParam(ge=1)]
_bearer = HTTPBearer(auto_error=False, description="CASTWAY_ADMIN_TOKEN")


class BanCreate(BaseModel):
    """Ban by public user id (from a message's ``user``), by nickname, or both."""

    user: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")
    nick: str | None = Field(None, min_length=1, max_length=MAX_NICK_CHARS)

    @model_validator(mode="after")
    def _one_of(self) -> BanCreate:
        if not self.user and not self.nick:
            raise ValueError("give a user id, a nickname, or both")
        return self


class BanCreated(BaseModel):
    channel: str
    user: str | None
    nick: str | None


class MessageDeleted(BaseModel):
    channel: str
    id: int
    in_history: bool


def create_chat_router(settings: Settings, hub: ChatHub) -> APIRouter:
    router = APIRouter()

    async def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                   Depends(_bearer)]) -> None:
        expected = settings.admin_token
        headers = {"WWW-Authenticate": 'Bearer realm="castway"'}
        if not expected:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the control API is disabled: "
                                "no admin token is configured", headers=headers)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                                headers=headers)
        if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                                headers=headers)

    moderation = APIRouter(prefix="/api/v1/channels/{channel}/chat", tags=["chat"],
                           dependencies=[Depends(require_admin)])

    @moderation.delete("/messages/{message_id}", response_model=MessageDeleted)
    async def delete_message(channel: ChannelPath,
                             message_id: MessageIdPath) -> MessageDeleted:
        """Remove a message from every viewer's chat and from the history."""
        try:
            found = await hub.bus.delete(channel, message_id)
        except BusError as exc:
            raise HTTPException(503, "chat is unavailable, retry later") from exc
        return MessageDeleted(channel=channel, id=message_id, in_history=found)

    @moderation.post("/bans", response_model=BanCreated, status_code=201)
    async def ban(channel: ChannelPath, body: BanCreate) -> BanCreated:
        """Refuse this user's (and/or nickname's) messages on the channel from now on."""
        try:
            await hub.bus.ban(channel, user=body.user,
                              nick_key=nick_key(body.nick) if body.nick else None,
                              nick=body.nick)
        except BusError as exc:
            raise HTTPException(503, "chat is unavailable, retry later") from exc
        return BanCreated(channel=channel, user=body.user, nick=body.nick)

    router.include_router(moderation)

    @router.get("/chat/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media_type = _ASSETS.get(name)  # a fixed list: no path ever reaches the disk
        if media_type is None:
            raise HTTPException(404, "not found")
        content = await asyncio.to_thread((STATIC_DIR / name).read_bytes)
        return Response(content, media_type=media_type,
                        headers={"cache-control": "public, max-age=300"})

    @router.websocket("/chat/{channel}")
    async def chat_socket(websocket: WebSocket, channel: str,
                          nick: Annotated[str, Query()] = "",
                          token: Annotated[str | None, Query()] = None) -> None:
        await _serve(hub, websocket, channel, nick, token)

    return router


async def _refuse(websocket: WebSocket, code: CloseCode, error: ErrorCode,
                  message: str) -> None:
    """Accept only to say why (browsers see no reason on a refused handshake), then close."""
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(error_frame(error, message))
        await websocket.close(code, message[:120])


async def _serve(hub: ChatHub, websocket: WebSocket, channel: str, nick: str,
                 token: str | None) -> None:
    if not valid_channel_name(channel):
        hub.metrics.connects.labels("invalid").inc()
        await _refuse(websocket, CloseCode.POLICY, ErrorCode.BAD_FRAME, "no such channel")
        return
    if not valid_nick(nick):
        hub.metrics.connects.labels("invalid").inc()
        await _refuse(websocket, CloseCode.POLICY, ErrorCode.BAD_FRAME,
                      f"a nickname is 1-{MAX_NICK_CHARS} letters, digits, '_' or '-'")
        return
    if token is not None and not TOKEN_RE.fullmatch(token):
        token = None  # a malformed token gets a fresh identity, not an error
    address = websocket.client.host if websocket.client else "?"
    if not hub.claim_address(address):
        await _refuse(websocket, CloseCode.POLICY, ErrorCode.TOO_MANY_CONNECTIONS,
                      f"too many chat connections from your address (at most "
                      f"{hub.settings.chat_max_connections_per_ip})")
        return
    try:
        await _serve_admitted(hub, websocket, channel, nick, token)
    finally:
        hub.release_address(address)


async def _serve_admitted(hub: ChatHub, websocket: WebSocket, channel: str, nick: str,
                          token: str | None) -> None:
    try:
        await hub.admit()
    except Busy as exc:
        await _refuse(websocket, CloseCode.TRY_AGAIN_LATER, ErrorCode.UNAVAILABLE, str(exc))
        return
    await websocket.accept()
    try:
        session = await hub.join(channel, nick, token)
    except BusError:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.send_text(error_frame(ErrorCode.UNAVAILABLE,
                                                  "chat is unavailable, retry later"))
            await websocket.close(CloseCode.TRY_AGAIN_LATER)
        return
    writer = asyncio.create_task(_write(websocket, session), name="chat-writer")
    reader = asyncio.create_task(_read(hub, websocket, session), name="chat-reader")
    killed = asyncio.create_task(session.closed.wait(), name="chat-killed")
    try:
        await asyncio.wait({writer, reader, killed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, reader, killed):
            task.cancel()
        for task in (writer, reader, killed):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        code = session.close_code
        await hub.leave(session)
        if code is not None and code is not CloseCode.NORMAL and \
                websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await websocket.close(code)


async def _write(websocket: WebSocket, session: Session) -> None:
    while True:
        frame = await session.queue.get()
        await websocket.send_text(frame)


async def _read(hub: ChatHub, websocket: WebSocket, session: Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        ref: str | None = None
        try:
            if not isinstance(raw, str):
                raise Refused(ErrorCode.BAD_FRAME, "frames are JSON text, not binary")
            frame = parse_client_frame(raw)
            if isinstance(frame, Ping):
                session.offer(PONG_FRAME)
                continue
            ref = frame.ref
            await hub.post(session, frame.text, frame.ref)
        except Refused as refused:
            if refused.code not in (ErrorCode.RATE_LIMITED, ErrorCode.BANNED,
                                    ErrorCode.UNAVAILABLE):
                hub.metrics.refused.labels(refused.code.value).inc()
            session.offer(error_frame(refused.code, refused.message, refused.ref or ref))


def install_chat(app: FastAPI, settings: Settings, *,
                 registry: CollectorRegistry | None = None) -> ChatHub:
    """Add chat to ``app``: its routes, and a hub started and stopped with its lifespan."""
    hub = ChatHub(settings, registry=registry)
    app.include_router(create_chat_router(settings, hub))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(lifespan_app: FastAPI) -> AsyncIterator[Any]:
        await hub.start()
        try:
            async with inner(lifespan_app) as state:
                yield state
        finally:
            await hub.stop()

    app.router.lifespan_context = lifespan
    app.state.chat = hub
    return hub
