"""Consistent hashing of channels over shards."""

from __future__ import annotations

from collections import Counter

import pytest

from chat.sharding import HashRing

SHARDS = ("redis://a:6379/0", "redis://b:6379/0", "redis://c:6379/0")
CHANNELS = [f"channel-{i}" for i in range(3000)]


def test_the_mapping_is_stable_and_independent_of_shard_order() -> None:
    ring = HashRing(SHARDS)
    again = HashRing(tuple(reversed(SHARDS)))
    assert [ring.shard_for(c) for c in CHANNELS] == [again.shard_for(c) for c in CHANNELS]


def test_load_is_spread_evenly() -> None:
    ring = HashRing(SHARDS)
    counts = Counter(ring.shard_for(c) for c in CHANNELS)
    assert set(counts) == set(SHARDS)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_adding_a_shard_moves_only_its_share() -> None:
    before = HashRing(SHARDS)
    after = HashRing((*SHARDS, "redis://d:6379/0"))
    moved = [c for c in CHANNELS if before.shard_for(c) != after.shard_for(c)]
    assert all(after.shard_for(c) == "redis://d:6379/0" for c in moved)
    assert 0.15 <= len(moved) / len(CHANNELS) <= 0.35  # about 1/4


def test_one_shard_takes_everything() -> None:
    ring = HashRing(("redis://only:6379/0",))
    assert {ring.shard_for(c) for c in CHANNELS} == {"redis://only:6379/0"}


@pytest.mark.parametrize("shards", [(), ("a", "a")])
def test_empty_or_duplicate_shards_are_refused(shards: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        HashRing(shards)
