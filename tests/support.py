"""Helpers shared by the whole test suite: real tools, free ports, generated media.

In CI (``CI=true``) a missing tool or service is a failure, never a silent skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI

from benchmarks.kit import (
    ClipTrack,
    free_port,
    free_ports,
    multitrack_clip_command,
    peer_script,
    wait_for_port,
)

__all__ = ["IN_CI", "free_port", "free_ports", "make_test_media", "require_hls_js",
           "require_peer_script", "require_tool", "serve_app", "wait_for_port"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of executable ``name``; skips locally, fails in CI, when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"required tool {name!r} is not installed (see .ci/run)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """``app`` under uvicorn (lifespan on) on 127.0.0.1:``port`` (0: a free one), the way
    castway's processes run it (:class:`launch.http_server.HttpServer`); yields its base URL."""
    from castway.net import bind_socket
    from launch.http_server import HttpServer

    http = HttpServer(app, bind_socket("127.0.0.1", port))
    await http.start()
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await http.stop()


def require_hls_js() -> Path:
    """The vendored hls.js the watch pages load (skip locally, fail in CI, when missing)."""
    from origin import pages

    if not pages.HLS_JS.exists():
        message = "hls.js is not installed (sh web/install.sh, run by make install)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return pages.HLS_JS


def require_peer_script(name: str) -> Path:
    """A reference peer's start script from the shared folder (skip locally, fail in CI)."""
    path = peer_script(name)
    if path is None:
        message = f"peer script {name!r} not found beside the checkout (../shared/peers)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_test_media(path: Path, *, seconds: float = 4.0, width: int = 640, height: int = 360,
                    fps: int = 30, gop: int | None = None, audio: bool = True,
                    vcodec: str = "libx264", extra_args: tuple[str, ...] = ()) -> Path:
    """Generate a test clip (moving test pattern + sine tone) with the ffmpeg CLI.

    ``gop`` is the keyframe interval in frames (default: 2 s worth). The container follows
    ``path``'s suffix (.flv, .mp4, .ts, .mkv).
    """
    ffmpeg = require_tool("ffmpeg")
    gop = gop or 2 * fps
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-c:v", vcodec, "-g", str(gop), "-keyint_min", str(gop),
            "-pix_fmt", "yuv420p"]
    if vcodec == "libx264":
        cmd += ["-preset", "ultrafast", "-tune", "zerolatency", "-sc_threshold", "0",
                "-bf", "0"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    cmd += [*extra_args, str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_multitrack_media(path: Path, sizes: tuple[tuple[int, int], ...], *,
                          seconds: float = 4.0, fps: int = 30,
                          gops: tuple[int, ...] | None = None,
                          codecs: tuple[str, ...] | None = None,
                          audio_tracks: int = 1) -> Path:
    """One test pattern at several sizes, one H.264 video stream each (the first is the
    broadcast, the others an encoder-sent ladder, as OBS Multitrack Video sends it), and
    AAC. ``gops``: each stream's keyframe interval in frames (default: all 2 s, aligned
    as one encoder sends them); ``codecs``: each stream's encoder (default libx264);
    ``audio_tracks``: AAC streams, each its own tone (the first is the broadcast's); the
    container follows ``path``'s suffix (.mkv, .flv)."""
    gops = gops or (2 * fps,) * len(sizes)
    codecs = codecs or ("libx264",) * len(sizes)
    tracks = [ClipTrack(w, h, gop, codec=codec)
              for (w, h), gop, codec in zip(sizes, gops, codecs, strict=True)]
    cmd = multitrack_clip_command(
        require_tool("ffmpeg"), path, tracks, fps=fps, seconds=seconds,
        video_args=("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                    "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"),
        audio_args=("-c:a", "aac", "-b:a", "96k", "-ac", "2"), audio_tracks=audio_tracks)
    subprocess.run(cmd, check=True)
    return path


def packet_counts(url: str) -> dict[str, list[int]]:
    """Packets per stream type as ffmpeg's demuxer (HLS for a playlist) reads them, one
    count per stream of that type (``{"video": [...], "audio": [...]}``)."""
    probe = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,nb_read_packets", "-of", "json", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    counts: dict[str, list[int]] = {}
    for stream in json.loads(probe.stdout)["streams"]:
        counts.setdefault(stream["codec_type"], []).append(int(stream["nb_read_packets"]))
    return counts


T = TypeVar("T")


def poll(what: str, fn: Callable[[], T | None], timeout_s: float) -> T:
    """``fn()`` until it returns something truthy (watching processes from outside)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def poll_async(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float,
                     *, every_s: float = 0.25) -> Any:
    """:func:`poll` for a coroutine: ask ``check`` every ``every_s`` until it returns
    something true (returned), or fail saying ``what`` did not come within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what} ({timeout_s:g} s)")


async def finish_process(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for a publisher (or any child) to end by itself, successfully; killed and
    reaped whatever happens, so that no test leaves it behind."""
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
