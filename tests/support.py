"""Helpers shared by the whole test suite: real tools, free ports, generated media.

In CI (``CI=true``) a missing tool or service is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 15.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts on host:port (a server we started is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


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
