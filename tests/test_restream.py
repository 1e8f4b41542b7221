"""Restreaming against real peers on loopback: one `castway serve` publishes its live
broadcast, remuxed, to nginx-rtmp (the team's peer script) over rtmp:// and to a second
`castway serve` over rtmps:// (through a TLS-terminating proxy with a test certificate made
here). The targets' HLS output is read by ffprobe; nginx-rtmp is killed mid-broadcast and
comes back, and its target reconnects and flows again while the other target and the
broadcast (its VOD complete) go on unaffected."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.serve_process import Served, serve
from tests.support import (
    free_port,
    free_ports,
    make_test_media,
    packet_counts,
    poll,
    require_peer_script,
    require_tool,
)

pytestmark = [pytest.mark.peer, pytest.mark.slow]

SECONDS = 40
FPS = 25


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "castway test target")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsProxy:
    """An asyncio TLS server in a thread that forwards each connection, decrypted, to
    ``upstream_port`` (an RTMP server without TLS): an rtmps:// endpoint."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Nginx:
    script: Path
    directory: Path
    rtmp_port: int
    http_port: int

    def start(self) -> None:
        subprocess.run(["bash", str(self.script), str(self.rtmp_port), str(self.http_port),
                        str(self.directory)], check=True, capture_output=True, timeout=120)

    def kill(self) -> None:
        """Fast shutdown (SIGTERM): its workers drop every connection at once."""
        pid = int((self.directory / "nginx.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
        poll("nginx gone", lambda: not _alive(pid), 10)
        poll("nginx's RTMP port free", lambda: not _listening(self.rtmp_port), 10)

    def stop(self) -> None:
        pid_file = self.directory / "nginx.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                poll("nginx stopped", lambda: not _alive(pid), 15)

    def playlist(self, name: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/hls/{name}.m3u8"

    def has_playlist(self, name: str) -> bool:
        return (self.directory / "hls" / f"{name}.m3u8").exists()


@pytest.fixture
def nginx() -> Iterator[Nginx]:
    require_tool("nginx")
    # nginx's workers run as nobody: their directory must be reachable by everyone,
    # which pytest's private tmp_path is not.
    directory = Path(tempfile.mkdtemp(prefix="castway-restream-nginx."))
    directory.chmod(0o755)
    peer = Nginx(require_peer_script("nginx-rtmp.sh"), directory, *free_ports(2))
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(directory, ignore_errors=True)


def probe(url: str) -> dict[str, Any]:
    """ffprobe's view of ``url``: the streams by type, and whatever it reported as an
    error. (nginx-rtmp replaces its playlist by a rename: a read may miss it once.)"""
    def attempt() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run(
            [require_tool("ffprobe"), "-v", "error", "-show_entries",
             "stream=codec_type,codec_name,width,height", "-of", "json", url],
            capture_output=True, text=True, timeout=60, check=False)
        return done if done.returncode == 0 else None
    result = poll(f"ffprobe reading {url}", attempt, 10)
    streams = {s["codec_type"]: s for s in json.loads(result.stdout)["streams"]}
    return {"streams": streams, "errors": result.stderr.strip()}


def target(api: httpx.Client, scheme: str) -> dict[str, Any]:
    listed = api.get("/api/v1/channels/default/restreams")
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = [t for t in listed.json()
                                   if t["url"].startswith(scheme + "://")]
    assert len(found) == 1, listed.text
    return found[0]


def video_packets(url: str) -> int:
    """Video packets ffprobe reads from ``url``: all of a VOD; of a live playlist,
    the first 3 s from where a player starts (a live playlist never ends)."""
    result = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-read_intervals", "%+3",
         "-select_streams", "v", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "json", url],
        capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        return 0
    streams = json.loads(result.stdout).get("streams", [])
    return int(streams[0]["nb_read_packets"]) if streams else 0


def test_restream_to_nginx_rtmp_and_to_castway_over_rtmps_survives_a_target_restart(
        tmp_path: Path, nginx: Nginx) -> None:
    ffmpeg = require_tool("ffmpeg")
    clip = make_test_media(tmp_path / "clip.flv", seconds=SECONDS, width=320, height=240,
                           fps=FPS)
    cert, key = make_certificate(tmp_path)
    with serve(tmp_path / "b", CASTWAY_LADDER="source") as target_b:
        proxy = TlsProxy(cert, key, target_b.rtmp_port)
        proxy.start()
        try:
            with serve(tmp_path / "a", CASTWAY_LADDER="source",
                       CASTWAY_RESTREAM_BACKOFF_BASE_S="0.5",
                       CASTWAY_RESTREAM_BACKOFF_MAX_S="2",
                       SSL_CERT_FILE=str(cert)) as source:
                run_broadcast(source, target_b, nginx, proxy, ffmpeg, clip)
        finally:
            proxy.stop()


def run_broadcast(source: Served, target_b: Served, nginx: Nginx, proxy: TlsProxy,
                  ffmpeg: str, clip: Path) -> None:
    api = httpx.Client(base_url=source.base, headers=source.admin_headers(), timeout=10)
    api_b = httpx.Client(base_url=target_b.base, headers=target_b.admin_headers(), timeout=10)
    key_b = target_b.stream_key()
    added = api.post("/api/v1/channels/default/restreams", json={
        "url": f"rtmp://127.0.0.1:{nginx.rtmp_port}/live/mirror"})
    assert added.status_code == 201, added.text
    assert added.json()["url"].endswith("/live/****")  # a short key: nothing of it shown
    added = api.post("/api/v1/channels/default/restreams", json={
        "url": f"rtmps://127.0.0.1:{proxy.port}/live", "key": key_b})
    assert added.status_code == 201, added.text
    assert key_b not in added.text and added.json()["url"].endswith("/live/****" + key_b[-4:])
    # Never shown again, and not in the catalog in the clear either.
    assert key_b not in api.get("/api/v1/channels/default/restreams").text
    assert key_b.encode() not in (source.data_dir / "castway.db").read_bytes()

    publisher = subprocess.Popen(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
         "-f", "flv", f"rtmp://127.0.0.1:{source.rtmp_port}/live/{source.stream_key()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll("both targets live", lambda: target(api, "rtmp")["state"] == "live"
             and target(api, "rtmps")["state"] == "live", 30)
        nginx_hls = nginx.playlist("mirror")
        poll("nginx-rtmp's HLS", lambda: nginx.has_playlist("mirror")
             and video_packets(nginx_hls) > 0, 30)
        seen = probe(nginx_hls)
        assert seen["errors"] == ""
        assert seen["streams"]["video"]["codec_name"] == "h264"
        assert seen["streams"]["audio"]["codec_name"] == "aac"
        b_hls = f"{target_b.base}/hls/default/master.m3u8"
        poll("castway B's HLS", lambda: api_b.get("/api/v1/broadcasts?state=live").json()
             and video_packets(b_hls) > 0, 30)
        seen = probe(b_hls)
        assert seen["errors"] == ""
        video = seen["streams"]["video"]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)

        # nginx-rtmp dies mid-broadcast: its target retries, the other goes on.
        nginx.kill()
        poll("nginx target retrying", lambda: target(api, "rtmp")["state"]
             in ("retrying", "connecting"), 15)
        assert target(api, "rtmps")["state"] == "live"
        (nginx.directory / "hls" / "mirror.m3u8").unlink(missing_ok=True)
        nginx.start()
        poll("nginx target live again", lambda: target(api, "rtmp")["state"] == "live", 20)
        poll("frames flowing to nginx-rtmp again", lambda: nginx.has_playlist("mirror")
             and video_packets(nginx_hls) > 0, 30)
        assert probe(nginx_hls)["errors"] == ""
        rtmps = target(api, "rtmps")
        assert rtmps["state"] == "live" and rtmps["failures"] == 0
        assert rtmps["bitrate_kbps"] > 0
        assert proxy.connections == 1  # the other target never reconnected
        live = api.get("/api/v1/broadcasts?state=live").json()
        assert len(live) == 1
        assert live[0]["stats"][f"restream.{rtmps['id']}.state"] == "live"
        metrics = httpx.get(f"{source.base}/metrics").text
        assert 'castway_restream_state{channel="default",state="live"' in metrics \
            or "castway_restream_state{" in metrics
        assert publisher.wait(timeout=90) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait()

    # The source broadcast is whole: its VOD complete, every second of it there.
    vod = poll("the source's VOD", lambda: [v for v in api.get(
        "/api/v1/vods?channel=default").json() if v["state"] == "complete"], 60)[0]
    assert vod["duration_s"] > SECONDS - 2
    counts = packet_counts(f"{source.base}/vod/{vod['id']}/master.m3u8")
    assert counts["video"][0] >= (SECONDS - 2) * FPS
    # The target castway got the broadcast too, through TLS (a VOD of its own).
    vod_b = poll("castway B's VOD", lambda: [v for v in api_b.get(
        "/api/v1/vods?channel=default").json() if v["state"] == "complete"], 60)[0]
    assert vod_b["duration_s"] > SECONDS - 4
