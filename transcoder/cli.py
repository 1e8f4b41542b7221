"""``castway transcode INPUT OUTDIR [--ladder ...]``: a media file into an HLS ladder.

Runs the live pipeline (:class:`transcoder.pipeline.Pipeline`) on the file's packets as
fast as it can (no real-time pacing, no frame dropping) and writes VOD playlists.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from castway.settings import SegmentFormat, Settings
from transcoder.demux import DemuxError, read_packets
from transcoder.ladder import LadderError, load_ladder
from transcoder.output import DirectoryOutput
from transcoder.pipeline import Pipeline, PipelineConfig, PipelineError, PipelineStats
from transcoder.segmenter import SegmentPolicy


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    master: Path
    frames: int  # source video frames
    seconds: float  # wall time
    stats: PipelineStats

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def transcode_file(source: Path, outdir: Path, *, ladder: str = "auto",
                   preset: str = "veryfast", segment_format: str = "fmp4",
                   target_segment_s: float = 2.0, part_target_s: float = 0.5,
                   scale_threads: int = 1) -> TranscodeResult:
    config = PipelineConfig(
        ladder=load_ladder(ladder),
        policy=SegmentPolicy.from_seconds(target_segment_s, part_target_s),
        x264_preset=preset, segment_format=segment_format, realtime=False,
        scale_threads=scale_threads)
    output = DirectoryOutput(outdir, ext="ts" if segment_format == "mpegts" else "m4s",
                             target_segment_s=target_segment_s, part_target_s=part_target_s)
    pipeline = Pipeline(config, output.on_output, output.on_ladder,
                        on_discontinuity=output.discontinuity)
    started = time.perf_counter()
    for packet in read_packets(source):
        pipeline.push(packet)
    pipeline.finish()
    master = output.write_playlists()
    elapsed = time.perf_counter() - started
    return TranscodeResult(master, pipeline.stats.video_packets, elapsed, pipeline.stats)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    s = settings or Settings()
    p = argparse.ArgumentParser(prog="castway transcode",
                                description="Transcode a media file into an HLS ladder.")
    p.add_argument("input", type=Path)
    p.add_argument("outdir", type=Path)
    p.add_argument("--ladder", default=s.ladder,
                   help="'auto', 'source' or a ladder JSON file (CASTWAY_LADDER)")
    p.add_argument("--preset", default=s.x264_preset, help="x264 preset (CASTWAY_X264_PRESET)")
    p.add_argument("--format", default=s.segment_format.value,
                   choices=[f.value for f in SegmentFormat],
                   help="segment format (CASTWAY_SEGMENT_FORMAT)")
    p.add_argument("--segment", type=float, default=s.target_segment_s,
                   help="target segment seconds (CASTWAY_TARGET_SEGMENT_S)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = transcode_file(args.input, args.outdir, ladder=args.ladder,
                                preset=args.preset, segment_format=args.format,
                                target_segment_s=args.segment)
    except (DemuxError, LadderError, PipelineError) as exc:
        print(f"castway transcode: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {result.master}")
    print(f"frames={result.frames} seconds={result.seconds:.2f} fps={result.fps:.1f}"
          f" dropped={result.stats.dropped_frames}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
