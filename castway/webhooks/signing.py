"""The Standard Webhooks signature scheme, symmetric (spec 1.0.0, "Signature scheme"):
``webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">``
keyed with the secret's bytes; secrets are presented as ``whsec_`` + base64 of 24 to 64
random bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24  # the spec: "at least 24 bytes (192 bits, 512 maximum)"
SECRET_MAX_BYTES = 64
SIGNATURE_VERSION = "v1"
#: A receiver refuses a timestamp further than this from its clock (replays).
DEFAULT_TOLERANCE_S = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class InvalidSecret(ValueError):
    pass


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; raises :class:`InvalidSecret`."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook secret is whsec_ followed by base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise InvalidSecret(f"a webhook secret holds {SECRET_MIN_BYTES} to "
                            f"{SECRET_MAX_BYTES} bytes, not {len(key)}")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one attempt."""
    if "." in msg_id:
        raise ValueError("a message id never holds '.': it delimits the signed content")
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: sign(secret, msg_id, timestamp, body)}


def verify(secret: str, received: Mapping[str, str], body: bytes, now: float, *,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """What a receiver does: any ``v1`` signature of the space-separated list matches
    (compared in constant time) and the timestamp is within ``tolerance_s`` of ``now``."""
    lowered = {k.lower(): v for k, v in received.items()}
    msg_id = lowered.get(HEADER_ID, "")
    timestamp = lowered.get(HEADER_TIMESTAMP, "")
    if not msg_id or not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(timestamp), body)
    return any(hmac.compare_digest(candidate, expected)
               for candidate in lowered.get(HEADER_SIGNATURE, "").split(" ")
               if candidate.startswith(SIGNATURE_VERSION + ","))
