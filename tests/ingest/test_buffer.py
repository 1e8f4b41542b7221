from __future__ import annotations

import pytest

from ingest.protocol.buffer import Buffer, NeedMoreData
from ingest.protocol.errors import LimitExceeded


def test_consume_exactly_or_roll_back() -> None:
    buf = Buffer(100)
    buf.feed(b"abcde")
    assert buf.consume(2) == b"ab"
    with pytest.raises(NeedMoreData):
        buf.consume(4)
    buf.rollback()
    assert buf.consume(3) == b"abc"
    buf.commit()
    assert len(buf) == 2
    buf.feed(b"fg")
    assert buf.peek(4) == b"defg"
    assert buf.consume(4) == b"defg"


def test_feeding_past_the_limit_raises() -> None:
    buf = Buffer(4)
    buf.feed(b"abcd")
    with pytest.raises(LimitExceeded):
        buf.feed(b"e")


def test_committed_bytes_do_not_count_against_the_limit() -> None:
    buf = Buffer(4)
    for _ in range(100_000):
        buf.feed(b"abcd")
        buf.consume(4)
        buf.commit()
    assert len(buf) == 0
