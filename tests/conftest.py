"""Suite-wide fixtures. Real peers live in tests/fixtures/ (one module per peer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import make_test_media

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.postgres",
    "tests.fixtures.tiny_disk",
]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def h264_aac_flv(media_dir: Path) -> Path:
    """4 s of 640x360p30 H.264 (keyframe every 2 s, no B-frames) + AAC stereo, in FLV."""
    return make_test_media(media_dir / "h264_aac.flv")
