"""TeeMedia's one contract field: the broadcast's ``dropped`` stat is its primary's."""

from __future__ import annotations

from castway.media import MediaPacket, TeeMedia
from castway.model import Broadcast


class Counting:
    def __init__(self, dropped: int) -> None:
        self.dropped = dropped

    async def feed(self, packet: MediaPacket) -> None: ...

    async def discontinuity(self) -> None: ...

    async def finish(self, *, failed: bool = False) -> None: ...

    async def hand_over(self) -> None: ...


BROADCAST = Broadcast(id="b1", channel="ch", node_id="n1")


def test_the_dropped_stat_is_the_transcoders_not_a_restream_targets() -> None:
    assert TeeMedia(Counting(7), [Counting(3)], BROADCAST).dropped == 7
    assert TeeMedia(None, [Counting(3)], BROADCAST).dropped == 0  # transcoding off
