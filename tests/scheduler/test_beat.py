"""The Celery beat entry."""

from __future__ import annotations

from pathlib import Path

from celery import Celery

from castway.settings import Settings
from scheduler.beat import BEAT_ENTRY, TASK_NAME, register


def test_register_adds_the_task_and_a_beat_entry_every_interval(tmp_path: Path) -> None:
    app = Celery("castway-test", broker="memory://")
    app.conf.beat_schedule = {"other": {"task": "x", "schedule": 5.0}}
    register(app, Settings(data_dir=tmp_path, scheduler_interval_s=60.0))
    assert TASK_NAME in app.tasks
    assert app.conf.beat_schedule[BEAT_ENTRY]["task"] == TASK_NAME
    assert app.conf.beat_schedule[BEAT_ENTRY]["schedule"] == 60.0
    assert "other" in app.conf.beat_schedule
