"""The control API under /api/v1: channels, stream keys, broadcasts, VODs, nodes.

Bearer-token auth (``settings.admin_token``, compared in constant time); without a
configured token the API refuses everything. Stream keys are shown once and stored only
as :func:`castway.keys.hash_stream_key`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from castway.catalog.base import AlreadyExists, NotFound
from castway.events.archive import (
    ARCHIVE_REQUESTS_TOPIC,
    ClipReady,
    ClipRequested,
    ExportRequested,
    clip_topic,
)
from castway.events.nodes import StopBroadcast, node_commands_topic
from castway.events.vods import VODS_TOPIC
from castway.events.vods import VodDeleted as VodDeletedEvent
from castway.keys import generate_stream_key, hash_stream_key, key_id
from castway.layout import COMPONENT_PATTERN, broadcast_prefix
from castway.live.base import LiveStateError
from castway.model import (
    CHANNEL_NAME_MAX,
    CHANNEL_NAME_PATTERN,
    BroadcastState,
    Channel,
    StreamKey,
    VodState,
    new_id,
)
from origin.context import Ctx, OriginContext
from origin.schemas import (
    BroadcastPublic,
    ChannelCreate,
    ChannelCreated,
    ChannelGrantPublic,
    ChannelPublic,
    ChannelUpdate,
    ClipCreate,
    ErrorBody,
    KeysRevoked,
    NodePublic,
    StopRequested,
    StreamKeyCreated,
    VodDeleted,
    VodGrantCreate,
    VodGrantPublic,
    VodPublic,
    VodUpdate,
)

logger = logging.getLogger(__name__)

#: How long the clip route waits for the archiver's answer (it takes milliseconds: a
#: clip is a few playlists over segments already stored).
CLIP_WAIT_S = 10.0


_bearer = HTTPBearer(auto_error=False, description="CASTWAY_ADMIN_TOKEN")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": 'Bearer realm="castway"'})


async def require_admin(
        ctx: Ctx,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = ctx.settings.admin_token
    if not expected:
        raise _unauthorized("the control API is disabled: no admin token is configured")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise _unauthorized("invalid token")


ChannelPath = Annotated[str, Path(pattern=CHANNEL_NAME_PATTERN, max_length=CHANNEL_NAME_MAX)]
IdPath = Annotated[str, Path(pattern=COMPONENT_PATTERN)]  # broadcast and VOD ids
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}}

channels = APIRouter(prefix="/api/v1/channels", tags=["channels"],
                     dependencies=[Depends(require_admin)], responses=_ERRORS)
broadcasts = APIRouter(prefix="/api/v1/broadcasts", tags=["broadcasts"],
                       dependencies=[Depends(require_admin)], responses=_ERRORS)
vods = APIRouter(prefix="/api/v1/vods", tags=["vods"],
                 dependencies=[Depends(require_admin)], responses=_ERRORS)
nodes = APIRouter(prefix="/api/v1/nodes", tags=["nodes"],
                  dependencies=[Depends(require_admin)], responses=_ERRORS)


def _base(ctx: OriginContext) -> str:
    return ctx.settings.effective_public_url


async def _channel_public(ctx: OriginContext, channel: Channel) -> ChannelPublic:
    live = await ctx.live.live_broadcast(channel.name)
    return ChannelPublic.of(channel, base_url=_base(ctx),
                            live_broadcast_id=live.id if live else None)


async def _get_channel(ctx: OriginContext, name: str) -> Channel:
    channel = await asyncio.to_thread(ctx.catalog.get_channel, name)
    if channel is None:
        raise HTTPException(404, f"no channel {name}")
    return channel


async def _new_key(ctx: OriginContext, name: str, *, rotate: bool) -> StreamKeyCreated:
    revoked = await asyncio.to_thread(ctx.catalog.revoke_stream_keys, name) if rotate else 0
    key = generate_stream_key()
    key_hash = hash_stream_key(key)
    await asyncio.to_thread(ctx.catalog.add_stream_key,
                            StreamKey(channel=name, key_hash=key_hash))
    logger.info("stream key created", extra={"channel": name, "rotated": rotate})
    return StreamKeyCreated(channel=name, stream_key=key, key_id=key_id(key_hash),
                            revoked=revoked,
                            rtmp_url=ctx.settings.effective_public_rtmp_url,
                            rtmps_url=ctx.settings.effective_public_rtmps_url)


@channels.get("", response_model=list[ChannelPublic], summary="List channels")
async def list_channels(ctx: Ctx) -> list[ChannelPublic]:
    found = await asyncio.to_thread(ctx.catalog.list_channels)
    return [await _channel_public(ctx, c) for c in found]


@channels.post("", response_model=ChannelCreated, status_code=201,
               summary="Create a channel (and its first stream key, shown once)")
async def create_channel(body: ChannelCreate, ctx: Ctx) -> ChannelCreated:
    channel = Channel(name=body.name, title=body.title, vod_visibility=body.vod_visibility,
                      live_visibility=body.live_visibility)
    try:
        channel = await asyncio.to_thread(ctx.catalog.create_channel, channel)
    except AlreadyExists:
        raise HTTPException(409, f"channel {body.name} already exists") from None
    key = await _new_key(ctx, channel.name, rotate=False) if body.create_key else None
    return ChannelCreated(channel=await _channel_public(ctx, channel), stream_key=key)


@channels.get("/{name}", response_model=ChannelPublic, summary="One channel")
async def get_channel(name: ChannelPath, ctx: Ctx) -> ChannelPublic:
    return await _channel_public(ctx, await _get_channel(ctx, name))


@channels.patch("/{name}", response_model=ChannelPublic, summary="Update a channel")
async def update_channel(name: ChannelPath, body: ChannelUpdate, ctx: Ctx) -> ChannelPublic:
    channel = await _get_channel(ctx, name)
    changes = body.model_dump(exclude_none=True)
    if changes:
        channel = await asyncio.to_thread(ctx.catalog.update_channel,
                                          replace(channel, **changes))
    return await _channel_public(ctx, channel)


@channels.delete("/{name}", status_code=204, summary="Delete a channel and its keys")
async def delete_channel(name: ChannelPath, ctx: Ctx) -> None:
    if await ctx.live.live_broadcast(name) is not None:
        raise HTTPException(409, f"channel {name} is live: stop the broadcast first")
    try:
        await asyncio.to_thread(ctx.catalog.delete_channel, name)
    except NotFound:
        raise HTTPException(404, f"no channel {name}") from None


@channels.post("/{name}/grant", response_model=ChannelGrantPublic, status_code=201,
               summary="Signed access to the channel's live broadcast (for private "
                       "channels), shown once")
async def grant_channel(name: ChannelPath, body: VodGrantCreate,
                        ctx: Ctx) -> ChannelGrantPublic:
    await _get_channel(ctx, name)
    if not ctx.access.enabled:
        raise HTTPException(409, "signed access needs an RSA signing key "
                            "(CASTWAY_SIGNING_KEY, PEM)")
    grant = ctx.access.channel_grant(name, body.ttl_s)
    return ChannelGrantPublic(channel=grant.channel, expires=grant.expires,
                              watch_url=grant.watch_url, master_url=grant.master_url,
                              cookies=grant.cookies, cookie_path=grant.cookie_path)


@channels.post("/{name}/keys", response_model=StreamKeyCreated, status_code=201,
               summary="Add a stream key (shown once); existing keys stay valid")
async def add_key(name: ChannelPath, ctx: Ctx) -> StreamKeyCreated:
    await _get_channel(ctx, name)
    return await _new_key(ctx, name, rotate=False)


@channels.post("/{name}/keys/rotate", response_model=StreamKeyCreated, status_code=201,
               summary="Revoke every key of the channel and create a new one (shown once)")
async def rotate_key(name: ChannelPath, ctx: Ctx) -> StreamKeyCreated:
    await _get_channel(ctx, name)
    return await _new_key(ctx, name, rotate=True)


@channels.delete("/{name}/keys", response_model=KeysRevoked,
                 summary="Revoke every key of the channel")
async def revoke_keys(name: ChannelPath, ctx: Ctx) -> KeysRevoked:
    await _get_channel(ctx, name)
    revoked = await asyncio.to_thread(ctx.catalog.revoke_stream_keys, name)
    return KeysRevoked(channel=name, revoked=revoked)


@broadcasts.get("", response_model=list[BroadcastPublic], summary="List broadcasts")
async def list_broadcasts(
        ctx: Ctx,
        state: Annotated[Literal["live", "ended"] | None, Query()] = None,
        channel: Annotated[str | None, Query(pattern=CHANNEL_NAME_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[BroadcastPublic]:
    live = [b for b in await ctx.live.list_broadcasts()
            if b.state is BroadcastState.LIVE and (channel is None or b.channel == channel)]
    live.sort(key=lambda b: b.started_at, reverse=True)
    result = [BroadcastPublic.of(b, await ctx.live.get_stats(b.id)) for b in live[:limit]]
    if state == "live":
        return result
    ended_state = BroadcastState.ENDED if state == "ended" else None
    history = await asyncio.to_thread(lambda: ctx.catalog.list_broadcasts(
        channel=channel, state=ended_state, limit=limit))
    if state == "ended":
        return [BroadcastPublic.of(b) for b in history]
    seen = {b.id for b in live}
    result += [BroadcastPublic.of(b) for b in history if b.id not in seen]
    result.sort(key=lambda b: b.started_at, reverse=True)
    return result[:limit]


@broadcasts.get("/{broadcast_id}", response_model=BroadcastPublic, summary="One broadcast")
async def get_broadcast(broadcast_id: IdPath, ctx: Ctx) -> BroadcastPublic:
    live = await ctx.live.get_broadcast(broadcast_id)
    if live is not None:
        return BroadcastPublic.of(live, await ctx.live.get_stats(broadcast_id))
    stored = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
    if stored is None:
        raise HTTPException(404, f"no broadcast {broadcast_id}")
    return BroadcastPublic.of(stored)


@broadcasts.post("/{broadcast_id}/stop", response_model=StopRequested, status_code=202,
                 summary="End a live broadcast now",
                 responses={503: {"model": ErrorBody}},
                 description="Its ingest node disconnects the publisher and ends the "
                             "broadcast without waiting for a reconnect; its VOD is made "
                             "as for any end. A publisher that reconnects by itself starts "
                             "a new broadcast: revoke its key to keep it off.")
async def stop_broadcast(broadcast_id: IdPath, ctx: Ctx) -> StopRequested:
    broadcast = await ctx.live.get_broadcast(broadcast_id)
    if broadcast is None:  # the live state may have lost it (its node puts it back)
        broadcast = await asyncio.to_thread(ctx.catalog.get_broadcast, broadcast_id)
    if broadcast is None:
        raise HTTPException(404, f"no broadcast {broadcast_id}")
    if broadcast.state is not BroadcastState.LIVE:
        raise HTTPException(409, f"broadcast {broadcast_id} is not live "
                                 f"({broadcast.state.value})")
    # To the node running it, which is listening if it is alive (none: say so rather
    # than answer 202 for a stop nobody will carry out).
    heard = await ctx.live.publish(node_commands_topic(broadcast.node_id),
                                   StopBroadcast(broadcast_id))
    fields = {"broadcast_id": broadcast_id, "channel": broadcast.channel,
              "node": broadcast.node_id}
    if not heard:
        logger.warning("broadcast stop not delivered: its node is not listening",
                       extra=fields)
        raise HTTPException(503, f"ingest node {broadcast.node_id} of broadcast "
                                 f"{broadcast_id} is not answering; try again")
    logger.info("broadcast stop requested", extra=fields)
    return StopRequested(broadcast_id=broadcast_id)


@broadcasts.post("/{broadcast_id}/clips", response_model=VodPublic, status_code=201,
                 summary="Clip a broadcast: a new VOD over a range of its segments",
                 responses={503: {"model": ErrorBody}, 504: {"model": ErrorBody}},
                 description="The last `last_s` seconds of a live broadcast (or of an "
                             "ended one's VOD), or `start_s` to `end_s` from its start, "
                             "cut at segment boundaries: a VOD with its own id and "
                             "playlists over the same stored segments (nothing copied), "
                             "playable when this returns. It takes the source's access "
                             "rule (private when the source's VOD is, or its channel "
                             "is private).")
async def create_clip(broadcast_id: IdPath, body: ClipCreate, ctx: Ctx) -> VodPublic:
    clip_id = new_id()
    request = ClipRequested(clip_id, broadcast_id, last_s=body.last_s,
                            start_s=body.start_s, end_s=body.end_s)
    fields = {"broadcast_id": broadcast_id, "clip_id": clip_id}
    # Subscribed before asking: the answer may come back within a millisecond.
    answers = await ctx.live.subscribe(clip_topic(clip_id))
    try:
        if not await ctx.live.publish(ARCHIVE_REQUESTS_TOPIC, request):
            logger.warning("clip request not delivered: no archiver is listening",
                           extra=fields)
            raise HTTPException(503, "no archiver is answering; try again")
        try:
            async with asyncio.timeout(CLIP_WAIT_S):
                answer = await answers.get()
        except (TimeoutError, LiveStateError):
            raise HTTPException(504, "the archiver did not answer in time") from None
    finally:
        await answers.close()
    if not isinstance(answer, ClipReady):
        raise HTTPException(404 if answer.not_found else 409, answer.reason)
    logger.info("clip made", extra=fields)
    return await _get_vod(ctx, clip_id)


@vods.get("", response_model=list[VodPublic], summary="List VODs")
async def list_vods(
        ctx: Ctx,
        channel: Annotated[str | None, Query(pattern=CHANNEL_NAME_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[VodPublic]:
    found = await asyncio.to_thread(lambda: ctx.catalog.list_vods(channel=channel,
                                                                  limit=limit))
    return [VodPublic.of(v, base_url=_base(ctx)) for v in found
            if v.state is not VodState.DELETED]


async def _get_vod(ctx: OriginContext, vod_id: str) -> VodPublic:
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise HTTPException(404, f"no VOD {vod_id}")
    return VodPublic.of(vod, base_url=_base(ctx))


@vods.get("/{vod_id}", response_model=VodPublic, summary="One VOD")
async def get_vod(vod_id: IdPath, ctx: Ctx) -> VodPublic:
    return await _get_vod(ctx, vod_id)


@vods.patch("/{vod_id}", response_model=VodPublic, summary="Set a VOD's visibility")
async def update_vod(vod_id: IdPath, body: VodUpdate, ctx: Ctx) -> VodPublic:
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise HTTPException(404, f"no VOD {vod_id}")
    vod = replace(vod, visibility=body.visibility)
    await asyncio.to_thread(ctx.catalog.save_vod, vod)
    return VodPublic.of(vod, base_url=_base(ctx))


@vods.post("/{vod_id}/grant", response_model=VodGrantPublic, status_code=201,
           summary="Signed access to a VOD (for private ones), shown once")
async def grant_vod(vod_id: IdPath, body: VodGrantCreate, ctx: Ctx) -> VodGrantPublic:
    await _get_vod(ctx, vod_id)
    if not ctx.access.enabled:
        raise HTTPException(409, "signed access needs an RSA signing key "
                            "(CASTWAY_SIGNING_KEY, PEM)")
    grant = ctx.access.grant(vod_id, body.ttl_s)
    return VodGrantPublic(vod_id=grant.vod_id, expires=grant.expires,
                          watch_url=grant.watch_url, master_url=grant.master_url,
                          cookies=grant.cookies, cookie_path=grant.cookie_path)


@vods.post("/{vod_id}/export", response_model=VodPublic, status_code=202,
           summary="Export the VOD as one MP4 (progress and mp4_url on the VOD)",
           responses={200: {"model": VodPublic}, 503: {"model": ErrorBody}},
           description="202: the archiver has the request (repeat requests while it runs "
                       "are the same export: one per VOD at a time); follow "
                       "`mp4_progress` with GET, and download `mp4_url` once set. "
                       "200: already exported. 503: no archiver is listening.")
async def export_vod(vod_id: IdPath, ctx: Ctx, response: Response) -> VodPublic:
    found = await _get_vod(ctx, vod_id)
    if found.mp4_url is not None:
        response.status_code = 200
        return found
    heard = await ctx.live.publish(ARCHIVE_REQUESTS_TOPIC, ExportRequested(vod_id))
    if not heard:
        logger.warning("export request not delivered: no archiver is listening",
                       extra={"vod_id": vod_id})
        raise HTTPException(503, "no archiver is answering; try again")
    logger.info("VOD export requested", extra={"vod_id": vod_id, "archivers": heard})
    return found


@vods.delete("/{vod_id}", response_model=VodDeleted,
             summary="Delete a VOD: its catalog record and every stored object")
async def delete_vod(vod_id: IdPath, ctx: Ctx) -> VodDeleted:
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None:
        raise HTTPException(404, f"no VOD {vod_id}")
    # Storage first: a failure leaves the record, so the delete can be retried. A clip's
    # own objects only (its playlists, its export): its media is its source's.
    deleted = await ctx.storage_pool.run(ctx.storage.delete_prefix,
                                      broadcast_prefix(vod.id))
    await asyncio.to_thread(ctx.catalog.delete_vod, vod_id)
    logger.info("VOD deleted", extra={"vod_id": vod_id, "objects": deleted})
    try:
        await ctx.live.publish(VODS_TOPIC, VodDeletedEvent(vod.id, vod.broadcast_id,
                                                           vod.channel, "api"))
    except LiveStateError as e:  # deleted all the same: only its webhook is lost
        logger.warning("VOD deletion not announced", extra={"vod_id": vod_id,
                                                            "error": str(e)})
    return VodDeleted(id=vod_id, objects_deleted=deleted)


@nodes.get("", response_model=list[NodePublic], summary="Ingest nodes and their state")
async def list_nodes(ctx: Ctx) -> list[NodePublic]:
    return [NodePublic.of(n) for n in await ctx.live.list_nodes()]


ROUTERS = (channels, broadcasts, vods, nodes)
