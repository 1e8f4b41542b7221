"""The queue of one restream target: the packets it has not been sent yet, bounded in
bytes. A target that falls behind (slow network, a stall, a reconnect) loses whole GOPs
from the oldest end, so what it gets always starts at a video keyframe and never waits
on the ingest path. Sequence headers are never dropped: the next keyframe needs them.
"""

from __future__ import annotations

from collections import deque

from castway.media import MediaKind, MediaPacket


def _is_keyframe(packet: MediaPacket) -> bool:
    return packet.kind is MediaKind.VIDEO and packet.is_keyframe and not packet.is_config


class GopQueue:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[MediaPacket] = deque()
        self._bytes = 0
        #: The latest sequence header of each kind: what a new connection starts with.
        self.configs: dict[MediaKind, MediaPacket] = {}
        self.dropped_packets = 0
        self.dropped_bytes = 0
        # Video, once seen, starts at a keyframe (audio-only broadcasts never wait).
        self._need_keyframe = True

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, packet: MediaPacket) -> None:
        if packet.is_config:
            self.configs[packet.kind] = packet
        elif self._need_keyframe and MediaKind.VIDEO in self.configs:
            if not _is_keyframe(packet):
                self._count_drop(packet)
                return
            self._need_keyframe = False
        self._items.append(packet)
        self._bytes += len(packet.payload)
        while self._bytes > self.max_bytes and self._drop_oldest_gop():
            pass

    def pop(self) -> MediaPacket | None:
        if not self._items:
            return None
        packet = self._items.popleft()
        self._bytes -= len(packet.payload)
        return packet

    def restart(self) -> list[MediaPacket]:
        """A new connection: the sequence headers to send first (video, then audio), and
        the queue from its first keyframe on (everything before it is dropped)."""
        while self._items and MediaKind.VIDEO in self.configs \
                and not _is_keyframe(self._items[0]):
            packet = self._items.popleft()
            self._bytes -= len(packet.payload)
            if not packet.is_config:
                self._count_drop(packet)
        if not self._items and MediaKind.VIDEO in self.configs:
            self._need_keyframe = True
        return [self.configs[k] for k in (MediaKind.VIDEO, MediaKind.AUDIO)
                if k in self.configs]

    def _count_drop(self, packet: MediaPacket) -> None:
        self.dropped_packets += 1
        self.dropped_bytes += len(packet.payload)

    def _drop_oldest_gop(self) -> bool:
        """Drop from the head up to the next video keyframe (audio alongside it goes
        too); sequence headers stay, in order, ahead of what is left. False when there
        was nothing but sequence headers to drop."""
        before = self.dropped_packets
        kept: list[MediaPacket] = []
        while self._items and not (self.dropped_packets > before
                                   and _is_keyframe(self._items[0])):
            packet = self._items.popleft()
            self._bytes -= len(packet.payload)
            if packet.is_config:
                kept.append(packet)
            else:
                self._count_drop(packet)
        for packet in reversed(kept):
            self._items.appendleft(packet)
            self._bytes += len(packet.payload)
        if not any(_is_keyframe(p) for p in self._items) and MediaKind.VIDEO in self.configs:
            # Nothing left to start from: keep the headers, wait for the next keyframe.
            self._need_keyframe = True
            for packet in self._items:
                if not packet.is_config:
                    self._count_drop(packet)
            self._items = deque(p for p in self._items if p.is_config)
            self._bytes = sum(len(p.payload) for p in self._items)
        return self.dropped_packets > before
