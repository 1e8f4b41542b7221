"""The HTTP side of ``castway check``: follows a stream as a player would and feeds what it
fetched to the kernel's sans-IO :class:`~castway.hls.watch.BroadcastWatch`, which holds
every rule.

It reloads the Multivariant Playlist and every Media Playlist for ``seconds`` (a live
stream; a VOD or an ended stream is read once), fetches each segment once as it appears,
probes it with PyAV, and stops. ``fetch`` and the clock are parameters, so tests (and a
future async follower) can swap them.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from castway.hls.reading import (
    MediaPlaylist,
    MultivariantPlaylist,
    is_multivariant,
    is_playlist,
    parse_media,
    parse_multivariant,
)
from castway.hls.watch import BroadcastWatch
from conformance.segments import probe_segment

#: One request's timeout: a live origin that takes longer is as good as down for a player.
FETCH_TIMEOUT_S = 10.0
#: The fastest reload: rfc8216bis 6.3.4 has a client wait half a target duration when a
#: playlist did not change; a zero or missing target duration must not make us spin.
MIN_RELOAD_S = 0.5
USER_AGENT = "castway-check"


class FetchError(Exception):
    """A URL the stream lists could not be fetched."""


class PlaylistError(Exception):
    """What was fetched is not an HLS playlist at all (no #EXTM3U)."""


Fetch = Callable[[str], bytes]


def http_get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as e:
        raise FetchError(f"HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(str(getattr(e, "reason", e))) from e


@dataclass
class Run:
    """What was followed, for the report's header."""

    url: str
    master: bool = False
    live: bool = False
    renditions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    playlists: int = 0
    segments: int = 0


@dataclass
class _Follow:
    url: str
    next_due: float = 0.0
    ended: bool = False
    probed: set[int] = field(default_factory=set)


def check_stream(url: str, *, seconds: float, fetch: Fetch = http_get,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 max_segments: int | None = None) -> tuple[BroadcastWatch, Run]:
    """Follow ``url`` (a Multivariant or a Media Playlist) for ``seconds`` and check it."""
    checker = BroadcastWatch()
    run = Run(url)
    start = clock()
    deadline = start + seconds
    try:
        text = fetch(url).decode("utf-8", errors="replace")
    except FetchError as e:
        checker.unreachable(url, f"cannot fetch the playlist: {e}")
        return checker, run
    run.playlists += 1
    follows: list[_Follow] = []
    inits: dict[str, bytes] = {}
    next_master = start
    try:
        if is_multivariant(_playlist_text(url, text)):
            run.master = True
            master = parse_multivariant(text, url)
            checker.read_master(master)
            # Every media playlist a player may load: the variants and audio renditions.
            follows = [_Follow(u) for u in dict.fromkeys(
                [*(v.uri for v in master.variants), *(a.uri for a in master.audio)])]
            next_master = start + 2 * MIN_RELOAD_S
        else:  # a Media Playlist: this fetch is its first load
            follows = [_Follow(url)]
            first = parse_media(text, url)
            checker.read_media(first)
            run.live = not first.ended
            follows[0].ended = first.ended
            _probe_new(checker, run, fetch, first, follows[0], inits, max_segments)
            follows[0].next_due = clock() + _reload_after(first)
    except PlaylistError as e:
        checker.unreachable(url, str(e))
        return checker, run
    run.renditions = [f.url for f in follows]
    first_round = run.master
    while True:
        now = clock()
        for follow in follows:
            if follow.ended or now < follow.next_due:
                continue
            playlist = _reload(checker, run, fetch, follow.url)
            if playlist is None:
                follow.next_due = clock() + MIN_RELOAD_S
                continue
            follow.ended = playlist.ended
            if first_round and not playlist.ended:
                run.live = True
            budget = None if max_segments is None else max_segments - len(follow.probed)
            _probe_new(checker, run, fetch, playlist, follow, inits, budget)
            follow.next_due = clock() + _reload_after(playlist)
        first_round = False
        now = clock()
        if now >= deadline or all(f.ended for f in follows):
            break
        if run.master and now >= next_master:
            try:
                master = _master(url, fetch(url).decode("utf-8", "replace"))
                checker.read_master(master)
                run.playlists += 1
            except (FetchError, PlaylistError) as e:
                checker.unreachable(url, f"reloading the master: {e}")
            else:  # a variant added later is followed too (and reported as a change)
                for variant in master.variants:
                    if variant.uri not in run.renditions:
                        run.renditions.append(variant.uri)
                        follows.append(_Follow(variant.uri))
            next_master = clock() + 2 * MIN_RELOAD_S
        due = min([f.next_due for f in follows if not f.ended] + [deadline])
        sleep(max(0.0, min(due, deadline) - clock()))
    checker.finish()
    run.seconds = clock() - start
    return checker, run


def _playlist_text(url: str, text: str) -> str:
    if not is_playlist(text):
        raise PlaylistError(f"{url}: not an HLS playlist (the first line is not #EXTM3U)")
    return text


def _master(url: str, text: str) -> MultivariantPlaylist:
    return parse_multivariant(_playlist_text(url, text), url)


def _reload_after(playlist: MediaPlaylist) -> float:
    return max(MIN_RELOAD_S, (playlist.target_duration or 0) / 2)


def _reload(checker: BroadcastWatch, run: Run, fetch: Fetch, url: str) -> MediaPlaylist | None:
    try:
        playlist = parse_media(_playlist_text(url, fetch(url).decode("utf-8", errors="replace")),
                               url)
    except (FetchError, PlaylistError) as e:
        checker.unreachable(url, f"cannot load the media playlist: {e}")
        return None
    run.playlists += 1
    checker.read_media(playlist)
    return playlist


def _probe_new(checker: BroadcastWatch, run: Run, fetch: Fetch, playlist: MediaPlaylist,
               follow: _Follow, inits: dict[str, bytes], budget: int | None) -> None:
    for segment in playlist.segments:
        if segment.msn in follow.probed:
            continue
        if budget is not None and budget <= 0:
            return
        follow.probed.add(segment.msn)
        try:
            init = None
            if segment.init_uri is not None:
                if segment.init_uri not in inits:
                    inits[segment.init_uri] = fetch(segment.init_uri)
                init = inits[segment.init_uri]
            data = fetch(segment.uri)
        except FetchError as e:
            checker.unreachable(segment.uri, f"segment {segment.msn}: {e}")
            continue
        run.segments += 1
        checker.read_segment(playlist, segment, probe_segment(data, init))
        if budget is not None:
            budget -= 1
