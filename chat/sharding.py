"""Consistent hashing of channels over Redis shards (Karger et al. 1997, virtual nodes).

Adding a shard moves only about 1/n of the channels; every process computes the same
mapping from the same list of URLs, whatever their order.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

VIRTUAL_NODES = 160  # per shard: keeps the load spread within a few percent


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class HashRing:
    shards: tuple[str, ...]
    vnodes: int = VIRTUAL_NODES
    _points: tuple[int, ...] = field(init=False, repr=False)
    _owners: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("a hash ring needs at least one shard")
        if len(set(self.shards)) != len(self.shards):
            raise ValueError("shards must be distinct")
        ring = sorted((_point(f"{shard}#{i}"), shard)
                      for shard in self.shards for i in range(self.vnodes))
        object.__setattr__(self, "_points", tuple(p for p, _ in ring))
        object.__setattr__(self, "_owners", tuple(s for _, s in ring))

    def shard_for(self, key: str) -> str:
        index = bisect.bisect(self._points, _point(key)) % len(self._points)
        return self._owners[index]
