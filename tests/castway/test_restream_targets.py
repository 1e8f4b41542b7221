"""castway.restream: target URLs as services give them, keys masked and sealed, and the
restream.failed webhook of a target in trouble."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from castway.events.restreams import RESTREAMS_TOPIC, RestreamFailed
from castway.restream.sealing import KeySealer, SealError, generate_key, load_restream_key
from castway.restream.targets import InvalidTarget, mask_key, parse_target
from castway.webhooks.events import EventType, webhook_event


@pytest.mark.parametrize(("url", "key", "tc_url", "app", "stream"), [
    ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", None,
     "rtmp://a.rtmp.youtube.com/live2", "live2", "abcd-efgh-ijkl"),
    ("rtmp://live.twitch.tv/app", "live_123_secret", "rtmp://live.twitch.tv/app", "app",
     "live_123_secret"),
    ("rtmps://live-api-s.facebook.com:443/rtmp/", "FB-1-2",
     "rtmps://live-api-s.facebook.com/rtmp", "rtmp", "FB-1-2"),
    ("rtmp://127.0.0.1:19350/live/mirror", None, "rtmp://127.0.0.1:19350/live", "live",
     "mirror"),
])
def test_a_target_is_parsed_as_services_give_it(url: str, key: str | None, tc_url: str,
                                                app: str, stream: str) -> None:
    address = parse_target(url, key)
    assert (address.tc_url, address.app, address.key) == (tc_url, app, stream)
    assert address.tls == url.startswith("rtmps")


@pytest.mark.parametrize("url", ["http://example.com/live/key", "rtmp:///live/key",
                                 "rtmp://example.com/key", "rtmp://u:p@example.com/a/key"])
def test_what_cannot_be_a_target_is_refused_with_a_reason(url: str) -> None:
    with pytest.raises(InvalidTarget):
        parse_target(url)


def test_a_key_is_masked_to_its_last_four_characters_only_when_long() -> None:
    assert mask_key("live_123456789_abcdefghij") == "****ghij"
    assert mask_key("short") == "****"


def test_a_sealed_key_opens_only_with_its_own_restream_key(tmp_path: Path) -> None:
    key = load_restream_key(tmp_path, None)
    assert load_restream_key(tmp_path, None) == key  # kept in the data directory
    sealer = KeySealer(key)
    sealed = sealer.seal("live_secret")
    assert "live_secret" not in sealed and sealer.open(sealed) == "live_secret"
    with pytest.raises(SealError):
        KeySealer(generate_key()).open(sealed)
    with pytest.raises(SealError):
        KeySealer("not a key")


def test_restream_failed_travels_on_its_topic_and_becomes_its_webhook() -> None:
    event = RestreamFailed("b1", "alice", "t1", "rtmp://a.rtmp.youtube.com/live2",
                           "connection refused", 5)
    assert RESTREAMS_TOPIC.decode(RESTREAMS_TOPIC.encode(event)) == event
    hook = webhook_event(event, datetime(2026, 1, 1, tzinfo=UTC))
    assert hook.type is EventType.RESTREAM_FAILED
    assert json.loads(hook.body)["data"] == {
        "broadcast_id": "b1", "channel": "alice", "target_id": "t1",
        "target_url": "rtmp://a.rtmp.youtube.com/live2", "reason": "connection refused",
        "failures": 5, "gave_up": False}
    assert webhook_event(event, datetime(2026, 1, 2, tzinfo=UTC)).msg_id == hook.msg_id
