"""Validation of storage keys and prefixes, shared by every backend.

Keys are relative, '/'-separated paths (``broadcasts/{id}/{rendition}/{msn}.m4s``). A key
that could escape the storage root or alias another key is refused with ValueError,
the same way on every backend, so a key accepted by S3 is never one the local
directory would refuse: no ``..`` or ``.`` segments, no absolute paths, no empty
segments (``a//b``), no backslashes, no NUL or other control characters. Segments
starting with ``.`` are reserved for the backends' bookkeeping (temporary files and
metadata sidecars of the local directory).
"""

from __future__ import annotations

MAX_KEY_BYTES = 1024  # S3's limit on object key length


def _check_segments(value: str, what: str, segments: list[str]) -> None:
    for seg in segments:
        if seg == "":
            raise ValueError(f"invalid storage {what} {value!r}: empty path segment")
        if seg.startswith("."):
            raise ValueError(f"invalid storage {what} {value!r}: segments may not start "
                             "with '.' ('.', '..' and hidden names are refused)")


def _check_chars(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"storage {what} must be str, not {type(value).__name__}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"invalid storage {what}: longer than {MAX_KEY_BYTES} bytes")
    if "\\" in value:
        raise ValueError(f"invalid storage {what} {value!r}: backslash")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"invalid storage {what} {value!r}: NUL or control character")
    if value.startswith("/"):
        raise ValueError(f"invalid storage {what} {value!r}: absolute path")


def check_key(key: str) -> str:
    """``key`` if it is a valid object key, else ValueError."""
    _check_chars(key, "key")
    if key == "":
        raise ValueError("invalid storage key: empty")
    _check_segments(key, "key", key.split("/"))
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid listing prefix, else ValueError.

    A prefix is any leading part of a key: "" (everything), ``broadcasts/b1/`` or
    ``broadcasts/b1/720p/12`` (a partial last segment, matched as a string prefix).
    """
    _check_chars(prefix, "prefix")
    if prefix == "":
        return prefix
    # Every segment, including a partial last one, follows the key rules.
    _check_segments(prefix, "prefix", prefix.removesuffix("/").split("/"))
    return prefix
