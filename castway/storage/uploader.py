"""The uploader: every object reaches archive storage, whatever storage does meanwhile.
``await Uploader.put(key, data)`` returns at once; failed uploads are spooled to disk and
retried until storage takes them.

Design: docs/archiver.md, "Every segment reaches storage: the uploader".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from prometheus_client import CollectorRegistry, Counter, Gauge

from castway.storage.base import IMMUTABLE, Storage
from castway.storage.keys import check_key
from castway.storage.pool import StoragePool

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
DEFAULT_MAX_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_BASE_BACKOFF_S = 0.25
DEFAULT_MAX_BACKOFF_S = 30.0
DEFAULT_CLOSE_TIMEOUT_S = 10.0
SPOOL_SUFFIX = ".spool"
_HEADER_LEN = struct.Struct(">I")
MAX_SPOOL_HEADER = 64 * 1024  # a header is a key plus two short strings
SPOOL_THREADS = 2  # local disk: writes while storage fails, reads while the spool drains


class SpoolCorrupt(Exception):
    """A spool file that cannot be read back (truncated or not castway's)."""


@dataclass(slots=True)
class _Entry:
    """One accepted object; ``data`` is in memory, or in the spool file ``path``, or both."""

    seq: int
    key: str
    content_type: str | None
    cache_control: str | None
    size: int
    data: bytes | None = None
    path: Path | None = None
    on_durable: Callable[[], None] | None = None  # called once: stored or spooled


@dataclass(frozen=True, slots=True)
class UploaderMetrics:
    uploads: Counter
    retries: Counter
    failures: Counter
    spool_errors: Counter
    spool_objects: Gauge
    spool_bytes: Gauge
    pending: Gauge
    memory_bytes: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> UploaderMetrics:
        return cls(
            uploads=Counter("castway_uploader_uploads", "Objects stored by the uploader.",
                            registry=registry),
            retries=Counter("castway_uploader_retries",
                            "Failed upload attempts that will be retried.", registry=registry),
            failures=Counter("castway_uploader_failures",
                             "Objects given up on (invalid, never retryable).",
                             registry=registry),
            spool_errors=Counter("castway_uploader_spool_errors",
                                 "Spool writes that failed (kept in memory instead).",
                                 registry=registry),
            spool_objects=Gauge("castway_uploader_spool_objects",
                                "Objects waiting in the local spool.", registry=registry),
            spool_bytes=Gauge("castway_uploader_spool_bytes",
                              "Bytes waiting in the local spool.", registry=registry),
            pending=Gauge("castway_uploader_pending",
                          "Objects accepted and not yet stored.", registry=registry),
            memory_bytes=Gauge("castway_uploader_memory_bytes",
                               "Bytes of accepted objects held in memory.", registry=registry),
        )


# -- the spool file format: 4-byte big-endian header length, JSON header, the bytes ----------

def _durable(entry: _Entry) -> None:
    callback, entry.on_durable = entry.on_durable, None
    if callback is not None:
        try:
            callback()
        except Exception:  # the caller's bookkeeping must not stop an upload worker
            logger.exception("on_durable callback failed", extra={"key": entry.key})


def encode_spool_record(entry: _Entry, data: bytes) -> bytes:
    header = json.dumps({"key": entry.key, "content_type": entry.content_type,
                         "cache_control": entry.cache_control, "size": len(data)}).encode()
    return _HEADER_LEN.pack(len(header)) + header + data


def _read_header(f: BinaryIO, path: Path) -> tuple[dict[str, object], int]:
    raw = f.read(_HEADER_LEN.size)
    if len(raw) != _HEADER_LEN.size:
        raise SpoolCorrupt(f"{path}: truncated header length")
    (n,) = _HEADER_LEN.unpack(raw)
    if n > MAX_SPOOL_HEADER:
        raise SpoolCorrupt(f"{path}: header of {n} bytes")
    try:
        header = json.loads(f.read(n))
    except ValueError as e:
        raise SpoolCorrupt(f"{path}: bad header: {e}") from e
    if not isinstance(header, dict) or not isinstance(header.get("key"), str) \
            or not isinstance(header.get("size"), int):
        raise SpoolCorrupt(f"{path}: header lacks key/size")
    return header, _HEADER_LEN.size + n


def _load_spool_header(path: Path, seq: int) -> _Entry:
    with path.open("rb") as f:
        header, offset = _read_header(f, path)
    size = int(header["size"])  # type: ignore[call-overload]
    if path.stat().st_size != offset + size:
        raise SpoolCorrupt(f"{path}: expected {offset + size} bytes")
    ct = header.get("content_type")
    cc = header.get("cache_control")
    return _Entry(seq=seq, key=str(header["key"]), size=size, path=path,
                  content_type=ct if isinstance(ct, str) else None,
                  cache_control=cc if isinstance(cc, str) else None)


def _load_spool_data(path: Path) -> bytes:
    with path.open("rb") as f:
        header, _ = _read_header(f, path)
        data = f.read()
    if len(data) != header["size"]:
        raise SpoolCorrupt(f"{path}: body of {len(data)} bytes, header says {header['size']}")
    return data


def _write_spool_file(directory: Path, name: str, record: bytes) -> Path:
    path = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


class Uploader:
    """Puts objects into ``storage`` in the background, spooling to ``spool_dir`` while
    storage fails. Owned by one event loop; ``close()`` it when done."""

    def __init__(self, storage: Storage, spool_dir: Path,
                 registry: CollectorRegistry | None = None, *,
                 workers: int = DEFAULT_WORKERS,
                 max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
                 base_backoff_s: float = DEFAULT_BASE_BACKOFF_S,
                 max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
                 close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
                 rng: Callable[[], float] = random.random) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if base_backoff_s <= 0 or max_backoff_s < base_backoff_s:
            raise ValueError("need 0 < base_backoff_s <= max_backoff_s")
        self.storage = storage
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = UploaderMetrics.create(registry or CollectorRegistry())
        self._workers_n = workers
        self._max_memory = max_memory_bytes
        self._base_backoff = base_backoff_s
        self._max_backoff = max_backoff_s
        self._close_timeout = close_timeout_s
        self._rng = rng
        self._storage_pool = StoragePool(workers, name="uploader-storage")
        self._disk_pool = StoragePool(SPOOL_THREADS, name="uploader-spool")

        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()  # bounded by _max_memory bytes
        self._retry: deque[_Entry] = deque()  # failed once: waiting for the drainer, seq order
        self._retry_wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[int, _Entry] = {}  # seq -> entry being uploaded
        self._seq = 0
        self._outstanding = 0
        self._memory_bytes = 0
        self._spool_objects = 0
        self._spool_bytes = 0
        self._healthy = True
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False
        # key -> (newest accepted seq, outstanding entries for the key)
        self._latest: dict[str, tuple[int, int]] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}

    # -- public API -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Objects accepted and not yet stored (in memory, in flight or spooled)."""
        return self._outstanding

    @property
    def healthy(self) -> bool:
        """False from a failed upload until the next successful one."""
        return self._healthy

    async def start(self) -> None:
        """Start the workers and recover the spool left by an earlier process (also done
        by the first ``put``)."""
        if self._closed:
            raise RuntimeError("uploader is closed")
        async with self._start_lock:  # concurrent first puts wait for the spool scan
            if self._started:
                return
            await self._start()
            self._started = True

    async def _start(self) -> None:
        recovered = await self._disk_pool.run(self._scan_spool)
        for entry in recovered:
            self._accept(entry)
            self._retry.append(entry)
        if recovered:
            self._healthy = False  # probe with one object before sending everything
            self._retry_wakeup.set()
            logger.info("draining spool left by an earlier run",
                        extra={"objects": len(recovered), "spool_dir": str(self.spool_dir)})
        self._tasks = [asyncio.create_task(self._worker(i), name=f"uploader-worker-{i}")
                       for i in range(self._workers_n)]
        self._tasks.append(asyncio.create_task(self._drainer(), name="uploader-drainer"))

    async def put(self, key: str, data: bytes, *, content_type: str | None = None,
                  cache_control: str | None = IMMUTABLE,
                  on_durable: Callable[[], None] | None = None) -> None:
        """Accept an object for upload. Never raises for storage faults; raises ValueError
        for an invalid key and RuntimeError after ``close()``. ``on_durable`` is called
        once the object would survive this process: stored, or written to the spool
        (which the next start drains)."""
        check_key(key)
        if self._closed:
            raise RuntimeError("uploader is closed")
        await self.start()
        self._seq += 1
        entry = _Entry(seq=self._seq, key=key, content_type=content_type,
                       cache_control=cache_control, size=len(data), data=bytes(data),
                       on_durable=on_durable)
        self._accept(entry)
        if self._healthy and self._memory_bytes + entry.size <= self._max_memory:
            self._hold(entry)
            self._queue.put_nowait(entry)
            return
        # Storage is failing, or too much is waiting: straight to the spool.
        if await self._spool(entry):
            self._retry.append(entry)
            self._retry_wakeup.set()
        else:
            self._hold(entry)  # the spool's disk failed too: keep it, past the limit
            self._retry.append(entry)
            self._retry_wakeup.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every accepted object is stored; False if ``timeout_s`` passes first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return self._outstanding == 0
        return True

    async def close(self, timeout_s: float | None = None) -> bool:
        """Flush for up to ``timeout_s`` (default: the constructor's), stop the workers and
        spool whatever is still only in memory. True if everything was stored."""
        if self._closed:
            return self._outstanding == 0
        self._closed = True
        done = True
        if self._started:
            done = await self.flush(self._close_timeout if timeout_s is None else timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        leftovers: list[_Entry] = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        leftovers.extend(e for e in self._retry if e.path is None)
        # Uploads cut short by the cancellation: spool them too (a second put is harmless).
        leftovers.extend(e for e in self._inflight.values() if e.path is None)
        self._inflight.clear()
        for entry in leftovers:
            if entry.path is None and entry.data is not None:
                await self._spool(entry)
        self._storage_pool.close()
        self._disk_pool.close()
        if not done:
            logger.warning("uploader closed with objects not yet stored; they stay spooled",
                           extra={"pending": self._outstanding,
                                  "spool_dir": str(self.spool_dir)})
        return done

    # -- bookkeeping ----------------------------------------------------------------------

    def _accept(self, entry: _Entry) -> None:
        seq, count = self._latest.get(entry.key, (0, 0))
        self._latest[entry.key] = (max(seq, entry.seq), count + 1)
        self._outstanding += 1
        self._idle.clear()
        self.metrics.pending.set(self._outstanding)

    def _finish(self, entry: _Entry) -> None:
        seq, count = self._latest[entry.key]
        if count <= 1:
            del self._latest[entry.key]
            self._key_locks.pop(entry.key, None)
        else:
            self._latest[entry.key] = (seq, count - 1)
        self._release(entry)
        if entry.path is not None:
            path, entry.path = entry.path, None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._spool_objects -= 1
            self._spool_bytes -= entry.size
            self._update_spool_metrics()
        self._outstanding -= 1
        self.metrics.pending.set(self._outstanding)
        if self._outstanding == 0:
            self._idle.set()

    def _superseded(self, entry: _Entry) -> bool:
        return entry.seq < self._latest[entry.key][0]

    def _hold(self, entry: _Entry) -> None:
        self._memory_bytes += entry.size
        self.metrics.memory_bytes.set(self._memory_bytes)

    def _release(self, entry: _Entry) -> None:
        if entry.data is not None:
            entry.data = None
            self._memory_bytes -= entry.size
            self.metrics.memory_bytes.set(self._memory_bytes)

    def _update_spool_metrics(self) -> None:
        self.metrics.spool_objects.set(self._spool_objects)
        self.metrics.spool_bytes.set(self._spool_bytes)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._max_backoff, self._base_backoff * (2.0 ** min(failures, 30)))
        return ceiling * (0.5 + 0.5 * self._rng())  # "equal jitter": never zero

    # -- the spool ------------------------------------------------------------------------

    def _scan_spool(self) -> list[_Entry]:
        entries: list[_Entry] = []
        for path in sorted(self.spool_dir.iterdir()):
            name = path.name
            if name.startswith("."):
                with contextlib.suppress(OSError):
                    path.unlink()  # a temporary file of a spool write cut short
                continue
            if not name.endswith(SPOOL_SUFFIX):
                continue
            try:
                seq = int(name.removesuffix(SPOOL_SUFFIX))
                entry = _load_spool_header(path, seq)
            except (ValueError, OSError, SpoolCorrupt) as e:
                logger.error("unreadable spool file set aside",
                             extra={"path": str(path), "error": str(e)})
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(f"{name}.corrupt"))
                continue
            entries.append(entry)
            self._spool_objects += 1
            self._spool_bytes += entry.size
        entries.sort(key=lambda e: e.seq)
        if entries:
            self._seq = max(self._seq, entries[-1].seq)
        self._update_spool_metrics()
        return entries

    async def _spool(self, entry: _Entry) -> bool:
        """Write ``entry`` to the spool and drop its bytes from memory; False (bytes kept)
        if the spool cannot be written."""
        data = entry.data
        if data is None or entry.path is not None:
            return entry.path is not None
        record = encode_spool_record(entry, data)
        try:
            entry.path = await self._disk_pool.run(
                _write_spool_file, self.spool_dir, f"{entry.seq:020d}{SPOOL_SUFFIX}", record)
        except OSError as e:
            self.metrics.spool_errors.inc()
            logger.error("cannot write the spool; keeping the object in memory",
                         extra={"key": entry.key, "size": entry.size, "error": str(e)})
            return False
        self._spool_objects += 1
        self._spool_bytes += entry.size
        self._update_spool_metrics()
        self._release(entry)
        _durable(entry)
        return True

    # -- uploading ------------------------------------------------------------------------

    async def _upload(self, entry: _Entry) -> bool | None:
        """One attempt. True: stored (or superseded); False: storage failed (retry);
        None: never retryable (the entry was dropped)."""
        lock = self._key_locks.setdefault(entry.key, asyncio.Lock())
        async with lock:
            if self._superseded(entry):
                _durable(entry)  # a newer version of the same key takes its place
                self._finish(entry)
                return True
            data = entry.data
            self._inflight[entry.seq] = entry
            try:
                if data is None:
                    assert entry.path is not None  # an entry is in memory or spooled
                    data = await self._disk_pool.run(_load_spool_data, entry.path)
                started = time.monotonic()
                await self._storage_pool.run(self.storage.put, entry.key, data,
                                        content_type=entry.content_type,
                                        cache_control=entry.cache_control)
            except (SpoolCorrupt, FileNotFoundError) as e:
                self.metrics.failures.inc()
                logger.error("spooled object lost: unreadable spool file",
                             extra={"key": entry.key, "error": str(e)})
                self._finish(entry)
                return None
            except (ValueError, TypeError) as e:
                self.metrics.failures.inc()
                logger.error("storage refused the object for good",
                             extra={"key": entry.key, "error": str(e)})
                self._finish(entry)
                return None
            except Exception as e:  # StorageError, or a backend's unwrapped I/O error
                self.metrics.retries.inc()
                if self._healthy:
                    logger.warning("upload failed; spooling and retrying",
                                   extra={"key": entry.key, "error": str(e)})
                self._healthy = False
                return False
            finally:
                self._inflight.pop(entry.seq, None)
        self.metrics.uploads.inc()
        logger.debug("uploaded", extra={"key": entry.key, "size": entry.size,
                                        "seconds": round(time.monotonic() - started, 3)})
        _durable(entry)
        self._finish(entry)
        return True

    async def _worker(self, index: int) -> None:
        while True:
            entry = await self._queue.get()
            if not self._healthy:
                await self._defer(entry)
                continue
            if await self._upload(entry) is False:
                await self._defer(entry)

    async def _defer(self, entry: _Entry) -> None:
        """Hand a failed (or not yet tried) in-memory entry to the drainer, spooled if the
        spool can take it (else it stays in memory, already counted)."""
        await self._spool(entry)
        self._retry.append(entry)
        self._retry_wakeup.set()

    async def _drainer(self) -> None:
        failures = 0
        while True:
            await self._retry_wakeup.wait()
            self._retry_wakeup.clear()
            while self._retry:
                # Probe with the oldest; once one succeeds, send a batch in parallel.
                batch = [self._retry.popleft()] if not self._healthy else [
                    self._retry.popleft() for _ in range(min(self._workers_n, len(self._retry)))]
                batch.sort(key=lambda e: e.seq)
                results = await asyncio.gather(*(self._upload(e) for e in batch))
                failed = [e for e, ok in zip(batch, results, strict=True) if ok is False]
                if not failed:
                    if not self._healthy:
                        logger.info("storage is back; draining the spool",
                                    extra={"spooled": self._spool_objects})
                    self._healthy = True
                    failures = 0
                    continue
                self._retry.extendleft(sorted(failed, key=lambda e: e.seq, reverse=True))
                for entry in failed:
                    if entry.path is None:
                        await self._spool(entry)  # try again: the spool disk may have room
                delay = self._backoff(failures)
                failures += 1
                self._retry_wakeup.clear()
                # Sleep the backoff; a put does not cut it short (storage is still down).
                await asyncio.sleep(delay)
