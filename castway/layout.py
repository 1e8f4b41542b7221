"""The storage key layout: where every object of a broadcast lives. Keys are built and
parsed here and nowhere else, and ``parse_key(str(k)) == k``.

Design: docs/storage.md, "Key layout".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

ROOT = "broadcasts"

# A broadcast id or rendition name: one path segment of a key and of a URL.
COMPONENT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_COMPONENT = re.compile(COMPONENT_PATTERN)

SEGMENT_EXTENSIONS = frozenset({"m4s", "ts"})  # CMAF, MPEG-TS


class BroadcastFile(StrEnum):
    """The objects of a broadcast outside its renditions."""

    MASTER = "master.m3u8"
    POSTER = "poster.jpg"
    SPRITE = "thumbs.jpg"
    SPRITE_VTT = "thumbs.vtt"
    EXPORT = "export.mp4"


class RenditionFile(StrEnum):
    """The objects of a rendition that are not media."""

    VOD_PLAYLIST = "vod.m3u8"


def valid_component(value: str) -> bool:
    """Whether ``value`` may be a broadcast id or rendition name."""
    return _COMPONENT.fullmatch(value) is not None


def check_component(value: str, what: str) -> str:
    if not valid_component(value):
        raise ValueError(f"invalid {what} {value!r}: 1 to 64 of A-Z a-z 0-9 '_' '-'")
    return value


def _check_number(value: int, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"invalid {what} {value!r}: an integer >= {minimum}")


def _check_ext(ext: str) -> None:
    if ext not in SEGMENT_EXTENSIONS:
        raise ValueError(f"invalid segment extension {ext!r}: one of "
                         f"{', '.join(sorted(SEGMENT_EXTENSIONS))}")


# -- names inside a rendition's directory -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentName:
    msn: int
    ext: str = "m4s"

    def __post_init__(self) -> None:
        _check_number(self.msn, "media sequence number")
        _check_ext(self.ext)

    def __str__(self) -> str:
        return f"{self.msn}.{self.ext}"


@dataclass(frozen=True, slots=True)
class PartName:
    msn: int
    index: int
    ext: str = "m4s"

    def __post_init__(self) -> None:
        _check_number(self.msn, "media sequence number")
        _check_number(self.index, "part index")
        _check_ext(self.ext)

    def __str__(self) -> str:
        return f"{self.msn}.{self.index}.{self.ext}"


@dataclass(frozen=True, slots=True)
class InitName:
    """Generation 0 is ``init.mp4``; a changed init segment gets the next generation, so
    a key a CDN may have cached is never rewritten."""

    generation: int = 0

    def __post_init__(self) -> None:
        _check_number(self.generation, "init generation")

    def __str__(self) -> str:
        return "init.mp4" if self.generation == 0 else f"init.{self.generation}.mp4"


MediaName = SegmentName | PartName | InitName | RenditionFile

_NUMBER = r"(0|[1-9][0-9]*)"  # one spelling per number
_SEGMENT_NAME = re.compile(rf"{_NUMBER}\.(m4s|ts)")
_PART_NAME = re.compile(rf"{_NUMBER}\.{_NUMBER}\.(m4s|ts)")
_INIT_NAME = re.compile(r"init(?:\.([1-9][0-9]*))?\.mp4")


def parse_media_name(name: str) -> MediaName | None:
    """The object a name inside a rendition's directory names, None for any other name."""
    if match := _SEGMENT_NAME.fullmatch(name):
        return SegmentName(int(match[1]), match[2])
    if match := _PART_NAME.fullmatch(name):
        return PartName(int(match[1]), int(match[2]), match[3])
    if match := _INIT_NAME.fullmatch(name):
        return InitName(int(match[1]) if match[1] else 0)
    try:
        return RenditionFile(name)
    except ValueError:
        return None


def rendition_key(directory: str, rendition: str, name: MediaName) -> str:
    """A rendition's object under ``directory``: a broadcast's (:func:`broadcast_dir`) in
    storage, or wherever a broadcast is written as files (``""``: ``castway transcode``'s
    output directory)."""
    check_component(rendition, "rendition name")
    return f"{directory}/{rendition}/{name}" if directory else f"{rendition}/{name}"


# -- whole keys ---------------------------------------------------------------------------------

def broadcast_dir(broadcast_id: str) -> str:
    """``broadcasts/{broadcast_id}``: the directory of every object of a broadcast."""
    return f"{ROOT}/{check_component(broadcast_id, 'broadcast id')}"


def broadcast_prefix(broadcast_id: str) -> str:
    """The listing prefix of every object of a broadcast (and nothing of another)."""
    return broadcast_dir(broadcast_id) + "/"


@dataclass(frozen=True, slots=True)
class RenditionKey:
    broadcast_id: str
    rendition: str
    name: MediaName

    def __post_init__(self) -> None:
        check_component(self.broadcast_id, "broadcast id")
        check_component(self.rendition, "rendition name")

    def __str__(self) -> str:
        return rendition_key(broadcast_dir(self.broadcast_id), self.rendition, self.name)


@dataclass(frozen=True, slots=True)
class BroadcastKey:
    broadcast_id: str
    file: BroadcastFile

    def __post_init__(self) -> None:
        check_component(self.broadcast_id, "broadcast id")

    def __str__(self) -> str:
        return f"{broadcast_dir(self.broadcast_id)}/{self.file}"


StorageKey = RenditionKey | BroadcastKey


def parse_key(key: str) -> StorageKey | None:
    """The object ``key`` names in the layout, None for a key outside it."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != ROOT or not valid_component(parts[1]):
        return None
    if len(parts) == 3:
        try:
            return BroadcastKey(parts[1], BroadcastFile(parts[2]))
        except ValueError:
            return None
    if len(parts) == 4 and valid_component(parts[2]):
        name = parse_media_name(parts[3])
        if name is not None:
            return RenditionKey(parts[1], parts[2], name)
    return None


def broadcast_of(key: str) -> str | None:
    """The id of the broadcast whose directory holds ``key`` (any object in it, even one
    :func:`parse_key` does not know), else None."""
    parts = key.split("/", 2)
    if len(parts) == 3 and parts[0] == ROOT and valid_component(parts[1]) and parts[2]:
        return parts[1]
    return None


def init_generation(key: str) -> int | None:
    """The generation of an init segment's key (``init.mp4`` is 0), None for another key."""
    name = parse_media_name(key.rsplit("/", 1)[-1])
    return name.generation if isinstance(name, InitName) else None


# -- builders for each kind of object -----------------------------------------------------------

def segment_key(broadcast_id: str, rendition: str, msn: int, ext: str) -> str:
    return str(RenditionKey(broadcast_id, rendition, SegmentName(msn, ext)))


def init_key(broadcast_id: str, rendition: str, generation: int) -> str:
    return str(RenditionKey(broadcast_id, rendition, InitName(generation)))


def media_playlist_key(broadcast_id: str, rendition: str) -> str:
    """The VOD media playlist of a rendition."""
    return str(RenditionKey(broadcast_id, rendition, RenditionFile.VOD_PLAYLIST))


def master_key(broadcast_id: str) -> str:
    """The VOD multivariant playlist."""
    return str(BroadcastKey(broadcast_id, BroadcastFile.MASTER))


def poster_key(broadcast_id: str) -> str:
    return str(BroadcastKey(broadcast_id, BroadcastFile.POSTER))


def sprite_key(broadcast_id: str) -> str:
    return str(BroadcastKey(broadcast_id, BroadcastFile.SPRITE))


def sprite_vtt_key(broadcast_id: str) -> str:
    return str(BroadcastKey(broadcast_id, BroadcastFile.SPRITE_VTT))


def export_key(broadcast_id: str) -> str:
    return str(BroadcastKey(broadcast_id, BroadcastFile.EXPORT))
