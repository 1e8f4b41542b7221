"""The ends of broadcasts in the catalog, saved again until they are there."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from castway.catalog.base import Catalog
from castway.model import Broadcast, BroadcastState

logger = logging.getLogger(__name__)

ENDS_CLOSE_TIMEOUT_S = 10.0
ENDS_MAX_BACKOFF_S = 30.0


class PendingEnds:
    """Ends of broadcasts not yet saved in the catalog, saved again until they are.

    The live state may have lost the broadcast (Redis restarted), so the ended record
    is built from the catalog's own row when the live state has none. What is still
    unsaved when the node stops is left to the archiver's sweep, which fails the
    broadcast once this node stops heartbeating and makes its VOD all the same."""

    def __init__(self, catalog: Catalog, threads: ThreadPoolExecutor, *,
                 base_backoff_s: float = 0.25,
                 max_backoff_s: float = ENDS_MAX_BACKOFF_S) -> None:
        self.catalog = catalog
        self.threads = threads
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._pending: dict[str, tuple[Broadcast | None, datetime, BroadcastState]] = {}
        self._retry: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, broadcast_id: str, ended: Broadcast | None, ended_at: datetime,
               state: BroadcastState = BroadcastState.ENDED) -> None:
        self._pending[broadcast_id] = (ended, ended_at, state)

    async def save_now(self) -> bool:
        """Try to save every pending end once; retry in the background what fails."""
        saved = await self._save_pending()
        if not saved and self._retry is None:
            self._retry = asyncio.create_task(self._retry_loop(), name="ingest-save-ends")
        return saved

    def save_soon(self) -> None:
        """Save pending ends in the background: the caller does not wait for the catalog."""
        if self._pending and self._retry is None:
            self._retry = asyncio.create_task(self._retry_loop(), name="ingest-save-ends")

    def _save(self, broadcast_id: str, ended: Broadcast | None, ended_at: datetime,
              state: BroadcastState) -> None:
        if ended is None:
            current = self.catalog.get_broadcast(broadcast_id)
            if current is None:
                return  # never recorded: nothing to end
            ended = dataclasses.replace(current, state=state, ended_at=ended_at)
        self.catalog.save_broadcast(ended)

    async def _retry_loop(self) -> None:
        attempt = 0
        try:
            while self._pending:
                await asyncio.sleep(min(self.max_backoff_s,
                                        self.base_backoff_s * 2.0 ** attempt))
                attempt += 1
                if await self._save_pending():
                    logger.info("broadcast ends saved in the catalog after a failure")
        finally:
            self._retry = None

    async def _save_pending(self) -> bool:
        for broadcast_id, (ended, ended_at, state) in list(self._pending.items()):
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.threads, self._save, broadcast_id, ended, ended_at, state)
            except Exception as e:  # CatalogError, a full disk's OSError, ...
                logger.warning("cannot save a broadcast's end in the catalog; retrying",
                               extra={"broadcast_id": broadcast_id, "error": str(e)})
                return False  # the catalog is down for the others too
            self._pending.pop(broadcast_id, None)
        return True

    async def close(self, timeout_s: float) -> None:
        """Give pending ends up to ``timeout_s`` more, then stop retrying."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._save_pending()
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._pending:
            logger.error("broadcast ends never saved in the catalog; the archiver's sweep "
                         "will fail and archive them", extra={"broadcasts": sorted(self._pending)})
