"""The Standard Webhooks signature scheme, checked against the spec's reference vector."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from castway.webhooks.signing import (
    InvalidSecret,
    generate_secret,
    headers,
    secret_key,
    sign,
    verify,
)

# The reference libraries' test vector (standard-webhooks, libraries/*/tests).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_the_reference_vector_signs_to_the_reference_signature() -> None:
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_signature_is_hmac_sha256_of_id_timestamp_body_keyed_with_the_secret_bytes() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{MSG_ID}.{TIMESTAMP}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == "v1," + base64.b64encode(digest).decode()


def test_a_receiver_verifies_the_headers_within_the_tolerance() -> None:
    sent = headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert verify(SECRET, sent, BODY, now=TIMESTAMP + 10)
    assert not verify(SECRET, sent, BODY, now=TIMESTAMP + 301)  # a replay, too late
    assert not verify(SECRET, sent, BODY + b" ", now=TIMESTAMP)  # a changed body
    other = generate_secret()
    assert not verify(other, sent, BODY, now=TIMESTAMP)


def test_one_matching_signature_of_a_list_is_enough() -> None:
    sent = headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    sent["webhook-signature"] = "v1a,xxxx v1,AAAA " + sent["webhook-signature"]
    assert verify(SECRET, sent, BODY, now=TIMESTAMP)


def test_generated_secrets_are_whsec_base64_of_enough_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(secret_key(secret)) <= 64
    assert generate_secret() != secret


@pytest.mark.parametrize("bad", [
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
    "whsec_not base64!",
    "whsec_" + base64.b64encode(b"short").decode(),  # under 24 bytes
    "whsec_" + base64.b64encode(bytes(65)).decode(),  # over 64 bytes
])
def test_a_malformed_secret_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        secret_key(bad)


def test_a_message_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError):
        sign(SECRET, "msg_a.b", TIMESTAMP, BODY)
