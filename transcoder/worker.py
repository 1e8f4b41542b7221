"""The per-broadcast transcoder child process: compute only.

Packets come in over one pipe, outputs (init/part/segment bytes and metadata, rendition
info, stats) go out over another; no storage, no live state, no sockets here. A crash of
this process (or of libav inside it) takes down one broadcast's transcoder and nothing
else; the parent (:mod:`transcoder.supervisor`) restarts it.

Wire messages are tuples of plain values and this package's frozen dataclasses
(pickled by ``multiprocessing.connection``):

parent -> child: ``("packet", MediaPacket, seq)``, ``("discontinuity", seq)``,
``("finish",)``; ``seq`` numbers what the parent sent (:mod:`transcoder.replay`).
child -> parent: ``("rendition", RenditionInfo)``, ``("output", Output)``,
``("boundary", seq, pts_ms)`` when the packet ``seq`` starts a segment (before any output
of that segment), ``("discontinuity", seq)`` once the pipeline has flushed for a break
(asked for, or new codec parameters or a timestamp jump at packet ``seq``),
``("stats", dict)``, ``("done",)`` after finishing, ``("error", str)`` before exiting on a
fatal error.

Stats go out at least every :data:`STATS_INTERVAL_S`, also while no packets arrive: they
are the heartbeat by which the parent tells a hung child (stopped, deadlocked in libav)
from a quiet one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from transcoder.packager import Output
from transcoder.pipeline import Pipeline, PipelineConfig, PipelineError, RenditionInfo

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0


def worker_main(rx: Connection, tx: Connection, config: PipelineConfig) -> None:
    """Entry point of the child process (``multiprocessing`` spawn target)."""

    def send(message: tuple[Any, ...]) -> None:
        tx.send(message)

    def on_output(out: Output) -> None:
        send(("output", out))

    def on_rendition(info: RenditionInfo) -> None:
        send(("rendition", info))

    current_seq = -1  # the parent's number of the message being handled

    def on_discontinuity() -> None:
        send(("discontinuity", current_seq))

    def on_boundary(pts_ms: int) -> None:
        send(("boundary", current_seq, pts_ms))

    pipeline = Pipeline(config, on_output, on_rendition, on_discontinuity=on_discontinuity,
                        on_boundary=on_boundary)
    last_stats = time.monotonic()
    try:
        while True:
            try:
                if not rx.poll(STATS_INTERVAL_S):
                    last_stats = time.monotonic()
                    send(("stats", asdict(pipeline.stats)))
                    continue
                message = rx.recv()
            except EOFError:
                break  # the parent went away: nothing left to do
            kind = message[0]
            if kind == "packet":
                current_seq = message[2]
                pipeline.push(message[1])
            elif kind == "discontinuity":
                current_seq = message[1]
                pipeline.discontinuity()  # reports back through on_discontinuity
            elif kind == "finish":
                pipeline.finish()
                send(("stats", asdict(pipeline.stats)))
                send(("done",))
                break
            now = time.monotonic()
            if now - last_stats >= STATS_INTERVAL_S:
                last_stats = now
                send(("stats", asdict(pipeline.stats)))
    except PipelineError as exc:
        send(("error", str(exc)))
        raise SystemExit(2) from exc
    finally:
        rx.close()
        tx.close()
