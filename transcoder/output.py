"""File output of the pipeline: segments and VOD playlists in a directory.

Used by ``castway transcode`` (:mod:`transcoder.cli`) and the benchmark. Layout::

    OUTDIR/master.m3u8
    OUTDIR/<rendition>/index.m3u8, init.mp4, <msn>.m4s | <msn>.ts
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from castway.hls.playlist import PlaylistType, render_master_playlist, render_media_playlist
from castway.model import Rendition
from transcoder.packager import InitOut, Output, PartOut, SegmentOut
from transcoder.pipeline import RenditionInfo
from transcoder.window import RenditionLog


class DirectoryOutput:
    def __init__(self, outdir: Path, *, ext: str = "m4s", target_segment_s: float = 2.0,
                 part_target_s: float = 0.5) -> None:
        self.outdir = outdir
        self.ext = ext
        self.target_segment_s = target_segment_s
        self.part_target_s = part_target_s
        self.logs: dict[str, RenditionLog] = {}
        self.infos: dict[str, RenditionInfo] = {}
        self.started = datetime.now(UTC)
        outdir.mkdir(parents=True, exist_ok=True)

    def _log(self, rendition: str) -> RenditionLog:
        log = self.logs.get(rendition)
        if log is None:
            log = RenditionLog("", rendition, ext=self.ext, window_segments=1 << 30,
                               target_segment_s=self.target_segment_s,
                               part_target_s=self.part_target_s, parts=False)
            self.logs[rendition] = log
            (self.outdir / rendition).mkdir(parents=True, exist_ok=True)
        return log

    def on_ladder(self, ladder: tuple[RenditionInfo, ...]) -> None:
        for info in ladder:
            self.infos[info.name] = info
            self._log(info.name)

    def on_output(self, out: Output) -> None:
        log = self._log(out.rendition)
        if isinstance(out, InitOut):
            key, new = log.set_init(out.data)
            if new:
                (self.outdir / key).write_bytes(out.data)
        elif isinstance(out, PartOut):
            pass  # a VOD directory needs whole segments only
        elif isinstance(out, SegmentOut):
            segment = log.add_segment(out.duration_s, out.start_pts_s, len(out.data),
                                      self.started)
            (self.outdir / segment.key).write_bytes(out.data)

    def discontinuity(self) -> None:
        for log in self.logs.values():
            log.mark_discontinuity()

    def renditions(self) -> list[Rendition]:
        return [self.logs[name].as_rendition(info) for name, info in self.infos.items()]

    def write_playlists(self) -> Path:
        for name, log in self.logs.items():
            log.end()
            text = render_media_playlist(log.window(), uri_for_key=_relative,
                                         playlist_type=PlaylistType.VOD)
            (self.outdir / name / "index.m3u8").write_text(text)
        master = render_master_playlist(self.renditions(),
                                        uri_for=lambda r: f"{r.name}/index.m3u8")
        path = self.outdir / "master.m3u8"
        path.write_text(master)
        return path


def _relative(key: str) -> str:
    """A key ``<rendition>/<name>`` as seen from ``<rendition>/index.m3u8``."""
    return key.rsplit("/", 1)[-1]
