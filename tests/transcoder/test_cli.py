"""``castway transcode`` end to end: playlists valid (RFC 8216 validator, m3u8 library),
and ffmpeg's HLS demuxer reads the master playlist to the end, for fMP4 and MPEG-TS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import m3u8
import pytest

from tests.hls_validator import validate_playlist
from tests.support import require_tool
from transcoder.cli import main


@pytest.mark.peer
@pytest.mark.parametrize(("fmt", "ext"), [("fmp4", "m4s"), ("mpegts", "ts")])
def test_transcode_writes_a_playable_ladder(src_360p: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            fmt: str, ext: str) -> None:
    ffmpeg = require_tool("ffmpeg")
    ladder = tmp_path / "ladder.json"
    ladder.write_text(json.dumps({"rungs": [{"name": "240p", "height": 240,
                                             "video_bitrate_kbps": 400}]}))
    out = tmp_path / "out"
    assert main([str(src_360p), str(out), "--ladder", str(ladder), "--format", fmt,
                 "--preset", "ultrafast"]) == 0
    printed = capsys.readouterr().out
    assert "frames=90" in printed and "fps=" in printed and "seconds=" in printed

    master_text = (out / "master.m3u8").read_text()
    assert validate_playlist(master_text) == []
    master = m3u8.loads(master_text)
    variants = {p.uri: p.stream_info for p in master.playlists}
    assert set(variants) == {"source/index.m3u8", "240p/index.m3u8"}
    assert variants["240p/index.m3u8"].resolution == (426, 240)
    assert variants["source/index.m3u8"].resolution == (640, 360)
    for info in variants.values():
        assert info.bandwidth >= (info.average_bandwidth or 0) > 0
        assert info.codecs.endswith(",mp4a.40.2")
        assert info.frame_rate == 30

    for name in ("source", "240p"):
        text = (out / name / "index.m3u8").read_text()
        assert validate_playlist(text) == []
        media = m3u8.loads(text)
        assert media.is_endlist
        assert [s.uri for s in media.segments] == [f"0.{ext}", f"1.{ext}"]
        assert all(s.program_date_time is not None for s in media.segments)
        assert media.target_duration >= max(round(s.duration) for s in media.segments)
        assert bool(media.segment_map) == (fmt == "fmp4")
        # CODECS agrees with what ffprobe reads from the stream's SPS.
        first = out / name / f"0.{ext}"
        data = ((out / name / "init.mp4").read_bytes() if fmt == "fmp4" else b"") \
            + first.read_bytes()
        probe = tmp_path / f"probe.{ext}.mp4"
        probe.write_bytes(data)
        assert variants[f"{name}/index.m3u8"].codecs.split(",")[0] == _avc1_of(probe)

    result = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i",
                             str(out / "master.m3u8"), "-map", "0", "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr


_PROFILES = {"Constrained Baseline": "42c0", "Baseline": "4200", "Main": "4d00",
             "High": "6400"}


def _avc1_of(path: Path) -> str:
    ffprobe = require_tool("ffprobe")
    out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v", "-show_entries",
                          "stream=profile,level", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    stream = json.loads(out)["streams"][0]
    return f"avc1.{_PROFILES[stream['profile']]}{int(stream['level']):02x}"


def test_unreadable_input_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not media")
    assert main([str(bad), str(tmp_path / "out")]) == 1
    assert "castway transcode:" in capsys.readouterr().err
