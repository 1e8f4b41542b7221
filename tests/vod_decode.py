"""What an archive's viewer gets of a broadcast: its VOD playlist over the segment log,
written where the origin would serve it, checked against the playlist rules and read end
to end by ffmpeg's HLS demuxer."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from archiver.vod import render_vod_media_playlist
from castway.layout import media_playlist_key
from castway.model import Segment
from tests.hls_validator import validate_playlist


def decoded_video_frames(ffmpeg: str, storage_root: Path, broadcast_id: str,
                         rendition: str, log: Sequence[Segment]) -> int:
    """Video frames ffmpeg decodes from the rendition's VOD playlist (asserting it is
    valid and that ffmpeg reads it without an error)."""
    playlist = storage_root / media_playlist_key(broadcast_id, rendition)
    playlist.parent.mkdir(parents=True, exist_ok=True)
    playlist.write_text(render_vod_media_playlist(broadcast_id, rendition, list(log),
                                                  target_duration_s=2.0))
    assert validate_playlist(playlist.read_text()) == []
    result = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-allowed_extensions", "ALL",
         "-i", str(playlist), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return sum(1 for line in result.stdout.splitlines() if line and not line.startswith("#"))
