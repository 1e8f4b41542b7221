"""glibc's allocator, told how a media server allocates.

A castway process frees large byte buffers (parts, segments, journal records) from
several threads all the time. glibc's defaults serve that badly: each thread may get an
arena of its own (up to 8 per core), and its sliding mmap threshold rises to the size of
the largest buffer freed, after which buffers of that size come from the arenas and the
freed pages stay resident. Resident memory then climbs for hours with a flat Python heap
(docs/reliability.md, "Memory over time"). Two settings and one call bring it back:

- ``M_ARENA_MAX``: a few arenas, not one per thread;
- ``M_MMAP_THRESHOLD`` fixed: media-sized buffers are mapped and unmapped, so their
  memory goes back to the system when freed (fixing it also stops the sliding);
- ``malloc_trim(0)`` now and then: gives back the free pages inside the arenas.

All three are no-ops where the C library is not glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@dataclass(frozen=True)
class AllocatorPolicy:
    arena_max: int  # 0: glibc's default
    mmap_threshold_bytes: int  # 0: glibc's default (sliding)
    trim_interval_s: float  # 0: never trim


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only
    except (OSError, AttributeError):
        return None
    return libc


def apply_allocator_policy(policy: AllocatorPolicy) -> threading.Thread | None:
    """Apply ``policy`` to this process (early: arenas already made stay); returns the
    daemon thread that trims, if any."""
    libc = _glibc()
    if libc is None:
        return None
    if policy.arena_max > 0 and libc.mallopt(M_ARENA_MAX, policy.arena_max) != 1:
        logger.warning("mallopt(M_ARENA_MAX) refused", extra={"value": policy.arena_max})
    if policy.mmap_threshold_bytes > 0 and \
            libc.mallopt(M_MMAP_THRESHOLD, policy.mmap_threshold_bytes) != 1:
        logger.warning("mallopt(M_MMAP_THRESHOLD) refused",
                       extra={"value": policy.mmap_threshold_bytes})
    if policy.trim_interval_s <= 0:
        return None
    trim = libc.malloc_trim
    trim.argtypes = [ctypes.c_size_t]

    def trim_forever() -> None:
        stop = threading.Event()  # never set: the thread ends with the process
        while not stop.wait(policy.trim_interval_s):
            trim(0)

    thread = threading.Thread(target=trim_forever, name="malloc-trim", daemon=True)
    thread.start()
    return thread
