"""Real web players against castway: hls.js, Shaka Player and video.js (VHS), from npm
(``web/install.sh`` puts their builds in ``origin/static/vendor``), each on a page of
another origin than castway's, in headless Chromium (:mod:`benchmarks.browser`).

The page is ``benchmarks/player_harness.js`` plus the player's script, fetched from the
castway origin as any site embedding castway would; the harness samples, every 100 ms,
the playing position, the latency (wall clock minus the EXT-X-PROGRAM-DATE-TIME of the
playing position: castway dates a segment by the ingest arrival of its first keyframe,
so this is ingest-to-screen latency), the player's own latency estimate, the height of
the frames on screen, and counts stalls (``waiting`` after playback started, not while
seeking) and errors.

Used by ``castway bench latency --players`` and by ``tests/test_players.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from benchmarks.browser import Browser, Page
from origin.pages import STATIC_DIR

PLAYERS = ("hls.js", "shaka", "videojs")
SCRIPTS = {"hls.js": "hls.min.js", "shaka": "shaka-player.js", "videojs": "video.min.js"}
VENDOR = STATIC_DIR / "vendor"
HARNESS = Path(__file__).with_name("player_harness.js")
MAX_REQUEST_BYTES = 16384


def installed(player: str) -> bool:
    return (VENDOR / SCRIPTS[player]).exists()


def page_html(player: str, origin: str) -> str:
    """The page of ``player``, loading its build from castway at ``origin``."""
    script = f"{origin}/static/vendor/{SCRIPTS[player]}"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(player)}</title>"
            f"</head><body data-player='{escape(player)}'>"
            "<video id=video muted autoplay playsinline width=640 height=360></video>"
            f"<script src='{escape(script)}'></script>"
            f"<script>{HARNESS.read_text()}</script></body></html>")


@contextlib.asynccontextmanager
async def serve_pages(origin: str) -> AsyncIterator[str]:
    """The player pages (``/<player>``) on a port of their own: another origin than
    castway's ``origin``, as a site embedding castway is. Yields the pages' base URL."""
    pages = {f"/{p}": page_html(p, origin).encode() for p in PLAYERS}
    open_writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            path = parts[1].decode(errors="replace") if len(parts) > 2 else ""
            body = pages.get(path.split("?", 1)[0])
            status = "200 OK" if body is not None else "404 Not Found"
            body = body if body is not None else b"not found"
            writer.write(f"HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n"
                         f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            open_writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=MAX_REQUEST_BYTES)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in list(open_writers):  # Chromium's idle pre-connections
            writer.close()
        await server.wait_closed()


def renditions_by_height(master: str) -> dict[int, str]:
    """{height: rendition directory} of a castway multivariant playlist."""
    out: dict[int, str] = {}
    height: int | None = None
    for line in master.splitlines():
        if line.startswith("#EXT-X-STREAM-INF:"):
            match = re.search(r"RESOLUTION=\d+x(\d+)", line)
            height = int(match.group(1)) if match else None
        elif line and not line.startswith("#") and height is not None:
            out[height] = line.split("/", 1)[0]
            height = None
    return out


class PlayerFailed(AssertionError):
    """A player did not do what a scenario waited for (the message has its state)."""


@dataclass(frozen=True, slots=True)
class Playback:
    """What one player did over a run."""

    player: str
    latencies: tuple[float, ...]  # s, wall clock minus PROGRAM-DATE-TIME, after start
    estimates: tuple[float, ...]  # s, the player's own latency figure
    stalls: int  # `waiting` after playback started, not while seeking
    errors: tuple[str, ...]  # fatal errors
    warnings: tuple[str, ...]  # errors the player recovered from
    manifest_retries: int  # master requests retried before the broadcast had media
    startup_s: float  # from start() to the first `playing`

    @property
    def median_latency_s(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    def latency_percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class PlayerPage:
    """One player on its page, driven over CDP."""

    def __init__(self, page: Page, player: str) -> None:
        self.page = page
        self.player = player
        self.started_at_ms = 0.0

    @classmethod
    async def open(cls, browser: Browser, pages: str, player: str, src: str) -> PlayerPage:
        page = await browser.new_page()
        await page.goto(f"{pages}/{player}")
        opened = cls(page, player)
        opened.started_at_ms = float(await page.evaluate("Date.now()"))
        await page.evaluate(f"harness.start({json.dumps(src)})")
        return opened

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.page.connection.send("Target.closeTarget",
                                            {"targetId": self.page.target_id})

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.page.evaluate("harness.state")
        return state

    async def wait_for(self, condition: str, timeout_s: float) -> None:
        """Until the JS expression ``condition`` (over ``state``) holds."""
        try:
            await self.page.evaluate(
                f"harness.waitFor({json.dumps(condition)}, {int(timeout_s * 1000)})",
                await_promise=True, timeout_s=timeout_s + 10)
        except Exception as exc:
            raise PlayerFailed(f"{self.player}: {exc}; page errors {self.page.errors}; "
                               f"console {self.page.console[-10:]}") from exc

    async def wait_played(self, seconds: float, timeout_s: float) -> None:
        """Until ``seconds`` of media played since playback started."""
        await self.wait_for(
            "(() => { const p = state.samples.filter(x => state.playing && "
            "x.at >= state.firstPlayingAt); "
            f"return p.length > 1 && p[p.length - 1].t - p[0].t >= {seconds}; }})()",
            timeout_s)

    async def levels(self) -> list[dict[str, Any]]:
        levels: list[dict[str, Any]] = await self.page.evaluate("harness.levels()")
        return levels

    async def switch_to_height(self, height: int, *, played_s: float,
                               timeout_s: float) -> None:
        """Force the rendition of ``height`` through the player's API, then wait until
        frames of that height have played ``played_s`` seconds."""
        index = next((lv["index"] for lv in await self.levels() if lv["height"] == height),
                     None)
        if index is None:
            raise PlayerFailed(f"{self.player}: no level of height {height}: "
                               f"{await self.levels()}")
        await self.page.evaluate(f"harness.switchTo({index})")
        await self.wait_for(
            "(() => { const p = state.samples.filter(x => x.at >= state.switchedAt && "
            f"x.height === {height}); "
            f"return p.length > 1 && p[p.length - 1].t - p[0].t >= {played_s}; }})()",
            timeout_s)

    async def audio_tracks(self) -> list[dict[str, Any]] | None:
        """The master's audio renditions as the player lists them ({index, name,
        default}); None where the harness does not drive this player's audio."""
        tracks: list[dict[str, Any]] | None = await self.page.evaluate("harness.audioTracks()")
        return tracks

    async def switch_audio(self, name: str, *, rendition: str, played_s: float,
                           timeout_s: float) -> None:
        """Play the audio rendition ``name`` (the master's NAME) through the player's API,
        then wait until media of ``rendition`` (its media playlist's directory) has been
        fetched and ``played_s`` seconds have played since the switch."""
        tracks = await self.audio_tracks()
        index = next((t["index"] for t in tracks or [] if t["name"] == name), None)
        if index is None:
            raise PlayerFailed(f"{self.player}: no audio rendition {name}: {tracks}")
        await self.page.evaluate(f"harness.switchAudio({index})")
        needle = json.dumps(f"/{rendition}/")
        await self.wait_for(
            f"(() => {{ const got = harness.fetched({needle}).filter(u => "
            "u.split('?')[0].endsWith('.m4s') && u.indexOf('init') < 0); "
            "const p = state.samples.filter(x => x.at >= state.audioSwitchedAt && "
            "!x.waiting); "
            f"return got.length > 0 && p.length > 1 && p[p.length - 1].t - p[0].t >= "
            f"{played_s}; }})()", timeout_s)

    async def media_fetched(self, rendition: str) -> list[str]:
        """Media (.m4s, not init) of ``rendition`` the player requested (ABR may have
        fetched some before a forced switch)."""
        urls: list[str] = await self.page.evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)")
        return [u for u in urls if f"/{rendition}/" in u
                and u.split("?", 1)[0].endswith(".m4s") and "init" not in u]

    async def playback(self, *, settle_s: float = 0.0,
                       until_ms: float | None = None) -> Playback:
        """The run so far, latencies from ``settle_s`` after the first frame played (and
        before ``until_ms``, wall clock, if given)."""
        state = await self.state()
        return playback_of(self.player, state, self.started_at_ms, settle_s=settle_s,
                           until_ms=until_ms)


def playback_of(player: str, state: Mapping[str, Any], started_at_ms: float, *,
                settle_s: float = 0.0, until_ms: float | None = None) -> Playback:
    first = state.get("firstPlayingAt")
    samples = [s for s in state.get("samples", [])
               if first is not None and s["at"] >= first + settle_s * 1000
               and (until_ms is None or s["at"] < until_ms)]
    return Playback(
        player=player,
        latencies=tuple(s["latency"] for s in samples if s.get("latency") is not None),
        estimates=tuple(s["estimate"] for s in samples if s.get("estimate") is not None),
        stalls=int(state.get("stalls", 0)),
        errors=tuple(state.get("errors", ())),
        warnings=tuple(state.get("warnings", ())),
        manifest_retries=int(state.get("manifestRetries", 0)),
        startup_s=(first - started_at_ms) / 1000 if first is not None else float("nan"))
