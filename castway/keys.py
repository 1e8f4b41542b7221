"""Stream keys and tokens: generated once, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

STREAM_KEY_PREFIX = "cw_"


def generate_stream_key() -> str:
    """A new publish key: 192 bits of randomness, URL- and OBS-safe."""
    return STREAM_KEY_PREFIX + secrets.token_urlsafe(24)


def hash_stream_key(key: str) -> str:
    """The stored form of a key. Keys are high-entropy, so a fast hash is enough."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


KEY_ID_CHARS = 16


def key_id(key_hash: str) -> str:
    """A stream key's public id (the publish authorization callback's ``key_id``, shown
    when the key is made): a prefix of its stored hash, which tells nothing of a key of
    192 random bits."""
    return key_hash[:KEY_ID_CHARS]



def generate_token() -> str:
    return secrets.token_urlsafe(32)
