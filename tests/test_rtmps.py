"""RTMPS as a streamer uses it: ``castway serve`` with a certificate, real encoders (the
ffmpeg CLI, GStreamer's rtmp2sink) publishing ``rtmps://`` end to end to a playable HLS
ladder and a VOD, the stream key never in clear on the wire, a wrong key refused, and
SIGHUP picking up a renewed certificate."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launch.cli import _settings, parse_args
from tests.fixtures.wire_recorder import wire_recorder
from tests.serve_process import Served, serve
from tests.support import free_port, packet_counts, poll, require_tool
from tests.tls_certs import client_context, serial_of, write_self_signed

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path, serial=0xCA57)


@pytest.fixture
def served(tmp_path: Path, certs: tuple[Path, Path]) -> Iterator[tuple[Served, int]]:
    cert, key = certs
    port = free_port()
    with serve(tmp_path / "data", CASTWAY_RTMPS_PORT=str(port),
               CASTWAY_TLS_CERT_FILE=str(cert), CASTWAY_TLS_KEY_FILE=str(key)) as running:
        yield running, port


def auth(served: Served) -> dict[str, str]:
    return served.admin_headers()


def live_master(served: Served, seen: list[str], stop: threading.Event) -> None:
    """Watch the live master playlist from beside the publisher, as a player would."""
    while not stop.is_set():
        response = httpx.get(f"{served.base}/hls/default/master.m3u8", timeout=10)
        if response.status_code == 200 and "#EXT-X-STREAM-INF" in response.text:
            seen.append(response.text)
            return
        stop.wait(0.2)  # polling an HTTP endpoint from outside the process


def assert_vod_plays(served: Served, published: Path) -> None:
    def vods() -> list[dict[str, object]]:
        found: list[dict[str, object]] = httpx.get(f"{served.base}/api/v1/vods",
                                                   headers=auth(served)).json()
        return found

    [vod, *_] = poll("the VOD of the RTMPS broadcast", vods, timeout_s=60)
    counts = packet_counts(f"{served.base}/vod/{vod['id']}/master.m3u8")
    source = packet_counts(str(published))
    assert len(counts["video"]) >= 2, counts  # a ladder
    assert set(counts["video"]) == set(source["video"]), counts
    assert set(counts["audio"]) == set(source["audio"]), counts


def publish_watching_live(served: Served, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=live_master, args=(served, seen, stop))
    watcher.start()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    finally:
        stop.set()
        watcher.join()
    assert seen, "the live master playlist never appeared while publishing over RTMPS"
    return done


def test_the_banner_and_the_api_give_the_rtmps_url(served: tuple[Served, int]) -> None:
    running, port = served
    assert f"rtmps://127.0.0.1:{port}/live" in running.banner
    created = httpx.post(f"{running.base}/api/v1/channels", headers=auth(running),
                         json={"name": "tls"})
    assert created.status_code in (200, 201), created.text
    assert created.json()["stream_key"]["rtmps_url"].startswith("rtmps://")


def test_rtmps_port_flag_and_setting() -> None:
    assert _settings(parse_args(["serve", "--rtmps-port", "1936"])).rtmps_port == 1936
    assert _settings(parse_args(["ingest", "--rtmps-port", "0"])).rtmps_port == 0


def test_ffmpeg_over_rtmps_plays_live_and_as_vod_and_the_key_never_crosses_in_clear(
        served: tuple[Served, int], h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    running, port = served
    key = running.stream_key()
    with wire_recorder(port) as wire:
        done = publish_watching_live(running, [
            ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-i", str(h264_aac_flv),
            "-c", "copy", "-f", "flv", "-tls_verify", "0",
            f"rtmps://127.0.0.1:{wire.port}/live/{key}"])
        assert done.returncode == 0, done.stderr
        sent = wire.client_bytes
    assert sent[:1] == b"\x16", "the first byte on the wire is not a TLS handshake record"
    assert len(sent) > 100_000  # the whole clip went through the relay
    assert key.encode() not in sent
    assert_vod_plays(running, h264_aac_flv)


def test_gstreamer_rtmp2sink_over_rtmps_plays_as_vod(
        served: tuple[Served, int], h264_aac_flv: Path) -> None:
    gst = require_tool("gst-launch-1.0")
    running, port = served
    url = f"rtmps://127.0.0.1:{port}/live/{running.stream_key()}"
    # rtmp2sink validates with GIO's TLS backend: every check but the unknown CA (the
    # test certificate is self-signed; it does name 127.0.0.1, so identity is checked).
    flags = "bad-identity+not-activated+expired+revoked+insecure+generic-error"
    pipeline = (f"filesrc location={h264_aac_flv} ! flvdemux name=d d.video ! queue ! "
                f"h264parse ! flvmux name=m streamable=true ! rtmp2sink location={url} "
                f"tls-validation-flags={flags} d.audio ! queue ! aacparse ! m.")
    done = publish_watching_live(running, [gst, "-q", *pipeline.split()])
    assert done.returncode == 0, done.stderr + done.stdout
    assert_vod_plays(running, h264_aac_flv)


def test_a_wrong_key_over_rtmps_is_refused(served: tuple[Served, int],
                                           h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    running, port = served
    done = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(h264_aac_flv),
                           "-c", "copy", "-f", "flv", "-tls_verify", "0",
                           f"rtmps://127.0.0.1:{port}/live/cw_not-a-key"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    # ffmpeg prints the onStatus description castway sent over the TLS session.
    assert "Server error: Unknown stream key." in done.stderr, done.stderr


def served_serial(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_context().wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


def test_sighup_reloads_the_certificate_for_new_connections(
        served: tuple[Served, int], certs: tuple[Path, Path], tmp_path: Path) -> None:
    running, port = served
    assert served_serial(port) == 0xCA57
    # A connection made before the renewal keeps its session.
    before = client_context().wrap_socket(socket.create_connection(("127.0.0.1", port)))
    renewed_dir = tmp_path / "renewed"
    renewed_dir.mkdir()
    new_cert, new_key = write_self_signed(renewed_dir, serial=0xBEEF)
    cert, key = certs
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    running.proc.send_signal(signal.SIGHUP)
    poll("the renewed certificate", lambda: served_serial(port) == 0xBEEF, timeout_s=10)
    assert running.proc.poll() is None
    der = before.getpeercert(binary_form=True)
    assert der is not None and serial_of(der) == 0xCA57
    before.close()


def test_a_stalled_tls_handshake_does_not_hold_up_a_publisher(
        tmp_path: Path, certs: tuple[Path, Path], h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    cert, key = certs
    port = free_port()
    with serve(tmp_path / "data", CASTWAY_RTMPS_PORT=str(port),
               CASTWAY_TLS_CERT_FILE=str(cert), CASTWAY_TLS_KEY_FILE=str(key),
               CASTWAY_HANDSHAKE_TIMEOUT_S="2") as running:
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a hello
        started = time.monotonic()
        done = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i",
                               str(h264_aac_flv), "-c", "copy", "-f", "flv",
                               "-tls_verify", "0",
                               f"rtmps://127.0.0.1:{port}/live/{running.stream_key()}"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        stalled.settimeout(10)
        assert stalled.recv(1024) == b""  # cut by the handshake timeout
        assert time.monotonic() - started < 15
        stalled.close()


def test_behind_a_proxy_protocol_balancer_publishes_pass_and_bare_connections_do_not(
        tmp_path: Path, certs: tuple[Path, Path], h264_aac_flv: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    cert, key = certs
    port = free_port()
    with serve(tmp_path / "data", CASTWAY_RTMPS_PORT=str(port),
               CASTWAY_TLS_CERT_FILE=str(cert), CASTWAY_TLS_KEY_FILE=str(key),
               CASTWAY_PROXY_PROTOCOL="1") as running, \
            wire_recorder(port, proxy_source=("203.0.113.7", 40000)) as nlb:
        def publish(to: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(h264_aac_flv),
                 "-c", "copy", "-f", "flv", "-tls_verify", "0",
                 f"rtmps://127.0.0.1:{to}/live/{running.stream_key()}"],
                capture_output=True, text=True, timeout=60, check=False)

        assert publish(port).returncode != 0  # no PROXY header: refused
        through = publish(nlb.port)
        assert through.returncode == 0, through.stderr
