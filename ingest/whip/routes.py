"""WHIP's HTTP resources (RFC 9725), over a :class:`WhipServer`:

- ``POST /whip/{channel}``: ``Content-Type: application/sdp``, the offer; ``Authorization:
  Bearer <stream key>``. 201 with the answer, ``Location`` (the session's resource) and
  ``ETag``; 401 (wrong key, or another channel's), 406 (nothing castway can take in the
  offer, and why), 409 (the channel is live from another publisher), 413, 415, 429, 503
  with ``Retry-After``.
- ``PATCH /whip/{channel}/{session}``: trickled ICE candidates
  (``application/trickle-ice-sdpfrag``), 204. ICE restarts are not offered (an answer
  with new ICE credentials would be needed): such a fragment gets 422.
- ``DELETE /whip/{channel}/{session}``: the publisher stops; 200.
- ``OPTIONS``: what the resource accepts, and CORS for publishers in browsers.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from castway.model import valid_channel_name
from ingest.whip.server import WhipAnswer, WhipServer

MAX_OFFER_BYTES = 64 * 1024
_CORS = {"access-control-allow-origin": "*",
         "access-control-allow-methods": "POST, PATCH, DELETE, OPTIONS",
         "access-control-allow-headers": "Authorization, Content-Type, If-Match",
         "access-control-expose-headers": "Location, ETag, Link, Accept-Patch"}


def _text(status: int, detail: str, **headers: str) -> Response:
    return Response(detail + "\n", status_code=status, media_type="text/plain",
                    headers={**_CORS, **headers})


def whip_router(server: WhipServer) -> APIRouter:
    router = APIRouter(tags=["whip"])

    @router.options("/whip/{channel}", include_in_schema=False)
    @router.options("/whip/{channel}/{session}", include_in_schema=False)
    async def options() -> Response:
        return Response(status_code=204, headers={
            **_CORS, "accept-post": "application/sdp",
            "accept-patch": "application/trickle-ice-sdpfrag"})

    @router.post("/whip/{channel}", summary="WHIP: publish with WebRTC (RFC 9725)")
    async def publish(channel: str, request: Request) -> Response:
        if not valid_channel_name(channel):
            return _text(404, "no such channel")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _text(401, "The stream key goes in an 'Authorization: Bearer' header.",
                         **{"www-authenticate": 'Bearer realm="castway"'})
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            return _text(415, "The offer's Content-Type must be application/sdp.")
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            return _text(413, f"The offer is larger than {MAX_OFFER_BYTES} bytes.")
        client = request.client
        peer = f"{client.host}:{client.port}" if client else ""
        outcome = await server.publish(channel, key.strip(), body.decode("utf-8", "replace"),
                                       peer)
        if not isinstance(outcome, WhipAnswer):
            extra = {"retry-after": str(outcome.retry_after_s)} \
                if outcome.retry_after_s is not None else {}
            return _text(outcome.status, outcome.detail, **extra)
        return Response(outcome.sdp, status_code=201, media_type="application/sdp",
                        headers={**_CORS, "location": f"/whip/{channel}/{outcome.session_id}",
                                 "etag": outcome.etag,
                                 "accept-patch": "application/trickle-ice-sdpfrag"})

    @router.patch("/whip/{channel}/{session}", include_in_schema=False)
    async def trickle(channel: str, session: str, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != \
                "application/trickle-ice-sdpfrag":
            return _text(415, "Content-Type must be application/trickle-ice-sdpfrag.")
        fragment = (await request.body())[:MAX_OFFER_BYTES].decode("utf-8", "replace")
        if "a=ice-ufrag:" in fragment and request.headers.get("if-match") == "*":
            return _text(422, "ICE restarts are not supported: start a new session.")
        if not await server.add_candidates(session, fragment):
            return _text(404, "no such WHIP session")
        return Response(status_code=204, headers=_CORS)

    @router.delete("/whip/{channel}/{session}", include_in_schema=False)
    async def delete(channel: str, session: str) -> Response:
        if not await server.end(session):
            return _text(404, "no such WHIP session")
        return Response(status_code=200, headers=_CORS)

    return router
