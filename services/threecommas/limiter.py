"""Request budget for 3Commas: per key and route, plus the IP ban every key behind us shares.

3Commas' limits (docs ``quick-start/9_limits``, HEAD 0a55695):

* 100 requests a minute for the API as a whole; a 429 then restricts access for 300 s;
* ``GET /ver1/deals`` and ``GET /ver1/deals/:id/show``: 120 a minute, 60 s after a 429;
* the SmartTrade list: 40 per 10 s, 10 s after a 429 (the page says ``/ver1/smart_trades``;
  the only SmartTrade list left is ``GET /v2/smart_trades``);
* everything else — ``/ver1/deals/:id/market_orders`` included — falls under the general rule;
* ignoring 429s gets the *IP* auto-banned (418), from 2 minutes up to 3 days.

Real 429s arrive without ``Retry-After`` (a recorded 3Commas 429, recomma/3commas-sdk-go
``testdata``), so the block length comes from the route, not from the answer. A 418 ban is
about our address, not a key: one :class:`IpGate` is shared by every key's limiter, so the
whole IP pauses and no other user's key walks into a longer ban.

**Interactive calls.** A key belongs to one user, so its limiter already keeps users apart; what a
user's own taps can starve is the scheduled checks of that key (50 Orders taps once left 39
listings queued for over a minute). Calls made for a tap (``acquire(..., interactive=True)``)
therefore queue apart from background calls, may themselves send at most ``1 - reserved`` of
what each window allows (all calls together still at most all of it), and give up with
:class:`RateLimited` (code ``local_share``) rather than wait longer than ``interactive_wait_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.threecommas.errors import (
    Banned,
    RateLimited,
)

DEFAULT_ROUTE = "default"
DEALS_ROUTE = "deals"
SMART_TRADES_ROUTE = "smart_trades"


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """``requests`` per ``per_seconds`` as documented, and how long a 429 blocks the route."""

    requests: int
    per_seconds: float
    block_s: float


ROUTE_LIMITS = {
    DEFAULT_ROUTE: RouteLimit(100, 60.0, 300.0),
    DEALS_ROUTE: RouteLimit(120, 60.0, 60.0),
    SMART_TRADES_ROUTE: RouteLimit(40, 10.0, 10.0),
}
MARGIN = 0.95
"""The share of each documented limit the limiter allows: it stamps a call when it is sent,
3Commas counts it when it arrives, and uneven latency can squeeze a window's sends together."""

DEFAULT_BAN_S = 600.0
"""A 418 carries no length; ten minutes sits inside the documented 2 minutes … 3 days and
matches what recomma/3commas-sdk-go waits."""


def route_group(method: str, route: str) -> str:
    """Which documented limit a call falls under (``route`` without the ``/public/api`` prefix)."""
    path = route.split("?", 1)[0].rstrip("/")
    parts = path.split("/")
    if method == "GET" and (
        path == "/ver1/deals" or (len(parts) == 5 and parts[2] == "deals" and parts[4] == "show")
    ):
        return DEALS_ROUTE
    if method == "GET" and path == "/v2/smart_trades":
        return SMART_TRADES_ROUTE
    return DEFAULT_ROUTE


class IpGate:
    """The 418 ban of one egress IP; every :class:`KeyLimiter` sending from it shares one gate.

    :meth:`banned_for` is the signal the "our IP is blocked" guard reads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._banned_until = float("-inf")
        self.bans = 0

    def ban(self, seconds: float) -> None:
        self._banned_until = max(self._banned_until, self._clock() + seconds)
        self.bans += 1

    def banned_for(self) -> float:
        """Seconds left of the ban (0 when none runs)."""
        return max(0.0, self._banned_until - self._clock())


class KeyLimiter:
    """Keeps one 3Commas key under each documented window and honours blocks and the IP ban.

    Every call counts in the general window and in its route's window. After a 429
    (:meth:`block`) that route's calls wait when the block is at most ``max_wait_s`` and
    otherwise fail fast with :class:`RateLimited`, so a poller never hammers a blocked key into
    a ban. While the shared :class:`IpGate` is closed every call fails fast with :class:`Banned`.

    Interactive calls (module docstring) get ``1 - reserved`` of each window and wait at most
    ``interactive_wait_s``. ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests
    simulate time.
    """

    def __init__(
        self,
        *,
        ip: IpGate | None = None,
        limits: dict[str, RouteLimit] | None = None,
        margin: float = MARGIN,
        max_wait_s: float = 60.0,
        reserved: float = 0.5,
        interactive_wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = limits or ROUTE_LIMITS
        self.allowed = {name: max(1, int(limit.requests * margin)) for name, limit in self.limits.items()}
        self.allowed_interactive = {name: max(1, int(n * (1 - reserved))) for name, n in self.allowed.items()}
        self.max_wait_s = max_wait_s
        self.interactive_wait_s = interactive_wait_s
        self.ip = ip or IpGate(clock)
        self._clock = clock
        self._sleep = sleep
        self._sent: dict[str, deque[float]] = {name: deque() for name in self.limits}
        self._sent_by_taps: dict[str, deque[float]] = {name: deque() for name in self.limits}
        self._blocked_until: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._interactive_lock = asyncio.Lock()

    async def acquire(self, route: str = DEFAULT_ROUTE, *, interactive: bool = False) -> None:
        """Wait for a slot on ``route``; :class:`Banned` or :class:`RateLimited` instead of long waits.

        One waiter at a time per kind (background, interactive) keeps the order fair and the
        windows exact; the two kinds never wait for each other.
        """
        windows = [DEFAULT_ROUTE] if route == DEFAULT_ROUTE else [DEFAULT_ROUTE, route]
        if interactive:
            async with self._interactive_lock:
                await self._take(route, windows, self._clock() + self.interactive_wait_s)
        else:
            async with self._lock:
                await self._take(route, windows, None)

    async def _take(self, route: str, windows: list[str], deadline: float | None) -> None:
        """Record a send once every window has room. ``deadline`` marks a tap's call: its own share
        must have room too, and past the deadline it gives up instead of waiting."""
        while True:
            banned = self.ip.banned_for()
            if banned > 0:
                raise Banned(418, "local_ban", "3Commas ban of our IP still running", retry_after=banned)
            now = self._clock()
            blocked = self._blocked_until.get(route, float("-inf")) - now
            if blocked > 0:
                if blocked > self.max_wait_s or (deadline is not None and now + blocked > deadline):
                    raise RateLimited(429, "local_block", "3Commas block still running", retry_after=blocked)
                await self._sleep(blocked)
                continue
            wait = max(self._window_wait(self._sent, name, now, self.allowed) for name in windows)
            if deadline is not None:
                taps = (
                    self._window_wait(self._sent_by_taps, n, now, self.allowed_interactive) for n in windows
                )
                wait = max(wait, *taps)
            if wait <= 0:
                for name in windows:
                    self._sent[name].append(now)
                    if deadline is not None:
                        self._sent_by_taps[name].append(now)
                return
            if deadline is not None and now + wait > deadline:
                raise RateLimited(429, "local_share", "the key's share for taps is used up", retry_after=wait)
            await self._sleep(wait)

    def _window_wait(
        self, log: dict[str, deque[float]], name: str, now: float, allowed: dict[str, int]
    ) -> float:
        sent, span = log[name], self.limits[name].per_seconds
        while sent and sent[0] <= now - span:
            sent.popleft()
        return 0.0 if len(sent) < allowed[name] else sent[0] + span - now

    def block(self, route: str, seconds: float | None = None) -> float:
        """3Commas answered 429 on ``route``: no calls there for ``seconds`` (the route's documented
        block when 3Commas said nothing). Returns the block length."""
        length = seconds if seconds is not None else self.limits[route].block_s
        self._blocked_until[route] = max(
            self._blocked_until.get(route, float("-inf")), self._clock() + length
        )
        return length

    def ban(self, seconds: float) -> None:
        """3Commas answered 418: our IP is banned, for this key and every other."""
        self.ip.ban(seconds)
