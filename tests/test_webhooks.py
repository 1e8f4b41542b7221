"""Webhooks and the publish authorization callback against a real `castway serve`, a real
ffmpeg publisher and real HTTP receivers on loopback: every event of a broadcast arrives
signed (verified here with the standard library alone), a receiver down for 30 s gets its
event afterwards under the same webhook-id, internal receivers are refused at
registration, and the platform's callback decides who may publish."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.webhook_receiver import Receiver, valid_signature
from tests.serve_process import Served, serve
from tests.support import poll, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def publish(served: Served, media: Path) -> subprocess.CompletedProcess[str]:
    url = f"rtmp://127.0.0.1:{served.rtmp_port}/live/{served.stream_key()}"
    return subprocess.run([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re",
                           "-i", str(media), "-c", "copy", "-f", "flv", url],
                          capture_output=True, text=True, timeout=60, check=False)


FAST_RETRIES = {"CASTWAY_WEBHOOK_BACKOFF_BASE_S": "1", "CASTWAY_WEBHOOK_BACKOFF_MAX_S": "4",
                "CASTWAY_WEBHOOK_MAX_ATTEMPTS": "40", "CASTWAY_LADDER": "source"}


def test_every_event_of_a_real_broadcast_arrives_signed_even_after_30_s_down(
        tmp_path: Path, receiver: Receiver, h264_aac_flv: Path) -> None:
    env = {"CASTWAY_WEBHOOK_ALLOW_PRIVATE": "1", **FAST_RETRIES}
    with serve(tmp_path / "data", **env) as served:  # type: ignore[arg-type]
        api = httpx.Client(base_url=served.base, headers=served.admin_headers(), timeout=10)
        created = api.post("/api/v1/webhooks", json={
            "url": receiver.url, "events": ["broadcast.started", "broadcast.ended",
                                            "vod.ready", "vod.deleted"]})
        assert created.status_code == 201, created.text
        hook = created.json()
        secret = hook["secret"]
        assert secret.startswith("whsec_")
        assert "secret" not in api.get(f"/api/v1/webhooks/{hook['id']}").json()

        result = publish(served, h264_aac_flv)
        assert result.returncode == 0, result.stderr
        poll("started, ended and vod.ready", lambda: all(
            receiver.of_type(t) for t in ("broadcast.started", "broadcast.ended",
                                          "vod.ready")), 60)
        assert all(valid_signature(secret, r) for r in receiver.received)
        broadcast_id = receiver.of_type("broadcast.started")[0].json["data"]["broadcast_id"]
        assert receiver.of_type("broadcast.ended")[0].json["data"] == {
            "broadcast_id": broadcast_id, "channel": "default"}
        vod_id = receiver.of_type("vod.ready")[0].json["data"]["vod_id"]

        # The receiver goes down; the VOD is deleted meanwhile.
        receiver.stop()
        down_at = time.monotonic()
        assert api.delete(f"/api/v1/vods/{vod_id}").status_code == 200

        def failing() -> list[dict[str, Any]]:
            log = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
            return [d for d in log if d["event_type"] == "vod.deleted" and d["attempts"] >= 2]

        poll("failed attempts of vod.deleted", failing, 20)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # the outage lasts 30 s
        assert not receiver.of_type("vod.deleted")
        receiver.start()
        up_at = time.monotonic()
        poll("vod.deleted after the outage", lambda: receiver.of_type("vod.deleted"), 15)
        assert time.monotonic() - up_at < 10  # the backoff is capped at 4 s here
        deleted = receiver.of_type("vod.deleted")[0]
        assert valid_signature(secret, deleted)
        assert deleted.json["data"]["vod_id"] == vod_id

        log = {d["msg_id"]: d for d in
               api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()}
        entry = log[deleted.headers["webhook-id"]]
        assert entry["state"] == "delivered" and entry["attempts"] >= 3, entry

        # A redelivery keeps the webhook-id.
        again = api.post(f"/api/v1/webhooks/{hook['id']}/deliveries/"
                         f"{entry['msg_id']}/redeliver")
        assert again.status_code == 202, again.text
        poll("the redelivery", lambda: len(receiver.of_type("vod.deleted")) >= 2, 15)
        assert {r.headers["webhook-id"] for r in receiver.of_type("vod.deleted")} == \
            {entry["msg_id"]}
        assert api.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
        assert api.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404


def test_the_callback_refuses_then_accepts_a_real_publisher_and_internal_receivers_are_refused(
        tmp_path: Path, receiver: Receiver, h264_aac_flv: Path) -> None:
    receiver.status = 403
    with serve(tmp_path / "data", CASTWAY_PUBLISH_AUTH_URL=receiver.url,
               CASTWAY_PUBLISH_AUTH_TIMEOUT_S="2", CASTWAY_LADDER="source") as served:
        api = httpx.Client(base_url=served.base, headers=served.admin_headers(), timeout=10)
        for url in ("http://127.0.0.1:9/hook", "http://localhost/hook",
                    "http://169.254.169.254/latest/meta-data", "http://[::1]/",
                    "http://10.0.0.1/"):
            refused = api.post("/api/v1/webhooks", json={"url": url,
                                                         "events": ["vod.ready"]})
            assert refused.status_code == 422, (url, refused.text)
        assert api.get("/api/v1/webhooks").json() == []

        denied = publish(served, h264_aac_flv)
        assert denied.returncode != 0
        assert "Publish not authorized by the platform (HTTP 403)" in denied.stderr, \
            denied.stderr
        asked = receiver.received[0].json
        assert asked["channel"] == "default"
        assert asked["client_addr"] == "127.0.0.1"
        key_hash = hashlib.sha256(served.stream_key().encode()).hexdigest()
        assert asked["key_id"] == key_hash[:16]
        assert "stream_key" not in asked and served.stream_key() not in str(asked)
        assert api.get("/api/v1/broadcasts").json() == []

        receiver.status = 200
        accepted = publish(served, h264_aac_flv)
        assert accepted.returncode == 0, accepted.stderr
        broadcasts = api.get("/api/v1/broadcasts").json()
        assert [b["channel"] for b in broadcasts] == ["default"]
