"""Durations exact to the second, short dates: what a viewer reads instead of ISO."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from castway.model import Visibility, Vod, VodState
from origin.humanize import date_text, duration_text, vod_title


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (40, "40 s"), (59.6, "1 min"), (60, "1 min"), (95, "1 min 35 s"),
    (3600, "1 h"), (3725, "1 h 2 min 5 s"), (86400 + 1, "24 h 1 s"),
])
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_date_text_names_the_year_only_when_it_is_not_this_one() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert date_text(datetime(2026, 12, 4, 13, 14, tzinfo=UTC), now=now) == "4 Dec 13:14 UTC"
    assert date_text(datetime(2025, 1, 2, 3, 4, tzinfo=UTC), now=now) == "2 Jan 2025 03:04 UTC"


def test_a_95_second_vod_is_not_called_2_min() -> None:
    vod = Vod(id="v", broadcast_id="v", channel="mychan", visibility=Visibility.PUBLIC,
              state=VodState.COMPLETE, duration_s=95.0,
              created_at=datetime(2026, 12, 4, 13, 15, 35, tzinfo=UTC))
    assert vod_title(vod, now=datetime(2026, 12, 5, tzinfo=UTC)) == \
        "mychan, 4 Dec 13:14 UTC, 1 min 35 s"
