"""What the benchmarks (``castway bench ...``) and the tests share: free loopback ports,
waiting for a server to listen, where the reference peers' start scripts live, and the
ffmpeg command of a multitrack test clip."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# The nginx-rtmp peer script sits in the team's shared folder beside the checkout
# (``../shared/peers/``); /work/shared is where that folder lives on the dev machines.
_PEER_DIRS = (Path(__file__).resolve().parents[2] / "shared" / "peers",
              Path("/work/shared/peers"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1", *,
               avoid: frozenset[int] = frozenset()) -> tuple[int, ...]:
    """``count`` distinct free ports, none in ``avoid``. Each socket stays bound until all
    are chosen: ``free_port()`` twice in a row can be handed the same port (the kernel
    may reuse the one just released), and two servers then fight over it."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return tuple(ports)


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


def peer_script(name: str) -> Path | None:
    """The shared folder's ``peers/NAME`` start script, if this machine has it."""
    for directory in _PEER_DIRS:
        path = directory / name
        if path.exists():
            return path
    return None


NGINX_RTMP = "nginx-rtmp.sh"


@dataclass(frozen=True, slots=True)
class ClipTrack:
    """One video stream of a multitrack clip (an encoder-sent ladder's track)."""

    width: int
    height: int
    gop: int  # keyframe interval, in frames
    fps: Fraction | None = None  # None: the pattern's own rate
    kbps: int | None = None  # None: the encoder's default rate control
    codec: str = "libx264"


def multitrack_clip_command(ffmpeg: str, path: Path, tracks: Sequence[ClipTrack], *,
                            fps: int, seconds: float, video_args: Sequence[str],
                            audio_args: Sequence[str], audio_tracks: int = 1) -> list[str]:
    """ffmpeg making one test pattern (testsrc2, the first track's size) into one video
    stream per track, the first being track 0, plus ``audio_tracks`` sine tones (440 Hz,
    then 660, 880, ...: audio track 0, 1, 2, ...): what OBS Multitrack Video sends, as a
    file. ``video_args`` apply to every stream (encoder, preset), ``audio_args`` to the
    audio."""
    split = "".join(f"[s{i}]" for i in range(len(tracks)))
    graph = f"[0:v]split={len(tracks)}{split}"
    for i, t in enumerate(tracks):
        rate = f"fps={t.fps}," if t.fps is not None else ""
        graph += f";[s{i}]{rate}scale={t.width}:{t.height}[v{i}]"
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={tracks[0].width}x{tracks[0].height}:rate={fps}"]
    for a in range(audio_tracks):
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={440 + 220 * a}:sample_rate=48000"]
    cmd += ["-filter_complex", graph]
    for i in range(len(tracks)):
        cmd += ["-map", f"[v{i}]"]
    for a in range(audio_tracks):
        cmd += ["-map", f"{1 + a}:a"]
    cmd += ["-t", str(seconds), *video_args]
    for i, t in enumerate(tracks):
        if t.kbps is not None:
            cmd += [f"-b:v:{i}", f"{t.kbps}k", f"-maxrate:v:{i}", f"{t.kbps}k",
                    f"-bufsize:v:{i}", f"{2 * t.kbps}k"]
        cmd += [f"-g:v:{i}", str(t.gop), f"-keyint_min:v:{i}", str(t.gop)]
        if t.codec != "libx264":
            cmd += [f"-c:v:{i}", t.codec]
        if t.codec == "libx265":
            cmd += [f"-x265-params:v:{i}", "log-level=error:bframes=0", f"-tag:v:{i}", "hvc1"]
    return [*cmd, *audio_args, str(path)]
