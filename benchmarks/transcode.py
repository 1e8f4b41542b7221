"""``castway bench transcode``: castway's transcoder against the ffmpeg CLI.

The same source (generated 1080p30 test pattern + tone unless ``--source`` is given) and
the same ladder (passthrough + the auto rungs below the source) through:

- castway: ``python -m transcoder.cli`` (the live pipeline in file mode), and
- ffmpeg: one command built with ffmpeg-python that decodes once, ``split``s and
  ``scale``s per rung, encodes each with libx264 at the same preset/bitrate/VBV, forces
  keyframes at the source's, copies audio and writes fMP4 HLS, plus a copied passthrough.

Each runs as a child process; wall time gives frames per second and the realtime factor,
``wait4`` gives the peak resident memory. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av

from castway.settings import X264_LOOKAHEAD_FRAMES
from transcoder.ladder import DEFAULT_LADDER, resolve_ladder
from transcoder.pipeline import x264_params


@dataclass(frozen=True, slots=True)
class RunResult:
    name: str
    seconds: float
    fps: float
    realtime_factor: float
    peak_rss_mb: float
    cpu_seconds: float  # user + system: less sensitive to a shared machine than wall time
    returncode: int


def generate_source(path: Path, *, seconds: float, width: int, height: int,
                    fps: int = 30) -> Path:
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", str(2 * fps), "-keyint_min", str(2 * fps), "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(path)],
                   check=True)
    return path


def _probe(path: Path) -> tuple[int, int, float, int, float]:
    """(width, height, fps, frames, duration seconds) of the source's video."""
    container: Any = av.open(str(path))
    try:
        stream = container.streams.video[0]
        frames = sum(1 for p in container.demux(stream) if p.size)
        fps = float(stream.average_rate or 30)
        return (stream.codec_context.width, stream.codec_context.height, fps, frames,
                frames / fps)
    finally:
        container.close()


def _run(name: str, cmd: list[str], frames: int, duration: float) -> RunResult:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        print(f"{name} failed ({proc.returncode}):\n{stderr[-2000:]}", file=sys.stderr)
    return RunResult(name, round(elapsed, 3), round(frames / elapsed, 2),
                     round(duration / elapsed, 3), round(usage.ru_maxrss / 1024, 1),
                     round(usage.ru_utime + usage.ru_stime, 2), proc.returncode)


def ffmpeg_command(source: Path, outdir: Path, *, preset: str, segment_s: float) -> list[str]:
    """The reference: decode once, split + scale, libx264 per rung, audio copied."""
    import ffmpeg  # ffmpeg-python

    width, height, fps, _, _ = _probe(source)
    rungs = resolve_ladder(DEFAULT_LADDER, width, height, fps)
    inp = ffmpeg.input(str(source))
    outputs = []
    hls = {"f": "hls", "hls_time": segment_s, "hls_playlist_type": "vod",
           "hls_segment_type": "fmp4"}
    if rungs:
        split = inp.video.filter_multi_output("split", len(rungs))
        for i, rung in enumerate(rungs):
            video = split[i].filter("scale", rung.width, rung.height)
            if rung.fps < fps:
                video = video.filter("fps", rung.fps)
            outputs.append(ffmpeg.output(
                video, inp.audio, str(outdir / rung.name / "index.m3u8"),
                vcodec="libx264", preset=preset, pix_fmt="yuv420p",
                video_bitrate=f"{rung.video_bitrate_kbps}k",
                maxrate=f"{int(rung.video_bitrate_kbps * 1.5)}k",
                bufsize=f"{rung.video_bitrate_kbps * 3}k", g=100000,
                force_key_frames="source",
                **{"x264-params": x264_params(X264_LOOKAHEAD_FRAMES)},
                acodec="copy", hls_segment_filename=str(outdir / rung.name / "%d.m4s"),
                hls_fmp4_init_filename="init.mp4",
                **hls))
    outputs.append(ffmpeg.output(inp.video, inp.audio, str(outdir / "source" / "index.m3u8"),
                                 vcodec="copy", acodec="copy",
                                 hls_segment_filename=str(outdir / "source" / "%d.m4s"),
                                 hls_fmp4_init_filename="init.mp4",
                                 **hls))
    args: list[str] = ffmpeg.merge_outputs(*outputs).global_args(
        "-nostdin", "-loglevel", "error").overwrite_output().compile()
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="castway bench transcode")
    p.add_argument("--source", type=Path, default=None, help="input file (default: "
                   "a generated test pattern)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--preset", default="veryfast")
    p.add_argument("--segment", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=1, help="runs of each, best kept")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp:
        work = Path(tmp)
        source = args.source or generate_source(work / "source.mp4", seconds=args.seconds,
                                                width=args.width, height=args.height)
        width, height, fps, frames, duration = _probe(source)
        castway_cmd = [sys.executable, "-m", "transcoder.cli", str(source),
                       str(work / "castway"), "--ladder", "auto", "--preset", args.preset,
                       "--segment", str(args.segment)]
        ffmpeg_cmd = ffmpeg_command(source, work / "ffmpeg", preset=args.preset,
                                    segment_s=args.segment)
        rung_names = [r.name for r in resolve_ladder(DEFAULT_LADDER, width, height, fps)]
        results: dict[str, RunResult] = {}
        for _ in range(max(1, args.repeat)):
            for name, cmd in (("castway", castway_cmd), ("ffmpeg", ffmpeg_cmd)):
                shutil.rmtree(work / name, ignore_errors=True)
                if name == "ffmpeg":  # its HLS muxer does not create directories
                    for rendition in ("source", *rung_names):
                        (work / name / rendition).mkdir(parents=True, exist_ok=True)
                result = _run(name, cmd, frames, duration)
                best = results.get(name)
                if best is None or result.seconds < best.seconds:
                    results[name] = result
        report = {
            "source": {"width": width, "height": height, "fps": fps, "frames": frames,
                       "seconds": round(duration, 3)},
            "ladder": ["source", *rung_names], "preset": args.preset,
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "castway": asdict(results["castway"]), "ffmpeg": asdict(results["ffmpeg"]),
            "fps_ratio": round(results["castway"].fps / results["ffmpeg"].fps, 3),
            "cpu_ratio": round(results["ffmpeg"].cpu_seconds
                               / max(results["castway"].cpu_seconds, 1e-9), 3),
            "ffmpeg_command": " ".join(ffmpeg_cmd),
        }
        print(json.dumps(report, indent=2))
        failed = results["castway"].returncode or results["ffmpeg"].returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
