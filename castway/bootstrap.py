"""First-start chores shared by the entry points: the data directory, secrets kept in
it, and the ``default`` channel of the embedded mode."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from castway.catalog.base import AlreadyExists, Catalog
from castway.keys import generate_stream_key, generate_token, hash_stream_key
from castway.model import Channel, StreamKey

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "default"


def ensure_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def load_or_create_secret(data_dir: Path, name: str, preset: str | None, *,
                          generate: Callable[[], str] = generate_token) -> tuple[str, bool]:
    """A secret from settings, else from ``DATA_DIR/name``, else a new one from
    ``generate`` written there (mode 0600). Returns (secret, created_now).

    Processes sharing a data directory (a local fleet's nodes, started together) may all
    find it missing: the secret is written whole to a file of this process's own, then
    linked into place, which fails if another got there first -- whose secret is then
    the one every process uses. A reader never sees a created but unwritten file."""
    if preset:
        return preset, False
    path = data_dir / name
    if path.exists():
        return path.read_text().strip(), False
    secret = generate().strip()
    ensure_data_dir(data_dir)
    draft = data_dir / f".{name}.{os.getpid()}.{id(secret):x}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.link(draft, path)
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        draft.unlink(missing_ok=True)
    return secret, True


def create_channel_with_key(catalog: Catalog, name: str, title: str = "") -> str:
    """Create a channel and its first stream key; returns the key (shown once)."""
    catalog.create_channel(Channel(name=name, title=title or name))
    key = generate_stream_key()
    catalog.add_stream_key(StreamKey(channel=name, key_hash=hash_stream_key(key)))
    return key


def rotate_stream_key(catalog: Catalog, name: str) -> str:
    """Revoke the channel's keys and issue a new one (shown once)."""
    catalog.revoke_stream_keys(name)
    key = generate_stream_key()
    catalog.add_stream_key(StreamKey(channel=name, key_hash=hash_stream_key(key)))
    return key


def ensure_default_channel(catalog: Catalog) -> str | None:
    """Create the ``default`` channel on first start; returns its new key, else None."""
    if catalog.get_channel(DEFAULT_CHANNEL) is not None:
        return None
    try:
        return create_channel_with_key(catalog, DEFAULT_CHANNEL, "Default channel")
    except AlreadyExists:  # another process won the race
        return None
