"""Settings come from CASTWAY_* variables, and the README documents every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from castway.settings import SegmentFormat, Settings
from castway.settings_doc import settings_table

README = Path(__file__).parents[2] / "README.md"


def test_every_setting_reads_its_castway_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTWAY_RTMP_PORT", "19350")
    monkeypatch.setenv("CASTWAY_SEGMENT_FORMAT", "mpegts")
    monkeypatch.setenv("CASTWAY_REDIS_URL", "redis://r:6379/0")
    settings = Settings()
    assert settings.rtmp_port == 19350
    assert settings.segment_format is SegmentFormat.MPEGTS
    assert settings.redis_url == "redis://r:6379/0"


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    settings = Settings(data_dir=tmp_path)
    assert settings.redis_url is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'castway.db'}"
    assert settings.effective_storage_url == str(tmp_path / "storage")
    assert settings.effective_public_rtmp_url == "rtmp://127.0.0.1:1935/live"
    assert settings.effective_public_url == "http://127.0.0.1:8080"


def test_readme_lists_every_setting_with_its_default() -> None:
    assert settings_table() in README.read_text(), (
        "README's settings table is stale: paste `python -m castway.settings_doc`")
