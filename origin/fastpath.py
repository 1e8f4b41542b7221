"""The viewer hot paths, dispatched without FastAPI's routing and dependency injection.

Live media playlists (and their blocking reloads) and media objects are nearly every
request an origin sees. They are served by the very same handlers as the FastAPI routes
(which stay registered, for OpenAPI and as the reference), called directly: routing by
one regular expression and no dependency resolution make them about a third cheaper.
Being the same handlers, they apply the same rules (the media access rule of
``origin.access.MediaAccess`` included); tests/origin/test_access.py checks both ways in.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from castway.catalog.base import CatalogError
from castway.live.base import LiveStateError
from castway.storage.base import StorageError
from origin import hls
from origin.context import OriginContext

Handler = Callable[[Request, OriginContext, tuple[str, ...]], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


async def _live_media(request: Request, ctx: OriginContext, args: tuple[str, ...]) -> Response:
    return await hls.live_media(args[0], args[1], request, ctx)


async def _broadcast_media(request: Request, ctx: OriginContext,
                           args: tuple[str, ...]) -> Response:
    return await hls.broadcast_media(args[0], args[1], args[2], request, ctx)


async def _channel_media(request: Request, ctx: OriginContext,
                         args: tuple[str, ...]) -> Response:
    return await hls.channel_media(args[0], args[1], args[2], args[3], request, ctx)


# Same precedence as the router: the playlist route is declared before the media route.
ROUTES: tuple[tuple[re.Pattern[str], Handler], ...] = (
    (re.compile(r"^/hls/([^/]+)/([^/]+)/index\.m3u8$"), _live_media),
    (re.compile(r"^/hls/b/([^/]+)/([^/]+)/([^/]+)$"), _broadcast_media),
    (re.compile(r"^/hls/([^/]+)/b/([^/]+)/([^/]+)/([^/]+)$"), _channel_media),
)


class FastPath:
    """GET/HEAD of the hot paths go straight to their handlers; everything else, and any
    path that does not match exactly, goes on to the application."""

    def __init__(self, app: ASGIApp, ctx: OriginContext, on_error: ErrorHandler) -> None:
        self.app = app
        self.ctx = ctx
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path.startswith("/hls/"):
                for pattern, handler in ROUTES:
                    match = pattern.match(path)
                    if match is not None:
                        request = Request(scope, receive)
                        try:
                            response = await handler(request, self.ctx, match.groups())
                        except (CatalogError, LiveStateError, StorageError) as exc:
                            response = await self.on_error(request, exc)
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)
