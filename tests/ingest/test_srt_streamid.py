"""The SRT streamid as a publish request: the access-control syntax, a bare key, and a
clear refusal code for everything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.srt.streamid import (
    MAX_STREAMID,
    RejectCode,
    StreamId,
    StreamIdError,
    parse_streamid,
)


@pytest.mark.parametrize(("raw", "key", "app"), [
    ("#!::r=live/cw_abc,m=publish", "cw_abc", "live"),
    ("#!::m=publish,r=live/cw_abc", "cw_abc", "live"),  # any order
    ("#!::r=cw_abc", "cw_abc", None),  # mode defaults to publish, no app
    ("#!::r=live/k,m=publish,u=me,s=x,t=stream,h=example.com", "k", "live"),
    ("#!::r=live/k,m=publish,x-custom=1", "k", "live"),  # unknown keys are kept
    ("cw_abc-_.~9", "cw_abc-_.~9", None),  # a bare key
])
def test_publish_requests_are_read(raw: str, key: str, app: str | None) -> None:
    parsed = parse_streamid(raw)
    assert (parsed.key, parsed.app) == (key, app)


def test_user_and_fields_are_kept() -> None:
    parsed = parse_streamid("#!::u=alice,r=live/k,m=publish")
    assert parsed == StreamId(key="k", app="live", user="alice",
                              fields=(("u", "alice"), ("r", "live/k"), ("m", "publish")))


@pytest.mark.parametrize(("raw", "code"), [
    ("", RejectCode.BAD_REQUEST),
    ("#!::", RejectCode.BAD_REQUEST),
    ("#!::m=publish", RejectCode.BAD_REQUEST),  # no resource
    ("#!::r=live/", RejectCode.BAD_REQUEST),  # empty key
    ("#!::r=/k", RejectCode.BAD_REQUEST),  # empty app
    ("#!::r=live/k,r=live/j", RejectCode.BAD_REQUEST),  # twice
    ("#!::r=live/k,junk", RejectCode.BAD_REQUEST),  # not key=value
    ("#!::r=live/k,m=request", RejectCode.BAD_MODE),  # playback: not served
    ("#!::r=live/k,m=bidirectional", RejectCode.BAD_MODE),
    ("#!::r=live/k,t=file", RejectCode.BAD_REQUEST),
    ("#!:r=live/k", RejectCode.BAD_REQUEST),  # '#!' without '::'
    ("key with space", RejectCode.BAD_REQUEST),
    ("a/b/../c", RejectCode.BAD_REQUEST),
    ("k" * (MAX_STREAMID + 1), RejectCode.BAD_REQUEST),
])
def test_malformed_streamids_are_refused_with_a_code(raw: str, code: RejectCode) -> None:
    with pytest.raises(StreamIdError) as refused:
        parse_streamid(raw)
    assert refused.value.code is code and refused.value.reason


@given(st.text(max_size=600))
def test_any_text_is_a_request_or_a_refusal(raw: str) -> None:
    try:
        parsed = parse_streamid(raw)
    except StreamIdError as refused:
        assert refused.code in RejectCode
        return
    assert parsed.key and parsed.key in raw


_NAME = st.text(alphabet="abcXYZ019-_.~", min_size=1, max_size=40)


@given(app=_NAME, key=_NAME, user=st.one_of(st.none(), _NAME))
def test_what_an_encoder_builds_is_read_back(app: str, key: str, user: str | None) -> None:
    raw = f"#!::r={app}/{key},m=publish" + (f",u={user}" if user else "")
    parsed = parse_streamid(raw)
    assert (parsed.app, parsed.key, parsed.user) == (app, key, user)
