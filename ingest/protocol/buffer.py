"""A receive buffer that consumes exactly N bytes or rolls back (as wsproto's Buffer)."""

from __future__ import annotations

from ingest.protocol.errors import LimitExceeded


class NeedMoreData(Exception):  # noqa: N818 -- a control-flow signal, not an error
    """Not enough bytes yet; the caller rolls back and waits for more."""


class Buffer:
    """Bytes received but not yet parsed.

    ``consume(n)`` returns exactly ``n`` bytes or raises :class:`NeedMoreData`; a parse
    attempt is bracketed by ``commit()`` (keep what was consumed) or ``rollback()``
    (pretend nothing was read).
    """

    __slots__ = ("_data", "_pos", "_start", "max_size")

    def __init__(self, max_size: int) -> None:
        self._data = bytearray()
        self._pos = 0
        self._start = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        if len(self._data) - self._start + len(data) > self.max_size:
            raise LimitExceeded(f"receive buffer would exceed {self.max_size} bytes")
        self._data += data

    def consume(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise NeedMoreData
        out = bytes(self._data[self._pos:end])
        self._pos = end
        return out

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes without consuming them."""
        if self._pos + n > len(self._data):
            raise NeedMoreData
        return bytes(self._data[self._pos:self._pos + n])

    def commit(self) -> None:
        self._start = self._pos
        # Compact now and then rather than on every message.
        if self._start > 65536 and self._start * 2 > len(self._data):
            del self._data[:self._start]
            self._pos -= self._start
            self._start = 0

    def rollback(self) -> None:
        self._pos = self._start

    def __len__(self) -> int:
        """Bytes not yet committed as consumed."""
        return len(self._data) - self._start
