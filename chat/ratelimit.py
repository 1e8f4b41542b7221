"""Token buckets with an injectable clock: per-connection send rate, per-process connects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]
EPSILON = 1e-9  # float refills (0.1 s x 10/s) must not miss a whole token by 1e-16


@dataclass(eq=False, slots=True)
class TokenBucket:
    """``rate`` tokens per second refill a bucket of ``burst``; it starts full.

    ``take()`` spends a token now or refuses; ``reserve(max_wait_s)`` books the next token
    and says how long to wait for it (or refuses, booking nothing, if that is too long):
    this paces a reconnect storm instead of refusing it outright.
    """

    rate: float
    burst: float
    clock: Clock = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._tokens = float(self.burst)
        self._stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0 - EPSILON:
            self._tokens -= 1.0
            return True
        return False

    def reserve(self, max_wait_s: float) -> float | None:
        """Seconds until the booked token is due (0: now), or None when over ``max_wait_s``.

        Tokens may go negative: each booking queues behind the earlier ones.
        """
        self._refill()
        deficit = 1.0 - self._tokens
        wait = deficit / self.rate if deficit > EPSILON else 0.0
        if wait > max_wait_s:
            return None
        self._tokens -= 1.0
        return wait
