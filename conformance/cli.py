"""``castway check URL``: follow an HLS stream and report where it breaks RFC 8216bis and
Apple's HLS authoring rules. Exit 0: no violation (warnings allowed); 1: violations;
2: bad usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_CONFORMS, EXIT_VIOLATIONS = 0, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="castway check",
        description="Check an HLS stream (any server's, live or VOD) against RFC 8216bis "
                    "and Apple's HLS authoring spec: playlists across reloads and every "
                    "segment's media. Exits 1 on a violation.")
    p.add_argument("url", help="a Multivariant (master) or Media Playlist URL")
    p.add_argument("--seconds", type=float, default=30.0,
                   help="how long to follow a live stream (default 30)")
    p.add_argument("--max-segments", type=int, default=None,
                   help="probe at most this many segments per rendition (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from conformance.follow import check_stream
    from conformance.report import to_json, to_text

    checker, run = check_stream(args.url, seconds=args.seconds, max_segments=args.max_segments)
    findings = checker.findings
    print(to_json(run, findings) if args.json else to_text(run, findings))
    return EXIT_VIOLATIONS if checker.has_violation else EXIT_CONFORMS


if __name__ == "__main__":
    sys.exit(main())
