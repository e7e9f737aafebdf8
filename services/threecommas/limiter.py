"""Per-key request budget for 3Commas, shared by every client built for that key."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from services.threecommas.errors import (
    Banned,
    RateLimited,
)

DEFAULT_BUDGET = 95
"""What :class:`KeyLimiter` allows per minute by default, under 3Commas' documented ~100 per key.
The limiter stamps a call when it is sent, 3Commas counts it when it arrives; uneven latency can
squeeze a minute's worth of sends into a shorter span at the server, and the 5 % margin absorbs
that."""


class KeyLimiter:
    """Keeps one 3Commas key under its request budget and honours 3Commas' blocks and bans.

    One instance per key, shared by every client built for that key. A sliding window keeps
    any ``per_seconds`` span at or below ``max_requests`` calls. After a 429 (:meth:`block`)
    calls wait when the block is at most ``max_wait_s`` long and otherwise fail fast with
    :class:`RateLimited`, so a poller never hammers a blocked key into a ban. After a 418
    (:meth:`ban`) every call fails fast with :class:`Banned` until the ban is over.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests simulate time.
    """

    def __init__(
        self,
        max_requests: int = DEFAULT_BUDGET,
        per_seconds: float = 60.0,
        *,
        max_wait_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError("max_requests and per_seconds must be positive")
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._banned_until = float("-inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a slot; raises :class:`Banned` or :class:`RateLimited` instead of long waits."""
        async with self._lock:  # one waiter at a time keeps the order fair and the window exact
            while True:
                now = self._clock()
                if now < self._banned_until:
                    raise Banned(
                        418, "local_ban", "3Commas ban still running", retry_after=self._banned_until - now
                    )
                if now < self._blocked_until:
                    wait = self._blocked_until - now
                    if wait > self.max_wait_s:
                        raise RateLimited(429, "local_block", "3Commas block still running", retry_after=wait)
                    await self._sleep(wait)
                    continue
                while self._sent and self._sent[0] <= now - self.per_seconds:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return
                await self._sleep(self._sent[0] + self.per_seconds - now)

    def block(self, seconds: float) -> None:
        """3Commas answered 429: no calls for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def ban(self, seconds: float) -> None:
        """3Commas answered 418: no calls at all for ``seconds``."""
        self._banned_until = max(self._banned_until, self._clock() + seconds)
