"""The in-process history ring."""

from __future__ import annotations

import pytest

from chat.history import HistoryRing


def test_keeps_the_last_n_oldest_first() -> None:
    ring = HistoryRing(3)
    for i in range(1, 6):
        ring.append(i, f"f{i}")
    assert ring.recent() == ["f3", "f4", "f5"]
    assert ring.recent(2) == ["f4", "f5"]
    assert ring.recent(0) == []
    assert len(ring) == 3


def test_delete_removes_only_that_message() -> None:
    ring = HistoryRing(3)
    for i in range(1, 4):
        ring.append(i, f"f{i}")
    assert ring.delete(2) is True
    assert ring.delete(2) is False
    assert ring.delete(1000) is False
    assert ring.recent() == ["f1", "f3"]


def test_size_zero_keeps_nothing() -> None:
    ring = HistoryRing(0)
    ring.append(1, "f1")
    assert ring.recent() == []


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        HistoryRing(-1)
