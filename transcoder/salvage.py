"""Salvage: the segments a node's previous run had not made durable, made at its next
start from the source journals it left (:mod:`transcoder.journal`).

Design: docs/transcoder.md, "The source journal and the salvage".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from castway.catalog.base import Catalog, SegmentRecord
from castway.layout import init_generation, init_key, segment_key
from castway.model import BroadcastState, Segment, VodState
from castway.settings import SegmentFormat, Settings
from castway.storage.base import Storage
from transcoder.journal import SUFFIX, JournalCorrupt, journal_dir, read_journal
from transcoder.ladder import SOURCE
from transcoder.packager import InitOut, Output, SegmentOut
from transcoder.pipeline import AUDIO_RENDITION, Pipeline, PipelineError
from transcoder.replay import Break
from transcoder.supervisor import pipeline_config

logger = logging.getLogger(__name__)

WORKING = ".salvaging"
FAILED = ".failed"


@dataclass(frozen=True, slots=True)
class Salvaged:
    """What the salvage of one journal did."""

    broadcast_id: str
    made: int  # segments stored and recorded
    already_durable: int
    error: str | None = None


@dataclass(slots=True)
class _Made:
    """One rendition's outputs from the journal, in order."""

    segments: list[tuple[SegmentOut, bytes | None, bool]] = field(default_factory=list)
    init: bytes | None = None
    pending_break: bool = False


def salvage_journals(settings: Settings, catalog: Catalog, storage: Storage) -> list[Salvaged]:
    """Salvage every journal in the data directory (see the module's doc)."""
    results = []
    directory = journal_dir(settings.data_dir)
    for stuck in sorted(directory.glob(f"*{SUFFIX}{WORKING}")):
        logger.error("a source journal's salvage did not finish (the process died during "
                     "it): kept as *.failed", extra={"path": str(stuck)})
        with contextlib.suppress(OSError):
            stuck.rename(stuck.with_name(stuck.name.removesuffix(WORKING) + FAILED))
    for journal in sorted(directory.glob(f"*{SUFFIX}")):
        path = journal.with_name(journal.name + WORKING)
        journal.rename(path)
        try:
            result = _salvage(path, settings, catalog, storage)
        except (JournalCorrupt, PipelineError, OSError, ValueError) as e:
            logger.error("source journal could not be salvaged: kept as *.failed",
                         extra={"path": str(path), "error": str(e)})
            with contextlib.suppress(OSError):
                path.rename(journal.with_name(journal.name + FAILED))
            results.append(Salvaged(journal.name.removesuffix(SUFFIX), 0, 0, str(e)))
            continue
        if result is not None:
            results.append(result)
            if result.made:
                logger.info("salvaged the segments a crash had not made durable",
                            extra={"broadcast_id": result.broadcast_id,
                                   "segments": result.made,
                                   "already_durable": result.already_durable})
        path.unlink(missing_ok=True)
    return results


def _salvage(path: Path, settings: Settings, catalog: Catalog,
             storage: Storage) -> Salvaged | None:
    header, items = read_journal(path)
    broadcast_id = header.broadcast_id
    broadcast = catalog.get_broadcast(broadcast_id)
    if broadcast is None:
        return None
    if broadcast.state is BroadcastState.LIVE and broadcast.node_id != settings.node_id \
            and settings.node_id is not None:
        return None  # it goes on on another node, which has its own journal
    vod = catalog.get_vod(broadcast_id)
    if vod is not None and vod.state is VodState.COMPLETE:
        return None
    renditions = {r.name for r in broadcast.renditions} | set(header.msn)
    config = replace(pipeline_config(settings, broadcast), realtime=False,
                     keep_rungs=tuple(sorted(renditions - {SOURCE, AUDIO_RENDITION}))
                     if renditions else None,
                     replay_from_pts_ms=header.replay_from_pts_ms)
    made: dict[str, _Made] = {}

    def emit(out: Output) -> None:
        entry = made.setdefault(out.rendition, _Made())
        if isinstance(out, InitOut):
            entry.init = out.data
        elif isinstance(out, SegmentOut):
            entry.segments.append((out, entry.init, entry.pending_break))
            entry.pending_break = False

    def on_break() -> None:
        for entry in made.values():
            entry.pending_break = True

    pipeline = Pipeline(config, emit, on_discontinuity=on_break)
    for item in items:
        if isinstance(item, Break):
            pipeline.discontinuity()
        else:
            pipeline.push(item)
    pipeline.finish()

    recorded = catalog.segment_records(broadcast_id)
    records: list[SegmentRecord] = []
    already = 0
    ext = "m4s" if settings.segment_format == SegmentFormat.FMP4 else "ts"
    for name, entry in made.items():
        if name not in renditions:
            continue  # a rung this run's settings add: not in the broadcast's master
        known = {s.msn: s for s in recorded.get(name, [])}
        first = header.msn.get(name, header.default_msn)
        inits = _Inits(storage, broadcast_id, name, known.values())
        for k, (out, init, after_break) in enumerate(entry.segments):
            msn = first + k
            if msn in known:
                already += 1
                continue
            previous = max((s for s in known.values() if s.msn < msn),
                           key=lambda s: s.msn, default=None)
            key = segment_key(broadcast_id, name, msn, ext)
            storage.put(key, out.data)
            segment = Segment(
                msn=msn, duration_s=out.duration_s, key=key, start_pts_s=out.start_pts_s,
                program_date_time=(previous.program_date_time
                                   + timedelta(seconds=previous.duration_s))
                if previous is not None else broadcast.started_at,
                discontinuity=after_break,
                discontinuity_seq=(previous.discontinuity_seq if previous else 0)
                + (1 if after_break else 0),
                init_key=inits.key_for(init), size=len(out.data))
            known[msn] = segment
            records.append(SegmentRecord(broadcast_id, name, segment))
    catalog.record_segments(records)
    return Salvaged(broadcast_id, len(records), already)


class _Inits:
    """The init segment a salvaged segment names: the one before it when the bytes are
    the same (the same encoder settings make the same parameter sets), else a new
    generation (an init key a CDN may have cached is never rewritten)."""

    def __init__(self, storage: Storage, broadcast_id: str, rendition: str,
                 segments: Iterable[Segment]) -> None:
        self.storage = storage
        self.broadcast_id = broadcast_id
        self.rendition = rendition
        keys = sorted({s.init_key for s in segments if s.init_key is not None},
                      key=lambda k: init_generation(k) or 0)
        self._by_bytes: dict[bytes, str] = {}
        for key in keys:
            data = storage.get(key)
            if data is not None:
                self._by_bytes.setdefault(data, key)
        self._next = 1 + max([-1, *(init_generation(k) or 0 for k in keys)])

    def key_for(self, data: bytes | None) -> str | None:
        if data is None:
            return None  # MPEG-TS: no init segment
        key = self._by_bytes.get(data)
        if key is None:
            key = init_key(self.broadcast_id, self.rendition, self._next)
            self._next += 1
            self.storage.put(key, data)
            self._by_bytes[data] = key
        return key
