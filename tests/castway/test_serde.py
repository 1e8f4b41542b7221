"""The model round-trips through JSON exactly (live state in Redis, catalog columns)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TypeVar

from castway.live.base import RenditionWindow
from castway.model import Broadcast, BroadcastState, Part, Rendition, Segment, SourceInfo
from castway.serde import from_jsonable, to_jsonable

T = TypeVar("T")
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def roundtrip(cls: type[T], value: T) -> T:
    return from_jsonable(cls, json.loads(json.dumps(to_jsonable(value))))


def test_broadcast_with_nested_source_and_renditions() -> None:
    b = Broadcast(id="b1", channel="c", node_id="n", state=BroadcastState.ENDED,
                  started_at=T0, ended_at=T0,
                  source=SourceInfo(video_codec="h264", width=1920, height=1080, fps=30.0),
                  renditions=(Rendition("source", 1920, 1080, 30.0, None, "avc1.64002a"),))
    assert roundtrip(Broadcast, b) == b


def test_window_with_segments_and_parts() -> None:
    part = Part(msn=3, index=0, duration_s=0.5, independent=True, key="k.0")
    seg = Segment(msn=2, duration_s=2.0, key="k", start_pts_s=4.0, program_date_time=T0,
                  discontinuity=True, discontinuity_seq=1, parts=(part,))
    window = RenditionWindow(segments=(seg,), next_msn=3, parts=(part,), preload_hint="k.1")
    assert roundtrip(RenditionWindow, window) == window


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    data = to_jsonable(SourceInfo(width=2))
    data["future_field"] = 1
    assert from_jsonable(SourceInfo, data) == SourceInfo(width=2)


def test_integral_floats_stay_floats() -> None:
    restored = from_jsonable(SourceInfo, {"fps": 30})
    assert isinstance(restored.fps, float)
