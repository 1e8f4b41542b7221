"""MP4 export: remux (no re-encode) a VOD's source rendition into one fast-start MP4."""

from __future__ import annotations

import asyncio
import heapq
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import av

from archiver.context import ArchiveContext, VodNotFound
from archiver.stored_vod import MediaRef, read_main_audio, read_rendition, require_object
from archiver.vod import source_rendition
from castway import layout
from castway.model import Vod, VodState
from castway.storage.base import IMMUTABLE, Storage

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5


def _groups(refs: Sequence[MediaRef]) -> list[list[MediaRef]]:
    """Runs of segments that concatenate into one stream (same init, no discontinuity)."""
    groups: list[list[MediaRef]] = []
    for ref in refs:
        if not groups or ref.discontinuity or ref.init_key != groups[-1][-1].init_key:
            groups.append([])
        groups[-1].append(ref)
    return groups


def _rendition_packets(storage: Storage, refs: Sequence[MediaRef], workdir: Path,
                       tag: str, out: Any, out_streams: dict[str, Any],
                       done: Callable[[int], None]) -> Iterator[tuple[float, Any]]:
    """One rendition's packets, each mapped to its output stream (added on first sight)
    and shifted so that each group continues where the rendition's previous group ended,
    the first at 0 (a broadcast's timestamps start where its encoder's clock was, and
    players count that lead-in as duration); with each packet's DTS in seconds."""
    offset_s = end_s = 0.0
    for group in _groups(refs):
        concat = workdir / f"group-{tag}.bin"
        with concat.open("wb") as f:
            if group[0].init_key is not None:
                f.write(require_object(storage, group[0].init_key))
            for ref in group:
                f.write(require_object(storage, ref.key))
        with av.open(str(concat), "r") as src:
            mapping: dict[int, Any] = {}
            for stream in src.streams:
                if stream.type not in ("video", "audio"):
                    continue
                if stream.type not in out_streams:
                    out_streams[stream.type] = out.add_stream_from_template(stream)
                mapping[stream.index] = out_streams[stream.type]
            starts = [float(s.start_time * s.time_base) for s in src.streams
                      if s.index in mapping and s.start_time is not None
                      and s.time_base is not None]
            group_start = min(starts, default=0.0)
            for packet in src.demux(*[s for s in src.streams if s.index in mapping]):
                if packet.dts is None or packet.size == 0 or packet.time_base is None:
                    continue
                tb = packet.time_base
                shift = round((offset_s - group_start) / tb)
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                    end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * tb))
                packet.stream = mapping[packet.stream.index]
                yield float(packet.dts * tb), packet
        concat.unlink()
        done(len(group))
        offset_s = end_s


def remux_to_mp4(storage: Storage, refs: Sequence[MediaRef], out_path: Path, workdir: Path,
                 progress: Callable[[float], None] | None = None, *,
                 audio: Sequence[MediaRef] = ()) -> float:
    """Concatenate the segments (per init/discontinuity group) and remux every packet,
    unchanged, into one MP4 with the moov atom first (``movflags=+faststart``). Timestamps
    of each group continue where the previous group ended. ``audio``: the segments of an
    audio rendition to take the audio from (a broadcast with audio renditions has video
    only variants), interleaved with ``refs``' by time. Returns the media duration."""
    total = max(1, len(refs) + len(audio))
    done = [0]
    end_s = [0.0]

    def count(segments: int) -> None:
        done[0] += segments
        if progress is not None:
            progress(min(0.99, done[0] / total))
    out = av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        out_streams: dict[str, Any] = {}
        inputs = [_rendition_packets(storage, refs, workdir, "v", out, out_streams, count)]
        if audio:
            inputs.append(_rendition_packets(storage, audio, workdir, "a", out, out_streams,
                                             count))
        # heapq.merge takes each input's first packet before yielding any, so every
        # output stream exists before the first is written (the MP4 header).
        for _, packet in heapq.merge(*inputs, key=lambda item: item[0]):
            tb = packet.time_base
            if packet.pts is not None:
                end_s[0] = max(end_s[0], float((packet.pts + (packet.duration or 0)) * tb))
            out.mux(packet)
    finally:
        out.close()
    return end_s[0]


async def export_mp4(ctx: ArchiveContext, vod_id: str, *,
                     workdir: Path | None = None) -> Vod:
    """Remux the VOD's source rendition into ``broadcasts/{id}/export.mp4``; progress
    (0..1) is saved on the VOD in the catalog as it goes."""
    vod = await asyncio.to_thread(ctx.catalog.get_vod, vod_id)
    if vod is None or vod.state is VodState.DELETED:
        raise VodNotFound(f"no VOD {vod_id}")
    name, refs = await read_rendition(ctx, vod.broadcast_id, source_rendition,
                                      vod_id=vod.id)
    audio = await read_main_audio(ctx, vod.broadcast_id, vod_id=vod.id)
    key = layout.export_key(vod.id)  # a clip's own, not its source's

    last_save = [0.0]

    def progress(value: float) -> None:
        now = time.monotonic()
        if now - last_save[0] < PROGRESS_EVERY_S:
            return
        last_save[0] = now
        current = ctx.catalog.get_vod(vod_id)
        if current is not None:
            ctx.catalog.save_vod(replace(current, mp4_progress=value))

    def run() -> float:
        progress(0.0)
        tmp = Path(tempfile.mkdtemp(prefix="castway-export-", dir=workdir))
        try:
            out = tmp / "export.mp4"
            duration = remux_to_mp4(ctx.storage, refs, out, tmp, progress, audio=audio)
            ctx.storage.put_file(key, out, content_type="video/mp4", cache_control=IMMUTABLE)
            return duration
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    started = time.monotonic()
    duration = await asyncio.to_thread(run)
    elapsed = time.monotonic() - started
    current = await asyncio.to_thread(ctx.catalog.get_vod, vod_id) or vod
    vod = replace(current, mp4_key=key, mp4_progress=1.0)
    await asyncio.to_thread(ctx.catalog.save_vod, vod)
    logger.info("MP4 exported", extra={"vod_id": vod_id, "rendition": name,
                                       "duration_s": round(duration, 3),
                                       "seconds": round(elapsed, 3),
                                       "x_realtime": round(duration / max(elapsed, 1e-6), 1)})
    return vod
