"""The source journal: what a broadcast's transcoder has not yet made durable, on disk,
so that :mod:`transcoder.salvage` can make it after the process dies.

Design: docs/transcoder.md, "The source journal and the salvage".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from castway.media import Codec, MediaKind, MediaPacket
from transcoder.replay import BREAK, Break

logger = logging.getLogger(__name__)

MAGIC = b"CWJ2"  # CWJ1 (written before multitrack ingest) had no track byte
MAGIC_V1 = b"CWJ1"
SUFFIX = ".journal"
# A journal past this size (a source without keyframes, so no boundary to restart the
# file at) stops growing; its broadcast's salvage then has what it had.
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
_KINDS = (MediaKind.VIDEO, MediaKind.AUDIO)
_CODECS = tuple(Codec)
_PACKET = struct.Struct(">BBBBqqI")  # kind, codec, flags, track, dts, pts, payload length
_PACKET_V1 = struct.Struct(">BBBqqI")  # the same without the track
_KEY, _CONFIG = 1, 2


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "journal"


def journal_path(data_dir: Path, broadcast_id: str) -> Path:
    return journal_dir(data_dir) / f"{broadcast_id}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class JournalHeader:
    """Where the journal's packets start: at a segment boundary (a source keyframe,
    after the configuration records in force there), whose segment has media sequence
    number ``msn[rendition]`` in each rendition (``default_msn`` for a rendition that
    appears later), and whether the replay must drop the transcoded rungs' audio
    stamped before ``replay_from_pts_ms`` (:class:`transcoder.pipeline.PipelineConfig`)."""

    broadcast_id: str
    msn: dict[str, int] = field(default_factory=dict)
    default_msn: int = 0
    replay_from_pts_ms: int | None = None

    def to_json(self) -> bytes:
        return json.dumps({"broadcast_id": self.broadcast_id, "msn": self.msn,
                           "default_msn": self.default_msn,
                           "replay_from_pts_ms": self.replay_from_pts_ms}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JournalHeader:
        raw = json.loads(data)
        return cls(str(raw["broadcast_id"]), {str(k): int(v) for k, v in raw["msn"].items()},
                   int(raw["default_msn"]),
                   None if raw.get("replay_from_pts_ms") is None
                   else int(raw["replay_from_pts_ms"]))


class JournalCorrupt(ValueError):
    """Not a journal, or its header is unreadable."""


def encode_item(item: MediaPacket | Break) -> bytes:
    if isinstance(item, Break):
        return b"B"
    flags = (_KEY if item.is_keyframe else 0) | (_CONFIG if item.is_config else 0)
    return b"P" + _PACKET.pack(_KINDS.index(item.kind), _CODECS.index(item.codec), flags,
                               item.track, item.dts_ms, item.pts_ms,
                               len(item.payload)) + item.payload


def read_journal(path: Path) -> tuple[JournalHeader, list[MediaPacket | Break]]:
    """The header and every whole record (a torn last record is where it ends)."""
    data = path.read_bytes()
    if data[:4] not in (MAGIC, MAGIC_V1) or len(data) < 8:
        raise JournalCorrupt(f"{path}: not a castway journal")
    (size,) = struct.unpack(">I", data[4:8])
    try:
        header = JournalHeader.from_json(data[8:8 + size])
    except (ValueError, KeyError, TypeError) as e:
        raise JournalCorrupt(f"{path}: unreadable header: {e}") from e
    return header, list(_records(data, 8 + size, with_track=data[:4] == MAGIC))


def _records(data: bytes, offset: int, *,
             with_track: bool = True) -> Iterator[MediaPacket | Break]:
    layout = _PACKET if with_track else _PACKET_V1
    while offset < len(data):
        tag = data[offset:offset + 1]
        if tag == b"B":
            offset += 1
            yield BREAK
            continue
        end = offset + 1 + layout.size
        if tag != b"P" or end > len(data):
            return
        if with_track:
            kind, codec, flags, track, dts, pts, length = layout.unpack(data[offset + 1:end])
        else:
            kind, codec, flags, dts, pts, length = layout.unpack(data[offset + 1:end])
            track = 0
        if end + length > len(data) or kind >= len(_KINDS) or codec >= len(_CODECS):
            return
        yield MediaPacket(_KINDS[kind], _CODECS[codec], bool(flags & _KEY),
                          bool(flags & _CONFIG), dts, pts, data[end:end + length], track)
        offset = end + length


class SourceJournal:
    """One broadcast's journal file, written by its transcoder supervisor."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_JOURNAL_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._size = 0
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    def rewrite(self, header: JournalHeader, items: Iterable[MediaPacket | Break]) -> None:
        """Start the journal over at ``header``'s boundary with ``items``."""
        if self._failed:
            return
        self._close_file()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            head = header.to_json()
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack(">I", len(head)) + head)
                for item in items:
                    f.write(encode_item(item))
                self._size = f.tell()
            os.replace(tmp, self.path)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept for appends
        except OSError as e:
            self._fail(e)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def append(self, item: MediaPacket | Break) -> None:
        self.append_all((item,))

    def append_all(self, items: Sequence[MediaPacket | Break]) -> None:
        if self._file is None or self._failed:
            return
        # One write for what the writer took off its queue at once (a torn last record
        # is where a read ends).
        record = b"".join(encode_item(item) for item in items)
        if self._size + len(record) > self.max_bytes:
            return  # full: the salvage gets what is there
        try:
            # Straight to the page cache (unbuffered file): a process killed between
            # writes leaves whole records behind.
            self._file.write(record)
            self._size += len(record)
        except OSError as e:
            self._fail(e)

    def remove(self) -> None:
        """The broadcast's segments are all durable: nothing left to salvage."""
        self._close_file()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """Stop writing, keep the file (for the next start's salvage)."""
        self._close_file()

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _fail(self, error: OSError) -> None:
        self._failed = True
        self._close_file()
        logger.error("source journal unwritable: a crash of this process would lose "
                     "the media in progress", extra={"path": str(self.path),
                                                     "error": str(error)})
