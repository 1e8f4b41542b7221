"""A real RTMP ingest node for the fleet test, run as ``python -m
tests.scheduler.ingest_stand_in`` by the local backend: castway's IngestServer and
NodeAgent with a publish handler that only counts (no transcoding), configured by the
same CASTWAY_* variables the backend gives `castway ingest`."""

from __future__ import annotations

import asyncio
import logging
import signal

from castway.live import open_live_state
from castway.media import MediaPacket
from castway.settings import Settings
from ingest.publish import PublishRequest, PublishSession, Rejection
from ingest.server import IngestServer
from launch.process import first_completed
from scheduler.agent import NodeAgent


class _Session:
    async def on_metadata(self, metadata: dict[str, object]) -> None:
        return None

    async def on_packet(self, packet: MediaPacket) -> None:
        return None

    async def on_close(self, reason: str) -> None:
        return None


class _Handler:
    def __init__(self) -> None:
        self.agent: NodeAgent | None = None

    async def on_publish(self, request: PublishRequest) -> PublishSession | Rejection:
        reason = self.agent.admission() if self.agent is not None else "starting"
        if reason is not None:
            return Rejection.unavailable(reason)
        return _Session()


async def main() -> None:
    settings = Settings()
    live = open_live_state(settings)
    handler = _Handler()
    server = IngestServer(settings, handler)
    await server.start()
    agent = NodeAgent(settings, live, lambda: server.active_publishers,
                      address=f"{settings.host}:{server.port}", interval_s=0.25)
    handler.agent = agent
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        await first_completed(stop.wait(), agent.stopped.wait())
    finally:
        await server.stop()
        await agent.stop()
        await live.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
