"""The control API of restream targets under /api/v1/channels/{name}/restreams: a
channel's targets (added, listed, removed). The stream key is sealed before it is stored
(:mod:`castway.restream.sealing`) and never shown again: lists show its mask. While the
channel is live, each target's state and bitrate come from the broadcast's stats (the
ingest node running it writes them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from castway.catalog.base import NotFound
from castway.layout import COMPONENT_PATTERN
from castway.model import new_id
from castway.restream.sealing import KeySealer, SealError, load_restream_key
from castway.restream.targets import (
    MAX_KEY,
    MAX_URL,
    InvalidTarget,
    RestreamTarget,
    mask_key,
    parse_target,
)
from origin.api import ChannelPath, require_admin
from origin.context import Ctx
from origin.schemas import ErrorBody

logger = logging.getLogger(__name__)

STATS_PREFIX = "restream."


class RestreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL, description="rtmp:// or rtmps:// URL of the "
                     "service; its last path element is the stream key unless ``key`` is "
                     "given (rtmp://a.rtmp.youtube.com/live2/KEY).")
    key: str | None = Field(None, max_length=MAX_KEY, description="The stream key, when "
                            "the URL does not end with it.")


class RestreamPublic(BaseModel):
    id: str
    channel: str
    url: str = Field(description="The target's URL with its key masked.")
    created_at: str
    state: str | None = Field(None, description="While the channel is live: waiting, "
                              "connecting, live, retrying, refused or stopped.")
    bitrate_kbps: float | None = None
    dropped: float | None = Field(None, description="Packets lost by falling behind "
                                  "(whole GOPs).")
    failures: float | None = Field(None, description="Consecutive failed connections.")
    error: str | None = Field(None, description="Why the last connection failed.")

    @classmethod
    def of(cls, target: RestreamTarget,
           stats: dict[str, float | str] | None = None) -> RestreamPublic:
        key = f"{STATS_PREFIX}{target.id}."
        found = {name[len(key):]: value for name, value in (stats or {}).items()
                 if name.startswith(key)}

        def number(name: str) -> float | None:
            value = found.get(name)
            return float(value) if isinstance(value, int | float) else None

        state, error = found.get("state"), found.get("error")
        return cls(id=target.id, channel=target.channel, url=target.display_url,
                   created_at=target.created_at.isoformat(),
                   state=state if isinstance(state, str) else None,
                   bitrate_kbps=number("bitrate_kbps"), dropped=number("dropped"),
                   failures=number("failures"),
                   error=error if isinstance(error, str) and error else None)


TargetPath = Annotated[str, Path(pattern=COMPONENT_PATTERN)]

router = APIRouter(prefix="/api/v1/channels/{name}/restreams", tags=["restreams"],
                   dependencies=[Depends(require_admin)],
                   responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody},
                              422: {"model": ErrorBody}})


async def _check_channel(ctx: Ctx, name: str) -> None:
    if await asyncio.to_thread(ctx.catalog.get_channel, name) is None:
        raise HTTPException(404, f"no channel {name}")


def _sealer(ctx: Ctx) -> KeySealer:
    settings = ctx.settings
    try:
        return KeySealer(load_restream_key(settings.data_dir, settings.restream_key))
    except SealError as e:
        raise HTTPException(503, str(e)) from None


@router.post("", response_model=RestreamPublic, status_code=201,
             summary="Add a restream target (its key is stored encrypted, never shown again)")
async def add_restream(name: ChannelPath, body: RestreamCreate, ctx: Ctx) -> RestreamPublic:
    await _check_channel(ctx, name)
    try:
        address = parse_target(body.url, body.key)
    except InvalidTarget as e:
        raise HTTPException(422, str(e)) from None
    sealer = await asyncio.to_thread(_sealer, ctx)
    target = RestreamTarget(id=new_id(), channel=name, url=address.tc_url,
                            sealed_key=sealer.seal(address.key),
                            key_mask=mask_key(address.key))
    try:
        await asyncio.to_thread(ctx.catalog.add_restream_target, target)
    except NotFound:
        raise HTTPException(404, f"no channel {name}") from None
    logger.info("restream target added", extra={"channel": name, "target": target.id,
                                                "target_url": target.url})
    return RestreamPublic.of(target)


@router.get("", response_model=list[RestreamPublic],
            summary="A channel's restream targets (keys masked; state while live)")
async def list_restreams(name: ChannelPath, ctx: Ctx) -> list[RestreamPublic]:
    await _check_channel(ctx, name)
    targets = await asyncio.to_thread(ctx.catalog.list_restream_targets, name)
    live = await ctx.live.live_broadcast(name)
    stats = await ctx.live.get_stats(live.id) if live is not None else None
    return [RestreamPublic.of(t, stats) for t in targets]


@router.delete("/{target_id}", status_code=204,
               summary="Remove a restream target (a live broadcast keeps it until it ends)")
async def delete_restream(name: ChannelPath, target_id: TargetPath, ctx: Ctx) -> None:
    try:
        await asyncio.to_thread(ctx.catalog.delete_restream_target, name, target_id)
    except NotFound:
        raise HTTPException(404, f"no restream target {target_id} on channel {name}") \
            from None
    logger.info("restream target removed", extra={"channel": name, "target": target_id})
