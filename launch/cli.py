"""The ``castway`` command.

Subcommands import their component lazily, so ``castway channels list`` does not load
libav and ``castway serve`` does not load Celery.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from castway.settings import Settings

BENCHES = {
    "ingest": "benchmarks.ingest",
    "transcode": "benchmarks.transcode",
    "origin": "benchmarks.origin",
    "archive": "benchmarks.archive",
    "chat": "benchmarks.chat",
    "latency": "benchmarks.latency",
    "soak": "benchmarks.soak",
    "capacity": "benchmarks.capacity",
    "protocols": "benchmarks.protocols",
    "edge": "benchmarks.edge",
}


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command line's flags on top."""
    overrides: dict[str, Any] = {}
    for flag in ("data_dir", "host", "rtmp_port", "rtmps_port", "srt_port", "http_port"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    return Settings(**overrides)


def _add_common(p: argparse.ArgumentParser, *, ports: bool = False) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="data directory "
                   "(CASTWAY_DATA_DIR, default ./data)")
    if ports:
        p.add_argument("--host", default=None, help="address to bind (CASTWAY_HOST)")
        p.add_argument("--rtmp-port", type=int, default=None, help="RTMP port "
                       "(CASTWAY_RTMP_PORT, default 1935)")
        p.add_argument("--rtmps-port", type=int, default=None, help="RTMPS (TLS) port, "
                       "0: off (CASTWAY_RTMPS_PORT, default off; needs "
                       "CASTWAY_TLS_CERT_FILE and CASTWAY_TLS_KEY_FILE)")
        p.add_argument("--srt-port", type=int, default=None, help="SRT ingest port, UDP "
                       "(CASTWAY_SRT_PORT, default 0: off)")
        p.add_argument("--http-port", type=int, default=None, help="HTTP port "
                       "(CASTWAY_HTTP_PORT, default 8080)")


# --- channels ---------------------------------------------------------------------------

def _cmd_channels(args: argparse.Namespace) -> int:
    from castway.bootstrap import create_channel_with_key, ensure_data_dir, rotate_stream_key
    from castway.catalog import open_catalog
    from castway.catalog.base import AlreadyExists
    from castway.model import InvalidChannelName
    from castway.serde import to_jsonable

    settings = _settings(args)
    data_dir = _channels_data_dir(settings, creating=args.channels_cmd == "create")
    if data_dir is None:
        return 1
    settings = settings.model_copy(update={"data_dir": data_dir})
    ensure_data_dir(settings.data_dir)
    catalog = open_catalog(settings)
    try:
        if args.channels_cmd == "create":
            try:
                key = create_channel_with_key(catalog, args.name, args.title or "")
            except AlreadyExists:
                print(f"castway: channel {args.name!r} already exists", file=sys.stderr)
                return 1
            except InvalidChannelName as e:
                print(f"castway: {e}", file=sys.stderr)
                return 2
            _print_key(args, args.name, key, settings)
        elif args.channels_cmd == "rotate-key":
            if catalog.get_channel(args.name) is None:
                print(f"castway: no channel {args.name!r}", file=sys.stderr)
                return 1
            _print_key(args, args.name, rotate_stream_key(catalog, args.name), settings)
        elif args.channels_cmd == "list":
            channels = catalog.list_channels()
            if args.json:
                print(json.dumps([to_jsonable(c) for c in channels]))
            else:
                for c in channels:
                    print(f"{c.name}\t{c.title}\t{c.vod_visibility.value}")
        return 0
    finally:
        catalog.close()


def _channels_data_dir(settings: Settings, *, creating: bool) -> Path | None:
    """The data directory a channels command works on. Named (--data-dir,
    CASTWAY_DATA_DIR): that one. Else the one a running ``castway serve`` uses (said on
    stderr), else ./data if it holds a catalog; a new one only to create a channel (said
    too); otherwise None, with the reason on stderr -- never an empty catalog quietly."""
    from launch.running import running_servers

    if "data_dir" in settings.model_fields_set or settings.database_url:
        return settings.data_dir
    here = settings.data_dir.resolve()
    servers = running_servers()
    dirs = list(dict.fromkeys(s.data_dir for s in servers))
    if here in dirs or (not dirs and (here / "castway.db").exists()):
        return settings.data_dir
    if len(dirs) == 1:
        print(f"castway: using the data directory of the running server "
              f"(pid {servers[-1].pid}): {dirs[0]}", file=sys.stderr)
        return dirs[0]
    if dirs:
        listed = "\n".join(f"  {d}" for d in dirs)
        print(f"castway: several castway servers are running; say which data directory "
              f"with --data-dir or CASTWAY_DATA_DIR:\n{listed}", file=sys.stderr)
        return None
    if creating:
        print(f"castway: no castway server is running and {here} holds no catalog: "
              f"creating a new data directory there", file=sys.stderr)
        return settings.data_dir
    print(f"castway: no castway data here ({here} holds no catalog) and no castway server "
          f"is running: run it from the directory you started `castway serve` in, or "
          f"pass --data-dir / CASTWAY_DATA_DIR", file=sys.stderr)
    return None


def _print_key(args: argparse.Namespace, channel: str, key: str, settings: Settings) -> None:
    if args.json:
        print(json.dumps({"channel": channel, "stream_key": key}))
        return
    print(f"Channel:    {channel}")
    print(f"Server:     {settings.effective_public_rtmp_url}")
    if settings.effective_public_rtmps_url:
        print(f"TLS server: {settings.effective_public_rtmps_url}")
    print(f"Stream key: {key}   (shown once; keep it secret)")
    print(f"Watch:      {settings.effective_public_url}/watch/{channel}")


# --- services ---------------------------------------------------------------------------

def _cmd_serve(args: argparse.Namespace) -> int:
    from launch.embedded import run_embedded

    return run_embedded(_settings(args))


def _cmd_ingest(args: argparse.Namespace) -> int:
    from launch.ingest_node import run_ingest

    return run_ingest(_settings(args))


def _cmd_edge(args: argparse.Namespace) -> int:
    from launch.edge_node import run_edge

    return run_edge(_settings(args))


def _cmd_origin(args: argparse.Namespace) -> int:
    from launch.origin_process import run_origin

    return run_origin(_settings(args))


def _cmd_worker(args: argparse.Namespace) -> int:
    from launch.worker import run_worker

    return run_worker(_settings(args), list(args.celery_args), beat=args.beat,
                      scheduler=args.scheduler)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from castway.cost import calibration_path, node_capacity
    from transcoder.capacity import calibrate_to

    settings = _settings(args)
    path = settings.calibration_file or calibration_path(settings.data_dir)
    cal = calibrate_to(path, preset=settings.x264_preset, seconds=args.seconds,
                       cores=args.cores)
    capacity = node_capacity(cal, settings.utilisation_target)
    print(cal.to_json())
    print(f"calibration written to {path}; transcode capacity {capacity:.2f} cores "
          f"({cal.cores:g} cores x {settings.utilisation_target:.0%})", file=sys.stderr)
    return 0


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        main: Callable[[list[str]], int] = importlib.import_module(module).main
        return main(list(args.rest))

    return run


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    main: Callable[[list[str]], int] = importlib.import_module(BENCHES[args.what]).main
    return main(list(args.rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="castway", description="castway: RTMP in, "
                                     "ABR LL-HLS out, instant VOD.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="the whole platform in one process (embedded mode)")
    _add_common(p, ports=True)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("channels", help="manage channels and stream keys")
    csub = p.add_subparsers(dest="channels_cmd", required=True)
    for name, help_ in (("create", "create a channel; prints its stream key once"),
                        ("rotate-key", "revoke a channel's keys; prints a new one once")):
        cp = csub.add_parser(name, help=help_)
        cp.add_argument("name")
        if name == "create":
            cp.add_argument("--title", default=None)
        cp.add_argument("--json", action="store_true")
        _add_common(cp)
        cp.set_defaults(func=_cmd_channels)
    cp = csub.add_parser("list", help="list channels")
    cp.add_argument("--json", action="store_true")
    _add_common(cp)
    cp.set_defaults(func=_cmd_channels)

    for name, func, help_ in (
            ("ingest", _cmd_ingest, "an RTMP ingest node (distributed mode)"),
            ("edge", _cmd_edge, "an RTMP edge relaying publishers to ingest nodes (a "
             "fleet's edge tier)"),
            ("origin", _cmd_origin, "an HLS origin + control API (distributed mode)")):
        p = sub.add_parser(name, help=help_)
        _add_common(p, ports=True)
        p.set_defaults(func=func)

    p = sub.add_parser("calibrate", help="measure this node's transcode cost (a short "
                       "encode of generated video) for cost admission")
    _add_common(p)
    p.add_argument("--seconds", type=float, default=3.0, help="generated video per "
                   "measurement (default 3)")
    p.add_argument("--cores", type=float, default=None, help="cores the node may use "
                   "(default: its CPU affinity and cgroup quota)")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("worker", help="a Celery archiver worker (distributed mode)")
    _add_common(p)
    p.add_argument("--beat", action="store_true", help="also run the periodic schedule "
                   "(retention, posters); exactly one worker should")
    p.add_argument("--scheduler", action="store_true", help="with --beat: also tick the "
                   "fleet scheduler (instead of the Lambda or `castway scheduler run`)")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra celery worker args")
    p.set_defaults(func=_cmd_worker)

    for name, help_ in (
            ("scheduler", "scheduler: tick | run --interval S | simulate"),
            ("transcode", "transcode a media file into an HLS ladder"),
            ("check", "check an HLS stream (any server's) against RFC 8216bis: check URL")):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(DELEGATED[name]))

    p = sub.add_parser("bench", help="benchmarks side by side with the reference peers")
    p.add_argument("what", choices=sorted(BENCHES))
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench)
    return parser


# Subcommands whose arguments (including --help) belong to the component's own parser.
DELEGATED = {"scheduler": "scheduler.cli", "transcode": "transcoder.cli",
             "check": "conformance.cli"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        delegate: Callable[[list[str]], int] = importlib.import_module(DELEGATED[argv[0]]).main
        return delegate(argv[1:])
    args = parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of a non-delegated subcommand; ``castway worker`` hands options
    it does not know to Celery (``--pool solo``, ``--concurrency 2``)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command != "worker":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.celery_args = [*unknown, *args.celery_args]
    return args


if __name__ == "__main__":
    sys.exit(main())
