"""The parent-side sink of one broadcast (:class:`BroadcastSink`): the transcoder child's
outputs into the live state and storage, media first, playlist after.

Design: docs/transcoder.md, "Playlists and the live state".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from castway.catalog.recorder import SegmentRecorder
from castway.events.media import MediaUpdate, media_topic
from castway.hls.timing import DateAnchor
from castway.layout import broadcast_dir
from castway.live.base import LiveState, LiveStateError
from castway.model import Part, Rendition, Segment
from castway.settings import SegmentFormat, Settings
from transcoder.packager import InitOut, Output, PartOut, SegmentOut
from transcoder.pipeline import RenditionInfo
from transcoder.window import RenditionLog

logger = logging.getLogger(__name__)

# Live media outlives the window by this factor (players finishing a download, DVR
# readers falling back to storage).
MEDIA_TTL_FACTOR = 3.0
MIN_MEDIA_TTL_S = 60.0

class Put(Protocol):
    """Accept bytes for storage; ``on_durable`` is called once they would survive this
    process (:meth:`castway.storage.uploader.Uploader.put`)."""

    def __call__(self, key: str, data: bytes, *,
                 on_durable: Callable[[], None] | None = None) -> Awaitable[None]: ...


class BroadcastSink:
    def __init__(self, broadcast_id: str, settings: Settings, live: LiveState,
                 put_storage: Put, *, now: Callable[[], datetime] | None = None,
                 on_segment_latency: Callable[[float], None] | None = None,
                 recorder: SegmentRecorder | None = None) -> None:
        self.broadcast_id = broadcast_id
        self.recorder = recorder
        self.settings = settings
        self.live = live
        self.put_storage = put_storage
        self.prefix = broadcast_dir(broadcast_id)
        self._now = now or (lambda: datetime.now(UTC))
        self._parts = settings.segment_format == SegmentFormat.FMP4
        self._ext = "m4s" if self._parts else "ts"
        self.logs: dict[str, RenditionLog] = {}
        self.infos: dict[str, RenditionInfo] = {}
        self._open_parts: dict[str, list[bytes]] = {}
        self._published_bandwidth: dict[str, int] = {}
        self.media_ttl_s = max(MIN_MEDIA_TTL_S, MEDIA_TTL_FACTOR * settings.target_segment_s
                               * (settings.live_window_segments + 1))
        self.segments = 0
        self._dates = DateAnchor()  # one for every rendition: the same instant, one date
        # Ingest arrival of the broadcast's first keyframe: the wall clock of the first
        # segment's start (glass time). After a break the child restarts at a keyframe
        # that arrived earlier than the sink learns of the break, so breaks re-anchor by
        # the first segment's duration instead.
        self._keyframe_arrival: datetime | None = None
        self._anchored_once = False
        self._on_segment_latency = on_segment_latency
        self._live_down = False
        # Renditions overload stopped (transcoder.overload): their windows have ended.
        self.stopped: set[str] = set()

    def next_msn(self, rendition: str) -> int:
        """The media sequence number the rendition's next segment gets."""
        return self._log(rendition).next_msn

    def _new_log(self, rendition: str) -> RenditionLog:
        return RenditionLog(self.prefix, rendition, ext=self._ext,
                            window_segments=self.settings.live_window_segments,
                            target_segment_s=self.settings.target_segment_s,
                            part_target_s=self.settings.part_target_s, parts=self._parts)

    def _log(self, rendition: str) -> RenditionLog:
        log = self.logs.get(rendition)
        if log is None:
            log = self._new_log(rendition)
            self.logs[rendition] = log
            # A rendition that appears after a restart or reconnect starts after a break
            # if others already have segments: numbering and discontinuity sequence
            # start with theirs, so the variants stay aligned.
            others = [other for other in self.logs.values() if other is not log]
            if others:
                log.join(max(others, key=lambda o: (o.next_msn, o.discontinuity_count)))
        return log

    async def on_output(self, out: Output, *,
                        on_durable: Callable[[], None] | None = None) -> None:
        """One output of the child; ``on_durable`` is called once a segment's bytes would
        survive this process."""
        if out.rendition in self.stopped:
            # A successor child, or one that went on after a break, would restart it:
            # its playlist has ended and players have moved off it.
            return
        log = self._log(out.rendition)
        if isinstance(out, InitOut):
            key, new = log.set_init(out.data)
            if new:
                await self.put_storage(key, out.data)
                with self._live_best_effort():
                    await self.live.put_media(key, out.data, self.media_ttl_s)
            return
        if isinstance(out, PartOut):
            first = log.next_msn == 0 and not log.open_parts and not log.peak_bps
            part = log.add_part(out.index, out.duration_s, out.independent, len(out.data))
            self._open_parts.setdefault(out.rendition, []).append(out.data)
            with self._live_best_effort():
                await self.live.put_media(part.key, out.data, self.media_ttl_s)
                info = self.infos.get(out.rendition)
                if first and info is not None and info.video_bitrate_kbps is None:
                    # A passthrough's first part: its bit rate is in the broadcast before
                    # the window that may complete the ladder (origin.hls serves the
                    # master from then on), so the first master has a measured
                    # BANDWIDTH for it rather than a placeholder.
                    await self._update_broadcast()
                await self._publish_window(out.rendition, log, part.msn, part.index)
            return
        assert isinstance(out, SegmentOut)
        self._open_parts.pop(out.rendition, None)
        await self._segment(out.rendition, log, out.duration_s, out.start_pts_s, out.data,
                            on_durable)

    async def _segment(self, rendition: str, log: RenditionLog, duration_s: float,
                       start_pts_s: float, data: bytes,
                       on_durable: Callable[[], None] | None = None) -> None:
        segment = log.add_segment(duration_s, start_pts_s, len(data),
                                  self._wall_clock_at(start_pts_s, duration_s))
        record = self._record_when_durable(rendition, segment)

        def durable() -> None:
            if record is not None:
                record()
            if on_durable is not None:
                on_durable()

        # Storage (and through it the durable record) first: the live state may be down
        # (Redis restarting), and the archive must not lose what viewers could not see.
        await self.put_storage(segment.key, data, on_durable=durable)
        self.segments += 1
        with self._live_best_effort():
            await self.live.put_media(segment.key, data, self.media_ttl_s)
            await self.live.append_segment_log(self.broadcast_id, rendition, segment)
            await self._publish_window(rendition, log, segment.msn, None)
            if self._on_segment_latency is not None:
                end = segment.program_date_time + timedelta(seconds=duration_s)
                self._on_segment_latency(max(0.0, (self._now() - end).total_seconds()))
            await self._maybe_update_broadcast(rendition, log)

    @contextlib.contextmanager
    def _live_best_effort(self) -> Iterator[None]:
        """The live state is a cache of what storage and the catalog keep: while it fails,
        live viewers miss updates (the next window written brings them back), nothing
        else. Logged once per outage."""
        try:
            yield
        except LiveStateError as e:
            if not self._live_down:
                self._live_down = True
                logger.warning("live state unavailable: media goes on to storage only",
                               extra={"broadcast_id": self.broadcast_id, "error": str(e)})
            return
        if self._live_down:
            self._live_down = False
            logger.info("live state available again", extra={"broadcast_id": self.broadcast_id})

    def _record_when_durable(self, rendition: str,
                             segment: Segment) -> Callable[[], None] | None:
        """The durable segment log names only bytes that outlive this process, so a VOD
        made after a crash never waits for a segment that was lost with it."""
        recorder = self.recorder
        if recorder is None:
            return None
        return lambda: recorder.record(self.broadcast_id, rendition, segment)

    def note_keyframe_arrival(self) -> None:
        """Ingest handed over a keyframe now: the first one is where the broadcast's
        first segment starts."""
        if not self._anchored_once and self._keyframe_arrival is None:
            self._keyframe_arrival = self._now()

    def _wall_clock_at(self, start_pts_s: float, duration_s: float) -> datetime:
        """EXT-X-PROGRAM-DATE-TIME of a segment starting at ``start_pts_s``: one anchor
        for every rendition (so the same instant has the same date in all of them), set
        by the first segment after a start or a break at the ingest arrival of its first
        keyframe (else: its start was ``duration_s`` ago)."""
        if not self._dates.anchored:
            self._dates.anchor(start_pts_s, self._keyframe_arrival
                               or self._now() - timedelta(seconds=duration_s))
            self._keyframe_arrival = None
            self._anchored_once = True
        return self._dates.date(start_pts_s)

    async def _publish_window(self, rendition: str, log: RenditionLog, msn: int,
                              part: int | None) -> None:
        await self.live.put_window(self.broadcast_id, rendition, log.window())
        await self.live.publish(media_topic(self.broadcast_id),
                                MediaUpdate(rendition, msn, part))

    async def on_ladder(self, ladder: Sequence[RenditionInfo]) -> None:
        """The ladder, whole (:class:`transcoder.pipeline.Pipeline` announces it at
        once): the broadcast's renditions are written in one update, so the origin never
        sees part of it."""
        for info in ladder:
            if info.name in self.stopped:
                continue
            self.infos[info.name] = info
            self._log(info.name)
        await self._update_broadcast()

    async def _maybe_update_broadcast(self, rendition: str, log: RenditionLog) -> None:
        # Bandwidth in the master playlist: update when the measured peak moves by 10%.
        previous = self._published_bandwidth.get(rendition, 0)
        if log.peak_bps > previous * 1.1:
            self._published_bandwidth[rendition] = log.peak_bps
            await self._update_broadcast()

    def renditions(self) -> tuple[Rendition, ...]:
        return tuple(self.logs[name].as_rendition(info) for name, info in self.infos.items())

    async def _update_broadcast(self) -> None:
        # Atomic: ingest updates the same broadcast (source info, its end) concurrently.
        renditions = self.renditions()
        await self.live.update_broadcast(self.broadcast_id, renditions=renditions)
        if self.recorder is not None:
            self.recorder.record_renditions(self.broadcast_id, renditions)

    async def discontinuity(self) -> None:
        """The child flushed for a publisher reconnect: the next segments follow a break."""
        for log in self.logs.values():
            log.mark_discontinuity()
        self._dates.release()

    async def continue_from_live(self, renditions: Sequence[Rendition]) -> None:
        """This node takes over a live broadcast from another one (a handover): every
        rendition with a live window goes on from it (:meth:`RenditionLog.continue_from`)
        after a discontinuity, and the master playlist keeps its renditions until this
        node's transcoder announces its own.

        A node that handed over closed its segment in progress itself; one that died
        left its parts in the window: that segment is closed here from them (their bytes
        are in the live state), so what players were shown of it stays, under the same
        sequence number. Parts whose bytes are gone are dropped, as before."""
        for rendition in renditions:
            window = await self.live.get_window(self.broadcast_id, rendition.name)
            if window is None:
                continue
            log = self._new_log(rendition.name)
            log.continue_from(window, peak_bps=rendition.bandwidth_bps or 0,
                              average_bps=rendition.average_bandwidth_bps or 0)
            self.logs[rendition.name] = log
            self.infos[rendition.name] = RenditionInfo(
                rendition.name, rendition.codecs, rendition.width, rendition.height,
                rendition.fps, rendition.video_bitrate_kbps, rendition.track, rendition.note,
                rendition.alternate_audio, rendition.channels)
            self._published_bandwidth[rendition.name] = rendition.bandwidth_bps or 0
            await self._recover_open_parts(rendition.name, log, window.parts)
            log.mark_discontinuity()
        self._dates.release()

    async def _recover_open_parts(self, rendition: str, log: RenditionLog,
                                  parts: tuple[Part, ...]) -> None:
        if not parts:
            return
        data: list[bytes] = []
        for part in parts:
            got = await self.live.get_media(part.key)
            if got is None:
                logger.warning("a dead node's open segment cannot be recovered: a part's "
                               "bytes are gone", extra={"broadcast_id": self.broadcast_id,
                                                        "rendition": rendition,
                                                        "part": part.key})
                return
            data.append(got)
        log.resume_parts(parts)
        self._open_parts[rendition] = data
        duration = sum(p.duration_s for p in log.open_parts)
        await self._segment(rendition, log, duration, self._segment_start_estimate(log),
                            b"".join(data))
        self._open_parts.pop(rendition, None)

    async def hand_over(self) -> None:
        """The broadcast goes on on another node: close what is still open from its
        published parts, and leave every window as it stands -- complete, without
        EXT-X-ENDLIST -- for the next node to continue (:meth:`continue_from_live`)."""
        await self._close_open_parts()
        for rendition, log in self.logs.items():
            await self.live.put_window(self.broadcast_id, rendition, log.window())
        await self._update_broadcast()

    async def child_lost(self) -> None:
        """The child died: close every segment in progress from its published parts,
        and mark a discontinuity everywhere."""
        await self._close_open_parts()
        for log in self.logs.values():
            log.mark_discontinuity()
        self._dates.release()

    async def _close_open_parts(self) -> None:
        """Segments in progress become complete segments of the parts published so far
        (a segment is the concatenation of its parts)."""
        for rendition, parts in list(self._open_parts.items()):
            log = self.logs[rendition]
            open_parts = log.open_parts
            if parts and open_parts:
                duration = sum(p.duration_s for p in open_parts)
                start = self._segment_start_estimate(log)
                await self._segment(rendition, log, duration, start, b"".join(parts))
        self._open_parts.clear()

    @staticmethod
    def _segment_start_estimate(log: RenditionLog) -> float:
        window = log.window()
        if window.segments:
            last = window.segments[-1]
            return last.start_pts_s + last.duration_s
        return 0.0

    async def stop_rendition(self, rendition: str) -> None:
        """Overload stopped the rendition after its last segment: its window ends, marked
        stopped (the origin sends its players elsewhere), and the broadcast lists it no
        more, so new masters and the VOD leave it out."""
        log = self.logs.get(rendition)
        if log is None or rendition in self.stopped:
            return
        self.stopped.add(rendition)
        self.infos.pop(rendition, None)
        self._open_parts.pop(rendition, None)
        log.end(stopped=True)
        window = log.window()
        await self.live.put_window(self.broadcast_id, rendition, window)
        await self.live.publish(media_topic(self.broadcast_id),
                                MediaUpdate(rendition, window.next_msn - 1))
        await self._update_broadcast()

    async def finish(self) -> None:
        """EXT-X-ENDLIST on every rendition; a reload blocked on what will never come
        is answered as soon as its rendition's window says so."""
        self._open_parts.clear()
        for rendition, log in self.logs.items():
            log.end()
            window = log.window()
            await self.live.put_window(self.broadcast_id, rendition, window)
            await self.live.publish(media_topic(self.broadcast_id),
                                    MediaUpdate(rendition, window.next_msn - 1))
        await self._update_broadcast()
