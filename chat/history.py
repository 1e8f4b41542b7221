"""The recent messages of one channel (in-process mode; Redis keeps a capped list)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class HistoryRing:
    """The last ``size`` (id, frame) pairs of a channel, oldest first."""

    size: int
    _items: deque[tuple[int, str]] = field(init=False)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("history size must be >= 0")
        self._items = deque(maxlen=self.size)

    def append(self, message_id: int, frame: str) -> None:
        if self.size:
            self._items.append((message_id, frame))

    def delete(self, message_id: int) -> bool:
        for item in self._items:
            if item[0] == message_id:
                self._items.remove(item)
                return True
        return False

    def recent(self, limit: int | None = None) -> list[str]:
        frames = [frame for _, frame in self._items]
        return frames if limit is None else frames[max(0, len(frames) - limit):]

    def __len__(self) -> int:
        return len(self._items)
