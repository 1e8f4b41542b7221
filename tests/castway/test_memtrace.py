"""Heap snapshots name the line that holds what grew (castway/memtrace.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from castway import memtrace

held: list[bytes] = []


def hold_a_megabyte() -> None:
    held.extend(bytes(1024) for _ in range(1024))  # the growing line


async def test_growth_names_the_allocating_line(tmp_path: Path) -> None:
    task = asyncio.create_task(memtrace.write_snapshots(tmp_path, pid=1, every_s=0.05))
    try:
        await asyncio.sleep(0.12)  # tracing on, a first snapshot or two
        hold_a_megabyte()
        deadline = asyncio.get_running_loop().time() + 10
        while len(sorted(tmp_path.iterdir())) < 4:
            assert asyncio.get_running_loop().time() < deadline, "no snapshots written"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    snapshots = sorted(tmp_path.iterdir())
    assert all(p.name.startswith("heap-1-") for p in snapshots)
    top = memtrace.growth(snapshots[0], snapshots[-1], top=3)
    line = hold_a_megabyte.__code__.co_firstlineno + 1
    assert top[0].site == f"{__file__}:{line}"
    assert top[0].kib > 1024 and top[0].count >= 1024
    assert memtrace.heap_kib(snapshots[-1]) > memtrace.heap_kib(snapshots[0]) + 1024
    held.clear()
