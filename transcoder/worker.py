"""The per-broadcast transcoder child process: compute only, packets in over one pipe and
outputs out over another (:mod:`transcoder.messages`); stats every
:data:`STATS_INTERVAL_S` are its heartbeat.

Design: docs/transcoder.md, "Processes, flow control, failures".
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from multiprocessing.connection import Connection

from transcoder.messages import (
    Announced,
    Boundary,
    Done,
    Failed,
    Feed,
    Flushed,
    FromChild,
    Produced,
    Restart,
    RungStopped,
    SetLadder,
    Stats,
    ToChild,
)
from transcoder.overload import Degradation
from transcoder.packager import Output
from transcoder.pipeline import Pipeline, PipelineConfig, PipelineError, RenditionInfo

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0


def worker_main(rx: Connection, tx: Connection, config: PipelineConfig) -> None:
    """Entry point of the child process (``multiprocessing`` spawn target)."""

    def send(message: FromChild) -> None:
        tx.send(message)

    def on_output(out: Output) -> None:
        send(Produced(out))

    def on_ladder(ladder: tuple[RenditionInfo, ...]) -> None:
        send(Announced(ladder))

    current_seq = -1  # the supervisor's number of the message being handled

    def on_discontinuity() -> None:
        send(Flushed(current_seq))

    def on_boundary(pts_ms: int) -> None:
        send(Boundary(current_seq, pts_ms))

    def on_rung_stopped(step: Degradation) -> None:
        send(RungStopped(step))

    pipeline = Pipeline(config, on_output, on_ladder, on_discontinuity=on_discontinuity,
                        on_boundary=on_boundary, on_rung_stopped=on_rung_stopped)

    def stats() -> Stats:
        return Stats(replace(pipeline.stats))

    last_stats = time.monotonic()
    try:
        while True:
            try:
                if not rx.poll(STATS_INTERVAL_S):
                    last_stats = time.monotonic()
                    send(stats())
                    continue
                message: ToChild = rx.recv()
            except EOFError:
                break  # the supervisor went away: nothing left to do
            if isinstance(message, Feed):
                current_seq = message.seq
                pipeline.push(message.packet)
            elif isinstance(message, SetLadder):
                pipeline.set_ladder(message.ladder)
            elif isinstance(message, Restart):
                current_seq = message.seq
                pipeline.discontinuity()  # reports back through on_discontinuity
            else:
                pipeline.finish()
                send(stats())
                send(Done())
                break
            now = time.monotonic()
            if now - last_stats >= STATS_INTERVAL_S:
                last_stats = now
                send(stats())
    except PipelineError as exc:
        send(Failed(str(exc)))
        raise SystemExit(2) from exc
    finally:
        rx.close()
        tx.close()
