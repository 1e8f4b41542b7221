"""Restream targets: an ``rtmp://`` or ``rtmps://`` URL and a stream key, as a service
shows them (YouTube: ``rtmp://a.rtmp.youtube.com/live2`` + key; Twitch:
``rtmp://live.twitch.tv/app`` + key), or as one URL with the key as its last path
element (what OBS's "Server" + "Stream Key" make together)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from castway.model import utcnow

MAX_URL = 2000
MAX_KEY = 500
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


class InvalidTarget(ValueError):
    """A URL or key that cannot be a restream target (the message says why)."""


@dataclass(frozen=True, slots=True)
class TargetAddress:
    """Where to publish: ``rtmp[s]://host[:port]/app`` and the stream name (the key)."""

    scheme: str  # "rtmp" or "rtmps"
    host: str
    port: int
    app: str  # may hold slashes (``live2``, ``app/sub``)
    key: str

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def tc_url(self) -> str:
        """The URL without the key: ``connect``'s tcUrl, and what the API shows."""
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port != DEFAULT_PORTS[self.scheme]:
            netloc += f":{self.port}"
        return f"{self.scheme}://{netloc}/{self.app}"


def parse_target(url: str, key: str | None = None) -> TargetAddress:
    """The address of a target. Without ``key`` the last path element of ``url`` is
    the key; with one, the whole path is the application. Raises
    :class:`InvalidTarget`."""
    if len(url) > MAX_URL:
        raise InvalidTarget(f"URL longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise InvalidTarget(f"not a URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidTarget("the URL must start with rtmp:// or rtmps://")
    if not parts.hostname:
        raise InvalidTarget("the URL has no host")
    if parts.username or parts.password:
        raise InvalidTarget("credentials in the URL are not supported; give the key")
    path = parts.path.strip("/")
    if parts.query:
        # Some services (Facebook's old URLs) put part of the key in a query string.
        path += "?" + parts.query
    if key is None:
        app, _, key = path.rpartition("/")
        if not app or not key:
            raise InvalidTarget("the URL needs an application and a stream key: "
                                "rtmp://host/app/KEY, or give the key separately")
    else:
        app = path
        if not app:
            raise InvalidTarget("the URL has no application (rtmp://host/app)")
    key = key.strip()
    if not key or len(key) > MAX_KEY or any(c.isspace() for c in key):
        raise InvalidTarget(f"the stream key must be 1 to {MAX_KEY} characters, no spaces")
    return TargetAddress(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], app, key)


def mask_key(key: str) -> str:
    """What the API shows of a key: its last four characters when it is long enough for
    them to give nothing away, else nothing."""
    return f"****{key[-4:]}" if len(key) >= 16 else "****"


@dataclass(frozen=True, slots=True)
class RestreamTarget:
    """A channel's restream target as the catalog keeps it: the URL without the key,
    the key sealed (:mod:`castway.restream.sealing`), and its mask for display."""

    id: str
    channel: str
    url: str  # TargetAddress.tc_url: no key
    sealed_key: str
    key_mask: str
    created_at: datetime = field(default_factory=utcnow)

    @property
    def display_url(self) -> str:
        return f"{self.url}/{self.key_mask}"


class TargetState(StrEnum):
    """What a target's sender is doing (the API's and the metrics' ``state``)."""

    WAITING = "waiting"  # for the broadcast's first media
    CONNECTING = "connecting"
    LIVE = "live"  # publishing: media flows
    RETRYING = "retrying"  # the connection failed; waiting out the backoff
    REFUSED = "refused"  # cannot ever work for this broadcast (codec, key): given up
    STOPPED = "stopped"  # the broadcast ended


__all__ = ["InvalidTarget", "RestreamTarget", "TargetAddress", "TargetState", "mask_key",
           "parse_target"]
