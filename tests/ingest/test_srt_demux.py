"""The MPEG-TS path through libav: a clean stream comes out whole, a damaged one (bytes
flipped, cut short, garbage) as packets or libav's own error, never anything else."""

from __future__ import annotations

import functools
import io
import tempfile
from pathlib import Path

import av
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from castway.media import MediaKind, MediaPacket
from ingest.srt.demux import demux_ts
from tests.support import make_test_media, packet_counts


@functools.cache
def clip() -> Path:
    return make_test_media(Path(tempfile.mkdtemp()) / "clip.ts", seconds=1.0, width=160,
                           height=90, fps=25)


def run(data: bytes) -> list[MediaPacket]:
    out: list[MediaPacket] = []
    try:
        demux_ts(io.BytesIO(data), out.append)
    except av.error.FFmpegError:
        pass  # libav refused it: the connection ends with that reason
    return out


def test_a_clean_stream_comes_out_whole() -> None:
    out = run(clip().read_bytes())
    published = packet_counts(str(clip()))
    frames = [m for m in out if not m.is_config]
    assert len([m for m in frames if m.kind is MediaKind.VIDEO]) == published["video"][0]
    assert len([m for m in frames if m.kind is MediaKind.AUDIO]) == published["audio"][0]
    assert [m.is_config for m in out[:2]] == [True, True]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      max_size=40),
       cut=st.floats(0, 1))
# A flipped byte in the PMT made libav list a stream with no codec context at all.
@example(flips=[(0.16069633252274373, 2)], cut=1.0)
def test_a_damaged_stream_is_packets_or_a_libav_error(
        flips: list[tuple[float, int]], cut: float) -> None:
    data = bytearray(clip().read_bytes())
    for where, value in flips:
        data[int(where * len(data))] = value
    for m in run(bytes(data[:int(cut * len(data))])):
        assert m.payload or m.is_config


@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=4000))
def test_garbage_is_packets_or_a_libav_error(data: bytes) -> None:
    run(data)
