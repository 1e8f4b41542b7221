"""Generated sources for the transcoder tests (tiny: 640x360 or smaller, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import make_test_media


@pytest.fixture(scope="session")
def src_360p(media_dir: Path) -> Path:
    """3 s of 640x360p30 H.264 (keyframe every 1 s) + AAC, in MP4."""
    return make_test_media(media_dir / "tc_360p.mp4", seconds=3.0, gop=30)


@pytest.fixture(scope="session")
def src_irregular(media_dir: Path) -> Path:
    """6 s of 320x180p30 with keyframes only at 0, 0.7, 2.9, 3.3 and 5.5 s (OBS "auto")."""
    return make_test_media(media_dir / "tc_irregular.mp4", seconds=6.0, width=320,
                           height=180, gop=600,
                           extra_args=("-force_key_frames", "0,0.7,2.9,3.3,5.5"))


@pytest.fixture(scope="session")
def src_bframes(media_dir: Path) -> Path:
    """2 s of 320x180p30 with B-frames (composition offsets in the source)."""
    return make_test_media(media_dir / "tc_bframes.mp4", seconds=2.0, width=320, height=180,
                           gop=30, extra_args=("-bf", "2", "-preset:v", "veryfast"))


@pytest.fixture(scope="session")
def src_hevc_mp3(media_dir: Path) -> Path:
    """2 s of 320x180p30 HEVC (hvcC in MKV) with MP3 audio: decoded, re-encoded to AAC."""
    return make_test_media(media_dir / "tc_hevc_mp3.mkv", seconds=2.0, width=320, height=180,
                           gop=30, vcodec="libx265",
                           extra_args=("-x265-params", "log-level=error:bframes=0",
                                       "-preset", "ultrafast", "-c:a", "libmp3lame"))


@pytest.fixture(scope="session")
def src_av1(media_dir: Path) -> Path:
    """1 s of 320x180p30 AV1 (SVT-AV1, av1C in MP4) + AAC."""
    return make_test_media(media_dir / "tc_av1.mp4", seconds=1.0, width=320, height=180,
                           gop=15, vcodec="libsvtav1",
                           extra_args=("-preset", "12", "-svtav1-params", "lp=1"))


@pytest.fixture(scope="session")
def src_10s_bframes(media_dir: Path) -> Path:
    """10 s of 320x180p30 with B-frames (as OBS's x264 sends), a keyframe every 2 s."""
    return make_test_media(media_dir / "tc_10s_bframes.mp4", seconds=10.0, width=320,
                           height=180, gop=60, extra_args=("-bf", "2", "-preset:v", "veryfast"))


@pytest.fixture(scope="session")
def src_6s_60fps(media_dir: Path) -> Path:
    """6 s of 320x180p60 with B-frames, a keyframe every 1 s: a high-frame-rate source."""
    return make_test_media(media_dir / "tc_6s_60fps.mp4", seconds=6.0, width=320,
                           height=180, fps=60, gop=60,
                           extra_args=("-bf", "2", "-preset:v", "veryfast"))
