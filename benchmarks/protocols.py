"""``castway bench protocols``: what each ingest protocol adds, against RTMP, on one
``castway serve`` (packaging the source only: ``CASTWAY_LADDER=source``, so the figures
are ingest's, not the transcoder's).

For RTMP, RTMPS and SRT the same clip (H.264/AAC, 1280x720p30, a keyframe a second) is
published with ``ffmpeg -re`` (FLV over RTMP and RTMPS, MPEG-TS over SRT); for WHIP,
headless Chromium publishes its fake camera and microphone (H.264 from libwebrtc, Opus)
for as long. One protocol at a time:

- **Edge lag**: an LL-HLS poller makes blocking reloads of the source rendition; a part's
  lag is when it was first listed minus when its media was sent (publish start + its
  media end time), as in ``castway bench latency``. The publish start is the moment before
  ffmpeg is spawned (so its start-up counts), or, for WHIP, when the peer connection is
  connected (the encoder starts then; its first frame follows within a frame time).
  "Added vs RTMP" is the difference of the medians.
- **Ingest CPU**: CPU time of the ``castway serve`` process (and its children) during the
  publish, minus its idle rate, as a share of one core, and per Mbit/s received.

Every process is stopped and the temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.kit import free_ports
from benchmarks.latency import Timeline, make_clip, poll_ll
from benchmarks.selfsigned import write_self_signed

PROTOCOLS = ("rtmp", "rtmps", "srt", "whip")
CHANNEL = "default"
FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--allow-loopback-in-peer-connection",
              "--disable-features=WebRtcHideLocalIpsWithMdns")
_TICKS = os.sysconf("SC_CLK_TCK")

WHIP_PUBLISH = """
(async function (url, key) {
  const stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: 1280, height: 720, frameRate: 30}, audio: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    const t = pc.addTransceiver(track, {direction: "sendonly"});
    if (track.kind === "video") {
      const all = RTCRtpSender.getCapabilities("video").codecs;
      t.setCodecPreferences(all.filter(c => c.mimeType === "video/H264")
                               .concat(all.filter(c => c.mimeType !== "video/H264")));
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") { resolve(); return; }
    pc.addEventListener("icegatheringstatechange",
                        () => { if (pc.iceGatheringState === "complete") { resolve(); } });
    setTimeout(resolve, 5000);
  });
  const response = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
      headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + key}});
  if (response.status !== 201) { throw new Error("WHIP " + response.status); }
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
  await new Promise((resolve) => {
    const check = () => { if (pc.connectionState === "connected") { resolve(); } };
    pc.addEventListener("connectionstatechange", check); check();
  });
  window.whip = {pc: pc, location: response.headers.get("Location")};
  return Date.now();
})(%s)
"""


class ProtocolBenchError(Exception):
    """A server or tool the benchmark needs did not start or misbehaved."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ProtocolBenchError(f"{name} is not installed")
    return path


def _cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children that ended (/proc/PID/stat), plus its
    live children's."""
    total = 0.0
    with contextlib.suppress(FileNotFoundError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:15]) / _TICKS  # utime stime cutime cstime
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for cpid in child.read_text().split():
            total += _cpu_s(int(cpid))
    return total


@dataclass
class Serve:
    pid: int
    http: str
    rtmp_port: int
    rtmps_port: int
    srt_port: int
    key: str
    admin: str


@contextlib.asynccontextmanager
async def run_serve(workdir: Path) -> AsyncIterator[Serve]:
    cert, key = write_self_signed(workdir, 0xB3, name="bench")
    rtmp, http, rtmps, srt = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(CASTWAY_RECONNECT_GRACE_S="1", CASTWAY_LADDER="source",
               CASTWAY_TLS_CERT_FILE=str(cert), CASTWAY_TLS_KEY_FILE=str(key),
               CASTWAY_WHIP_ICE_ADDRESSES="127.0.0.1")
    log = (workdir / "castway.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launch.cli", "serve", "--data-dir", str(workdir / "data"),
        "--rtmp-port", str(rtmp), "--http-port", str(http), "--rtmps-port", str(rtmps),
        "--srt-port", str(srt), stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
    try:
        assert process.stdout is not None
        banner = ""
        while "Stop with" not in banner:
            line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode()
            if not line:
                raise ProtocolBenchError(f"castway serve exited; see {workdir}/castway.log")
            banner += line
        stream_key = re.search(r"Stream Key:\s+(cw_\S+)", banner)
        admin = (workdir / "data" / "admin_token").read_text().strip()
        if stream_key is None:
            raise ProtocolBenchError("castway serve printed no stream key")
        yield Serve(process.pid, f"http://127.0.0.1:{http}", rtmp, rtmps, srt,
                    stream_key.group(1), admin)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def _publisher_url(serve: Serve, protocol: str) -> list[str]:
    if protocol == "rtmp":
        return ["-f", "flv", f"rtmp://127.0.0.1:{serve.rtmp_port}/live/{serve.key}"]
    if protocol == "rtmps":
        return ["-f", "flv", "-tls_verify", "0",
                f"rtmps://127.0.0.1:{serve.rtmps_port}/live/{serve.key}"]
    return ["-f", "mpegts",
            f"srt://127.0.0.1:{serve.srt_port}?streamid=#!::r=live/{serve.key},m=publish"]


async def _bitrate_kbps(client: httpx.AsyncClient, serve: Serve) -> float:
    live = (await client.get("/api/v1/broadcasts?state=live",
                             headers={"Authorization": f"Bearer {serve.admin}"})).json()
    value = live[0]["stats"].get("bitrate_kbps") if live else None
    return float(value) if isinstance(value, int | float) else float("nan")


async def _until_idle(client: httpx.AsyncClient, serve: Serve) -> None:
    for _ in range(100):
        live = (await client.get("/api/v1/broadcasts?state=live",
                                 headers={"Authorization": f"Bearer {serve.admin}"})).json()
        if not live:
            return
        await asyncio.sleep(0.2)
    raise ProtocolBenchError("the previous broadcast did not end")


async def measure_one(serve: Serve, protocol: str, clip: Path, seconds: float,
                      workdir: Path, idle_rate: float) -> dict[str, Any]:
    timeline = Timeline(protocol)
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=serve.http, timeout=20) as client:
        poller = asyncio.create_task(poll_ll(
            client, f"{serve.http}/hls/{CHANNEL}/source/index.m3u8", timeline, stop))
        cpu_before, wall_before = _cpu_s(serve.pid), time.monotonic()
        bitrate = float("nan")
        try:
            if protocol == "whip":
                t0, bitrate = await _publish_whip(serve, client, seconds, workdir)
            else:
                t0 = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    _tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
                    "-c", "copy", *_publisher_url(serve, protocol),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                await asyncio.sleep(seconds * 0.6)
                bitrate = await _bitrate_kbps(client, serve)
                await proc.wait()
        finally:
            cpu = _cpu_s(serve.pid) - cpu_before
            wall = time.monotonic() - wall_before
            await asyncio.sleep(1.0)
            stop.set()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await _until_idle(client, serve)
    _, part_lags = timeline.edge_lags(t0, warmup_s=3.0)
    core_share = max(0.0, cpu / wall - idle_rate)
    return {"parts": len(part_lags),
            "edge_lag_p50_s": statistics.median(part_lags) if part_lags else float("nan"),
            "edge_lag_p95_s": part_lags[int(0.95 * (len(part_lags) - 1))]
            if part_lags else float("nan"),
            "cpu_core_share": core_share, "bitrate_kbps": bitrate,
            "cpu_per_mbps": core_share / (bitrate / 1000) if bitrate == bitrate and bitrate
            else float("nan")}


async def _publish_whip(serve: Serve, client: httpx.AsyncClient, seconds: float,
                        workdir: Path) -> tuple[float, float]:
    from benchmarks.browser import launch_browser

    async with launch_browser(_tool("chromium"), workdir, flags=FAKE_MEDIA) as browser:
        page = await browser.new_page()
        await page.goto(f"{serve.http}/healthz")  # loopback: a secure context
        args = ", ".join(json.dumps(a) for a in (f"{serve.http}/whip/{CHANNEL}", serve.key))
        connected_ms = await page.evaluate(WHIP_PUBLISH % args, await_promise=True,
                                           timeout_s=30)
        t0 = time.monotonic() - (time.time() - float(connected_ms) / 1000)
        await asyncio.sleep(seconds * 0.6)
        bitrate = await _bitrate_kbps(client, serve)
        await asyncio.sleep(seconds * 0.4)
        await page.evaluate("fetch(window.whip.location, {method: 'DELETE'}).then(r => r.status)",
                            await_promise=True)
    return t0, bitrate


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    clip = await asyncio.to_thread(make_clip, workdir / "clip.flv", seconds=args.seconds,
                                   width=1280, height=720, fps=30)
    out: dict[str, Any] = {}
    async with run_serve(workdir) as serve:
        await asyncio.sleep(2)
        before, at = _cpu_s(serve.pid), time.monotonic()
        await asyncio.sleep(5)
        idle = (_cpu_s(serve.pid) - before) / (time.monotonic() - at)
        out["idle_core_share"] = idle
        for protocol in args.protocols.split(","):
            out[protocol] = await measure_one(serve, protocol, clip, args.seconds,
                                              workdir, idle)
    base = out.get("rtmp", {}).get("edge_lag_p50_s", float("nan"))
    for protocol in PROTOCOLS:
        if protocol in out:
            out[protocol]["added_vs_rtmp_s"] = out[protocol]["edge_lag_p50_s"] - base
    return out


def _print(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"castway bench protocols: {args.seconds:g} s each, source packaged only "
          f"(CASTWAY_LADDER=source); idle serve {report['idle_core_share'] * 100:.1f} % "
          "of a core")
    print("protocol  parts  edge lag p50   p95    added vs RTMP  ingest kbit/s  "
          "CPU % of a core  CPU %/Mbit/s")
    for protocol in PROTOCOLS:
        if protocol not in report:
            continue
        r = report[protocol]
        print(f"{protocol:8}  {r['parts']:5d}  {r['edge_lag_p50_s']:9.3f} s  "
              f"{r['edge_lag_p95_s']:5.3f} s  {r['added_vs_rtmp_s']:+9.3f} s  "
              f"{r['bitrate_kbps']:12.0f}  {r['cpu_core_share'] * 100:14.1f}  "
              f"{r['cpu_per_mbps'] * 100:11.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="castway bench protocols", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="publish time per protocol (default 20)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS),
                        help="comma-separated, from " + ", ".join(PROTOCOLS))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="castway-protocols.") as tmp:
        try:
            report = asyncio.run(measure(args, Path(tmp)))
        except ProtocolBenchError as exc:
            print(f"castway bench protocols: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
