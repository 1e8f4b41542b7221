"""The fixture streams of ``tests/conformance/streams`` served as a live server would.

Each scenario folder is one stream. ``NAME@N.EXT`` is what the N-th fetch of ``NAME.EXT``
returns (the last version stays once reached), so a folder can script a live playlist's
reloads. Segment files are not kept in git: they are generated once per session with the
ffmpeg CLI (1 s GOPs, 1 s segments) and served by name from any folder.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import make_test_media, require_tool

STREAMS = Path(__file__).parent / "streams"
#: The segment set's measured figures the fixture playlists were written for.
SEGMENTS = 8


def _segment(source: Path, out: Path, pattern: str, *flags: str) -> None:
    import subprocess

    subprocess.run([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-i",
                    str(source), "-c", "copy", "-f", "hls", "-hls_list_size", "0", *flags,
                    "-hls_segment_filename", str(out / pattern), str(out / f"{pattern}.m3u8")],
                   check=True)


@pytest.fixture(scope="session")
def segment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seg0..7.ts (1 s each, one timeline), pair0..3.ts (2 s each, the same timeline),
    nokey0..2.ts (cut every second in a 2 s GOP: nokey1 starts without a keyframe) and
    junk.ts (not media)."""
    out = tmp_path_factory.mktemp("segments")
    clip = make_test_media(out / "clip.mp4", seconds=8, width=320, height=180, gop=30,
                           extra_args=("-profile:v", "baseline", "-level", "3.0", "-b:v",
                                       "300k", "-maxrate", "300k", "-bufsize", "150k",
                                       "-b:a", "64k"))
    _segment(clip, out, "seg%d.ts", "-hls_time", "1")
    _segment(clip, out, "pair%d.ts", "-hls_time", "2")
    drought = make_test_media(out / "gop2.mp4", seconds=3, width=320, height=180, gop=60,
                              audio=False)
    _segment(drought, out, "nokey%d.ts", "-hls_time", "1", "-hls_flags", "split_by_time")
    (out / "junk.ts").write_bytes(b"this is not an MPEG transport stream\n" * 500)
    return out


class _Handler(BaseHTTPRequestHandler):
    server: _FixtureServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.resolve(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _FixtureServer(ThreadingHTTPServer):
    def __init__(self, segments: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.segments = segments
        self.fetches: Counter[str] = Counter()
        self.lock = threading.Lock()

    def resolve(self, path: str) -> bytes | None:
        file = (STREAMS / path.lstrip("/")).resolve()
        if STREAMS.resolve() not in file.parents:
            return None
        if file.suffix == ".m3u8":
            with self.lock:
                self.fetches[path] += 1
                n = self.fetches[path]
            versions = [file] + [file.with_name(f"{file.stem}@{i}{file.suffix}")
                                 for i in range(2, n + 1)]
            existing = [v for v in versions if v.exists()]
            return existing[-1].read_bytes() if existing else None
        segment = self.segments / file.name
        return segment.read_bytes() if segment.exists() else None


@pytest.fixture
def streams(segment_dir: Path) -> Iterator[str]:
    """Base URL of a fresh fixture server (every playlist starts at its first version)."""
    server = _FixtureServer(segment_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
