"""Restream stream keys encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``) under a key from ``CASTWAY_RESTREAM_KEY``, else ``DATA_DIR/restream.key``
(made on first use, mode 0600, like the admin token). The API process seals, the ingest
node opens: in the distributed mode both need the same setting."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from castway.bootstrap import load_or_create_secret

KEY_FILE = "restream.key"


class SealError(Exception):
    """A sealed key that this key cannot open (another CASTWAY_RESTREAM_KEY), or a
    restream key that is not a Fernet key."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_restream_key(data_dir: Path, preset: str | None) -> str:
    """The restream key: the setting, else the data directory's, else a new one there."""
    key, _ = load_or_create_secret(data_dir, KEY_FILE, preset, generate=generate_key)
    return key


class KeySealer:
    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise SealError(f"the restream key is not a Fernet key: {e}") from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SealError("the stream key was sealed with another restream key "
                            "(CASTWAY_RESTREAM_KEY differs between processes?)") from None
