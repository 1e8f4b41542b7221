"""Entry points log JSON lines with the structured fields callers attach."""

from __future__ import annotations

import json
import logging

from castway.logs import JsonFormatter, TextFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.getLogger("castway.test").makeRecord(
        "castway.test", logging.INFO, __file__, 1, "publish %s", ("accepted",), None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_lines_carry_extra_fields() -> None:
    line = JsonFormatter().format(_record(broadcast_id="b1", channel="default"))
    entry = json.loads(line)
    assert entry["msg"] == "publish accepted"
    assert entry["level"] == "info"
    assert entry["broadcast_id"] == "b1" and entry["channel"] == "default"


def test_text_lines_show_fields_for_humans() -> None:
    line = TextFormatter().format(_record(channel="default"))
    assert "publish accepted" in line and "channel=default" in line
