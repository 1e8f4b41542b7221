"""A player-like reader of a live broadcast, for the tests that check what players see:
the master on every fetch, every revision of every media playlist by blocking reloads
(one per new part, as hls.js and AVPlayer do), each checked by
:class:`castway.hls.watch.BroadcastWatch`, and every segment fetched and measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from castway.hls.cmaf import media_duration_s
from castway.hls.findings import Finding
from castway.hls.measured import check_bandwidth, check_durations, peak_segment_bitrate
from castway.hls.reading import MediaPlaylist, Variant, parse_media, parse_multivariant
from castway.hls.watch import BroadcastWatch
from tests.support import poll_async


@dataclass
class Seen:
    """What the player-like reader saw of one broadcast."""

    watch: BroadcastWatch = field(default_factory=BroadcastWatch)
    findings: list[Finding] = field(default_factory=list)
    first_master: str = ""
    first_master_after_s: float = 0.0
    refusals: dict[int, int] = field(default_factory=dict)  # status -> count, before it
    masters: list[str] = field(default_factory=list)
    media_s: dict[str, dict[str, float]] = field(default_factory=dict)  # rendition -> uri
    sizes: dict[str, dict[int, tuple[float, int]]] = field(default_factory=dict)
    inits: dict[str, bytes] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    # Renditions whose playlist answered 410 Gone: stopped under overload.
    stopped: set[str] = field(default_factory=set)


def next_part(playlist: MediaPlaylist) -> tuple[int, int]:
    """The (_HLS_msn, _HLS_part) a player asks for next: the part after the newest."""
    msn = playlist.media_sequence + playlist.skipped + len(playlist.segments)
    return msn, len(playlist.live_parts)


async def read_master(client: httpx.AsyncClient, seen: Seen, started: float,
                       done: asyncio.Event) -> None:
    url = "/hls/default/master.m3u8"
    while True:
        response = await client.get(url)
        if response.status_code == 200:
            break
        assert response.status_code in (404, 503), response.text
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert response.headers["cache-control"] == "public, max-age=1"
        seen.refusals[response.status_code] = seen.refusals.get(response.status_code, 0) + 1
        await asyncio.sleep(0.05)
    seen.first_master = response.text
    seen.first_master_after_s = time.monotonic() - started
    while True:
        seen.masters.append(response.text)
        seen.findings += seen.watch.observe_master(response.text)
        try:
            await asyncio.wait_for(done.wait(), 1.0)
            return
        except TimeoutError:
            pass
        response = await client.get(url)
        if response.status_code != 200:
            return  # the broadcast ended


async def read_rendition(client: httpx.AsyncClient, seen: Seen, uri: str) -> None:
    """Blocking reloads, one per part, until EXT-X-ENDLIST or the broadcast is gone."""
    name = uri.split("/")[0]
    url = httpx.URL(f"{client.base_url}/hls/default/{uri}")
    query = ""
    while True:
        response = await client.get(url.copy_with(query=query.encode() or None))
        if response.status_code == 404:
            return  # the channel is no longer live
        if response.status_code == 410:
            seen.stopped.add(name)  # a player moves to another variant
            return
        assert response.status_code == 200, (url, query, response.status_code, response.text)
        seen.revisions[name] = seen.revisions.get(name, 0) + 1
        seen.findings += seen.watch.observe_media(name, response.text)
        playlist = parse_media(response.text)
        await measure(client, seen, name, url, playlist)
        if playlist.ended:
            return
        msn, part = next_part(playlist)
        query = f"_HLS_msn={msn}&_HLS_part={part}"


async def measure(client: httpx.AsyncClient, seen: Seen, name: str, url: httpx.URL,
                   playlist: MediaPlaylist) -> None:
    """Each new segment once: its media duration and size."""
    sizes = seen.sizes.setdefault(name, {})
    durations = seen.media_s.setdefault(name, {})
    for segment in playlist.segments:
        if segment.msn in sizes:
            continue
        init_uri = segment.init_uri
        assert init_uri is not None, segment
        if init_uri not in seen.inits:
            seen.inits[init_uri] = (await client.get(url.join(init_uri))).content
        data = (await client.get(url.join(segment.uri))).content
        sizes[segment.msn] = (segment.duration, len(data))
        durations[segment.uri] = media_duration_s(seen.inits[init_uri], data)
    seen.findings += check_durations(playlist, durations)


async def publish_and_read(client: httpx.AsyncClient, ffmpeg: str, clip: Path, url: str,
                           seen: Seen, *, master_within_s: float, clip_s: float,
                           on_first_master: Callable[[], None] = lambda: None
                           ) -> list[str]:
    """Publish ``clip`` at its own pace with the ffmpeg CLI to ``url`` and read the
    broadcast as a player would, from the first master to the end of every rendition;
    returns the variant URIs of the first master. ``on_first_master`` runs once it is
    served (before the renditions are read)."""
    started = time.monotonic()
    publisher = await asyncio.create_subprocess_exec(
        ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
        "-f", "flv", url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    done = asyncio.Event()
    try:
        master = asyncio.create_task(read_master(client, seen, started, done))
        while not seen.first_master:
            await asyncio.sleep(0.05)
            assert not master.done() or master.exception() is None
            assert time.monotonic() - started < master_within_s, \
                f"no master within {master_within_s:g} s"
        on_first_master()
        uris = [v.uri for v in parse_multivariant(seen.first_master).variants]
        await asyncio.gather(*(read_rendition(client, seen, uri) for uri in uris))
        done.set()
        await master
        _, stderr = await asyncio.wait_for(publisher.communicate(), clip_s + master_within_s)
        assert publisher.returncode == 0, stderr.decode()
        return uris
    finally:
        done.set()
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()


async def check_vod(client: httpx.AsyncClient, vod_id: str, expected: set[str]
                    ) -> dict[str, float]:
    """The VOD lists the ``expected`` renditions (variants and alternative audio), each
    one whole: its EXTINFs are its media's durations, a variant's BANDWIDTH covers its
    peak. Returns each one's duration."""
    master = parse_multivariant((await client.get(f"/vod/{vod_id}/master.m3u8")).text)
    listed: list[tuple[str, Variant | None]] = [(v.uri, v) for v in master.variants]
    listed += [(a.uri, None) for a in master.audio]
    names = {uri.split("/")[0] for uri, _ in listed}
    assert names == expected, (names, expected)
    durations = {}
    for uri, variant in listed:
        sizes: list[tuple[float, int]] = []
        url = httpx.URL(f"{client.base_url}/vod/{vod_id}/{uri}")
        playlist = parse_media((await client.get(url)).text)
        assert playlist.ended
        assert {p.target_duration for p in [playlist]} == {2}
        inits: dict[str, bytes] = {}
        media: dict[str, float] = {}
        for segment in playlist.segments:
            assert segment.init_uri is not None
            if segment.init_uri not in inits:
                inits[segment.init_uri] = (await client.get(url.join(segment.init_uri))).content
            data = (await client.get(url.join(segment.uri))).content
            media[segment.uri] = media_duration_s(inits[segment.init_uri], data)
            sizes.append((segment.duration, len(data)))
        assert check_durations(playlist, media) == []
        if variant is not None:
            assert check_bandwidth(variant, peak_segment_bitrate(sizes, 2)) == [], variant
        durations[uri.split("/")[0]] = sum(s.duration for s in playlist.segments)
    return durations


async def complete_vod(client: httpx.AsyncClient, auth: dict[str, str],
                       timeout_s: float = 60) -> dict[str, Any]:
    """The first VOD the API lists as complete, once there is one."""
    async def vod() -> dict[str, Any] | None:
        got = (await client.get("/api/v1/vods", headers=auth)).json()
        return next((v for v in got if v.get("state") == "complete"), None)
    made: dict[str, Any] = await poll_async("the VOD is complete", vod, timeout_s)
    return made
