"""MP4 export of real fMP4 segments, checked with ffprobe and by the file's top-level
boxes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from archiver.context import ArchiveContext, VodNotFound
from archiver.instant_vod import make_vod
from archiver.mp4_export import export_mp4
from tests.archiver.helpers import HlsRun, count_frames, local_path, probe_duration, publish

pytestmark = pytest.mark.peer


def top_level_boxes(path: Path) -> list[str]:
    names: list[str] = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, name = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                f.seek(size - 16, 1)
            else:
                f.seek(size - 8, 1)
            names.append(name.decode())
    return names


async def test_mp4_export_remuxes_every_frame_into_a_fast_start_file(
        ctx: ArchiveContext, two_runs: tuple[HlsRun, HlsRun], tmp_path: Path) -> None:
    await publish("b1", two_runs, live=ctx.live, catalog=ctx.catalog, storage=ctx.storage)
    await make_vod(ctx, "b1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    vod = await export_mp4(ctx, "b1", workdir=scratch)
    assert vod.mp4_key == "broadcasts/b1/export.mp4" and vod.mp4_progress == 1.0
    saved = ctx.catalog.get_vod("b1")
    assert saved is not None and saved.mp4_key == vod.mp4_key
    info = ctx.storage.head(vod.mp4_key)
    assert info is not None and info.content_type == "video/mp4"
    path = Path(local_path(ctx, vod.mp4_key))
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat")  # fast start
    assert count_frames(str(path)) == sum(r.frames for r in two_runs)
    assert probe_duration(str(path)) == pytest.approx(7.0, abs=0.15)
    assert list(scratch.iterdir()) == []  # its scratch space is gone


async def test_export_of_a_missing_vod(ctx: ArchiveContext) -> None:
    with pytest.raises(VodNotFound):
        await export_mp4(ctx, "nope")
