"""The request-body cap: the control API takes small JSON documents, so a body past
:data:`MAX_REQUEST_BODY_BYTES` is answered 413 before any of it is kept -- at once from
``Content-Length``, or as soon as a chunked body grows past the cap."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest request body accepted (the API's JSON; the origin takes no uploads).
MAX_REQUEST_BODY_BYTES = 1024 * 1024

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyLimit:
    """Pure ASGI middleware; GET/HEAD/OPTIONS (the viewer hot path) pass untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send, close=True)
            return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            # Raising here would not reach us: FastAPI turns any error while reading a
            # body into its own 400. So answer 413 from here and tell the app the client
            # left; whatever it sends after that is dropped.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not started:
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started |= message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *,
                      close: bool = False) -> None:
        """413. Mid-way through a streamed body the connection is kept: uvicorn then
        reads and drops the rest (nothing is kept), and the client, which sends its whole
        body before reading, sees the 413 instead of a reset."""
        headers = {"cache-control": "no-store"}
        if close:
            headers["connection"] = "close"
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"},
            status_code=413, headers=headers)
        await response(scope, receive, send)
