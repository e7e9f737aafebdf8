"""Request budget per exchange for this process's egress IP, and the limiter that enforces it.

Exchanges limit per IP (and some per account). All connections of all users leave through the same
IP, so one over-eager poller gets everybody banned: Binance escalates 429s into 418 IP bans of 2
minutes up to 3 days, Bybit bans an IP for at least 10 minutes. We therefore budget per exchange,
use only ``share`` of what the exchange allows (default 50 %, leaving room for retries, markets
loading and other processes on the same IP), and pause the whole exchange when it pushes back.

Budgets (``limit`` weight per ``window_s``, per IP; each call costs the exchange's own weight):

* **binance** 6000 / 60 s. Spot ``REQUEST_WEIGHT`` limit per IP
  (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits; also the figure in
  ccxt binance.py describe() "IP (api) request rate limit of 6000 per minute"). ``X-MBX-USED-WEIGHT-1M``
  reports the api pool.
* **binance_sapi** 12 000 / 60 s: ``/sapi`` endpoints have their own IP pool, separate from
  ``/api``'s (ccxt binance.py describe() comment "IP (sapi) request rate limit of 12 000 per
  minute"; ``X-SAPI-USED-IP-WEIGHT-1M``). Calls to ``sapi*`` methods are counted there
  (:func:`pool_of`), so the key checks (apiRestrictions) do not eat the balance calls' budget.
* **binanceusdm** 2400 / 60 s. USDⓈ-M futures IP weight limit
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info).
* **binancecoinm** 2400 / 60 s. COIN-M futures, the same rule on their own API
  (https://developers.binance.com/docs/derivatives/coin-margined-futures/general-info).
* **bybit** 600 / 5 s. "600 requests within a 5-second window per IP"; breaking it gives
  "403, access too frequent" and a ban of at least 10 minutes
  (https://bybit-exchange.github.io/docs/v5/rate-limit). Per-UID limits (query-api 10/s,
  ccxt bybit.py ~438) are per user and irrelevant at probe frequencies.
* **okx** 20 / 2 s for *public* calls (markets), the per-IP rule of OKX's public endpoints. OKX
  limits private endpoints per user ID and endpoint, not per IP
  (https://www.okx.com/docs-v5/en/#overview-rate-limits): ``/api/v5/account/config`` 5 / 2 s,
  ``/api/v5/account/balance`` 10 / 2 s, ``/api/v5/trade/orders-pending`` and order endpoints
  60 / 2 s. Private calls are therefore paced per key and endpoint (:data:`USER_LIMITS`,
  :func:`pool_of`), never against an invented IP-wide figure.
* **any other exchange**: 60000 / ccxt ``rateLimit`` requests per minute (ccxt's pacing for one
  IP at cost 1), registered by the hub via :meth:`BudgetRegistry.register_ccxt_default`.

The limiter is a sliding-window log rather than a token bucket: a bucket of capacity C refilled at
C per window lets 2·C through in a window that starts with a full bucket, and the exchanges count
windows, not buckets.

**Fair shares.** Calls made for a user's tap (an ``/orders`` listing: Binance weight 80 + 20) are
*interactive*; everything else — the scheduled checks above all — is *background*. One user
tapping Orders 40 times once spent 2,981 of our 3,000 Binance weight and another user's check
waited over 20 s behind them. So:

* background and interactive calls queue separately (one lock each), so a scheduled check never
  waits behind a sleeping interactive call;
* interactive calls together never spend more than ``1 - reserved`` of our share in a window
  (and all calls together never more than the share): the ``reserved`` part (default half) is
  always there for background calls;
* each user's interactive calls draw on a token bucket per pool (``per_user`` of our share per
  window, refilled evenly), so one user cannot take the whole interactive part;
* an interactive call never waits longer than ``interactive_wait_s``: it raises
  :class:`OverShare` (nothing was sent) and the user is told when to try again.

The fractions hold across processes too: a ``serve`` process's interactive weight reaches the
workers as the exchange's used-weight header (:meth:`BudgetRegistry.observe_used_weight`), and it
never exceeds ``1 - reserved`` of a share.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace


class NotNow(Exception):
    """A call would have to wait for the budget longer than it may. Nothing was sent;
    ``retry_after_s`` says when to try again."""

    def __init__(self, pool: str, retry_after_s: float, why: str) -> None:
        super().__init__(f"{pool}: {why}, retry in {retry_after_s:.0f} s")
        self.pool = pool
        self.retry_after_s = retry_after_s


class OverShare(NotNow):
    """An interactive call would have to wait longer than it may (its user's share of the pool, or
    the interactive part of the window, is used up)."""

    def __init__(self, pool: str, retry_after_s: float) -> None:
        super().__init__(pool, retry_after_s, "interactive share used up")


class Deferred(NotNow):
    """A background call would wait past its ``defer_after_s``: our share of the window is spent
    (or the exchange paused us). ``retry_after_s`` is a slot of its own: calls deferred together
    come back one after another at the rate the share refills, not all at the same moment."""

    def __init__(self, pool: str, retry_after_s: float) -> None:
        super().__init__(pool, retry_after_s, "our share of the window is spent")


@dataclass(frozen=True, slots=True)
class Budget:
    """What one exchange allows one IP: ``limit`` weight per ``window_s`` seconds."""

    limit: float
    window_s: float
    ban_pause_s: float
    """Pause after an IP ban when the exchange does not say for how long."""
    source: str
    used_weight_header: str | None = None
    """Lower-case response header carrying the IP's used weight in the current window."""


DEFAULT_BUDGETS: dict[str, Budget] = {
    "binance": Budget(
        6000,
        60,
        120,
        "https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits",
        "x-mbx-used-weight-1m",
    ),
    "binanceusdm": Budget(
        2400,
        60,
        120,
        "https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info",
        "x-mbx-used-weight-1m",
    ),
    "binancecoinm": Budget(
        2400,
        60,
        120,
        "https://developers.binance.com/docs/derivatives/coin-margined-futures/general-info",
        "x-mbx-used-weight-1m",
    ),
    "bybit": Budget(600, 5, 600, "https://bybit-exchange.github.io/docs/v5/rate-limit"),
    "okx": Budget(20, 2, 60, "https://www.okx.com/docs-v5/en/#overview-rate-limits"),
}
DEFAULT_BUDGETS["binance_sapi"] = Budget(
    12_000,
    60,
    120,
    "ccxt binance.py describe(): IP (sapi) request rate limit of 12 000 per minute",
    "x-sapi-used-ip-weight-1m",
)
_OKX_LIMITS = "https://www.okx.com/docs-v5/en/#overview-rate-limits"
# (exchange family, ccxt method) → requests per 2 s that one user (key) may send to that endpoint.
USER_LIMITS: dict[tuple[str, str], float] = {
    ("okx", "privateGetAccountConfig"): 5,
    ("okx", "fetch_balance"): 10,
    ("okx", "privateGetAccountBalance"): 10,
    ("okx", "fetch_open_orders"): 60,
    ("okx", "fetch_order"): 60,
    ("okx", "cancel_order"): 60,
}


def pool_of(family: str, method: str, api_key: str) -> tuple[str, Budget | None]:
    """The budget a call counts against: Binance ``sapi*`` calls their own IP pool, OKX private
    calls a per-key, per-endpoint window (returned with its budget), everything else the exchange's."""
    if family == "binance" and method.startswith("sapi"):
        return "binance_sapi", None
    per_user = USER_LIMITS.get((family, method))
    if per_user is not None:
        return f"{family}:{method}:{api_key}", Budget(per_user, 2, 60, _OKX_LIMITS)
    return "", None


FALLBACK_BUDGET = Budget(60, 60, 300, "conservative default for an exchange nobody registered")


@dataclass(frozen=True, slots=True)
class ProbeWeights:
    """Weight of the probe's two calls, in the exchange's own units."""

    key_check: float
    balances: float


PROBE_WEIGHTS: dict[str, ProbeWeights] = {
    # GET /sapi/v1/account/apiRestrictions: IP weight 1; GET /api/v3/account: 20
    # (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/account-endpoints);
    # GET /fapi/v3/account: 5 (USDⓈ-M "Account Information V3").
    "binance": ProbeWeights(1, 20),
    "binanceusdm": ProbeWeights(1, 5),
    # Bybit and OKX budgets count requests: /v5/user/query-api + /v5/account/wallet-balance,
    # /api/v5/account/config + /api/v5/account/balance.
    "bybit": ProbeWeights(1, 1),
    "okx": ProbeWeights(1, 1),
}
GENERIC_PROBE_WEIGHT = 2.0
"""Other exchanges: ccxt ``fetch_balance`` is the probe; it may first look up the account mode
(KuCoin ``is_uta_enabled``) and then fetch the balance: two requests."""


@dataclass(slots=True)
class _Log:
    """Weight spent in a sliding window of ``span`` seconds: (stamp, weight) entries and their sum."""

    span: float
    entries: deque[tuple[float, float]] = field(default_factory=deque)
    used: float = 0.0

    def prune(self, now: float) -> None:
        horizon = now - self.span
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.used -= entries.popleft()[1]
        if not entries:
            self.used = 0.0  # no float drift accumulates across idle periods

    def wait_for(self, now: float, weight: float, room: float) -> float | None:
        """Seconds until ``weight`` fits into ``room``; 0 when it fits now, None when what this log
        holds cannot make enough room by itself."""
        self.prune(now)
        excess = self.used + weight - room
        if excess <= 0:
            return 0.0
        freed = 0.0
        for stamp, spent in self.entries:
            freed += spent
            if freed >= excess:
                return stamp + self.span - now
        return None

    def spend(self, now: float, weight: float) -> None:
        self.entries.append((now, weight))
        self.used += weight


@dataclass(slots=True)
class _Window:
    """Our share of one pool: everything we spent (``log``), what taps spent (``taps``), other
    processes' weight as the exchange reported it, and a pause after a 429 or a ban."""

    budget: Budget
    cap: float
    log: _Log
    taps: _Log
    external: float = 0.0
    external_until: float = 0.0
    paused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Background calls queue here, FIFO."""
    interactive_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Interactive calls queue here, so they never hold up a background call while they wait."""
    deferred_until: float = 0.0
    """The last slot handed to a deferred background call (:meth:`defer`)."""

    def wait_for(self, now: float, weight: float, taps_cap: float | None = None) -> float:
        """Seconds until ``weight`` fits under the cap (and, for a tap, what taps spent under
        ``taps_cap``); 0 when it fits now."""
        if now < self.paused_until:
            return self.paused_until - now
        external = self.external if now < self.external_until else 0.0
        wait = self.log.wait_for(now, weight, self.cap - external)
        if wait is None:  # what we spent cannot make room by itself: the rest is other processes'
            wait = max(self.external_until - now, 0.0)
        if taps_cap is not None:
            wait = max(wait, self.taps.wait_for(now, weight, taps_cap) or 0.0)
        return wait

    def spend(self, now: float, weight: float, *, tap: bool = False) -> None:
        self.log.spend(now, weight)
        if tap:
            self.taps.spend(now, weight)

    def defer(self, now: float, delay: float, weight: float) -> float:
        """Seconds until a deferred call of ``weight`` should come back: the first moment it could
        fit, or, behind calls deferred before it, the share's refill time for their weight."""
        start = max(self.deferred_until, now + delay)
        self.deferred_until = start + weight * self.budget.window_s / self.cap
        return start - now

    def in_use(self, now: float) -> float:
        self.log.prune(now)
        return self.log.used + (self.external if now < self.external_until else 0.0)


@dataclass(slots=True)
class _Bucket:
    """One user's interactive share of one pool: ``capacity`` weight, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float
    stamp: float

    def wait_for(self, now: float, weight: float) -> float:
        """Seconds until the bucket holds ``weight``; 0 when it does now."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return max(weight - self.tokens, 0.0) / self.rate


MAX_IDLE_BUCKETS = 10_000
"""Past this many user buckets, full ones (indistinguishable from new ones) are dropped."""


class BudgetRegistry:
    """Per-exchange limiter shared by every connection of this process.

    ``overrides`` maps exchange id → allowed weight **per minute** (the bench raises them);
    ``reserved``, ``per_user`` and ``interactive_wait_s`` set the fair shares (module docstring);
    ``monotonic`` and ``sleep`` are injectable so tests drive time without waiting.
    """

    def __init__(
        self,
        overrides: dict[str, float] | None = None,
        share: float = 0.5,
        *,
        reserved: float = 0.5,
        per_user: float = 0.2,
        interactive_wait_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        if not 0 <= reserved < 1 or not 0 < per_user <= 1:
            raise ValueError("reserved must be in [0, 1) and per_user in (0, 1]")
        self.share = share
        self.reserved = reserved
        self.per_user = per_user
        self.interactive_wait_s = interactive_wait_s
        self._overrides = dict(overrides or {})
        self._budgets = dict(DEFAULT_BUDGETS)
        self._monotonic = monotonic
        self._sleep = sleep
        self._windows: dict[str, _Window] = {}
        self._buckets: dict[tuple[str, int], _Bucket] = {}

    def fresh(self) -> BudgetRegistry:
        """A registry with the same budgets, overrides and shares and nothing spent: another
        egress IP's (services/exchanges/egress.py)."""
        twin = BudgetRegistry(
            self._overrides,
            self.share,
            reserved=self.reserved,
            per_user=self.per_user,
            interactive_wait_s=self.interactive_wait_s,
            monotonic=self._monotonic,
            sleep=self._sleep,
        )
        twin._budgets = dict(self._budgets)
        return twin

    def register_ccxt_default(self, exchange_id: str, rate_limit_ms: float) -> None:
        """Budget for an exchange without a table entry, from ccxt's ``rateLimit`` (ms per request)."""
        if exchange_id not in self._budgets and rate_limit_ms > 0:
            self._budgets[exchange_id] = Budget(
                60_000 / rate_limit_ms, 60, 300, f"ccxt {exchange_id}.rateLimit = {rate_limit_ms} ms"
            )
            self._windows.pop(exchange_id, None)

    def register(self, name: str, budget: Budget) -> None:
        """A budget for a pool no table names (a per-user window); kept if already known."""
        self._budgets.setdefault(name, budget)

    def budget(self, exchange_id: str) -> Budget:
        """The budget in force (table, ccxt default or fallback, then the per-minute override)."""
        budget = self._budgets.get(exchange_id, FALLBACK_BUDGET)
        per_minute = self._overrides.get(exchange_id)
        if per_minute is not None:
            budget = replace(budget, limit=per_minute * budget.window_s / 60, source="override")
        return budget

    def _window(self, exchange_id: str) -> _Window:
        window = self._windows.get(exchange_id)
        if window is None:
            budget = self.budget(exchange_id)
            window = self._windows[exchange_id] = _Window(
                budget, budget.limit * self.share, _Log(budget.window_s), _Log(budget.window_s)
            )
        return window

    async def acquire(
        self, exchange_id: str, weight: float, *, user: int | None = None, defer_after_s: float | None = None
    ) -> None:
        """Wait until ``weight`` fits into our share of the exchange's window, then spend it.

        ``user`` marks an interactive call made for that user's tap (:meth:`_acquire_interactive`);
        without it the call is background (a scheduled check) and may use the whole share.
        Callers queue FIFO on a per-exchange lock, so a heavy call is not starved by light ones.
        A call heavier than our whole share is clamped to it: it waits for an empty window.

        ``defer_after_s`` bounds a background call's wait, the queue included: past it the call
        raises :class:`Deferred` instead. A scheduled check must not hold one of the poller's
        slots while its route's share refills (or a 429 pause runs out): the other routes' and
        exchanges' checks would wait behind it.
        """
        window = self._window(exchange_id)
        if user is not None:
            await self._acquire_interactive(exchange_id, window, float(weight), user)
            return
        weight = min(float(weight), window.cap)
        deadline = None if defer_after_s is None else self._monotonic() + defer_after_s
        async with window.lock:
            while True:
                now = self._monotonic()
                delay = window.wait_for(now, weight)
                if delay <= 0:
                    window.spend(now, weight)
                    return
                if deadline is not None and now + delay > deadline:
                    raise Deferred(exchange_id, window.defer(now, delay, weight))
                await self._sleep(delay)

    async def _acquire_interactive(self, pool: str, window: _Window, weight: float, user: int) -> None:
        """Spend from ``user``'s bucket, then from the interactive part of the window; raise
        :class:`OverShare` instead of waiting past ``interactive_wait_s``."""
        cap = window.cap * (1 - self.reserved)
        bucket = self._bucket(pool, user, window)
        weight = min(weight, cap, bucket.capacity)
        deadline = self._monotonic() + self.interactive_wait_s
        while (delay := bucket.wait_for(self._monotonic(), weight)) > 0:
            self._give_up_past(deadline, delay, pool)
            await self._sleep(delay)
        bucket.tokens -= weight
        try:
            async with window.interactive_lock:
                while True:
                    now = self._monotonic()
                    delay = window.wait_for(now, weight, cap)
                    if delay <= 0:
                        window.spend(now, weight, tap=True)
                        return
                    self._give_up_past(deadline, delay, pool)
                    await self._sleep(delay)
        except OverShare:
            bucket.tokens += weight  # nothing was spent
            raise

    def _give_up_past(self, deadline: float, delay: float, pool: str) -> None:
        now = self._monotonic()
        if now + delay > deadline:
            raise OverShare(pool, delay)

    def _bucket(self, pool: str, user: int, window: _Window) -> _Bucket:
        bucket = self._buckets.get((pool, user))
        if bucket is None:
            now = self._monotonic()
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                for key, old in list(self._buckets.items()):
                    if old.wait_for(now, old.capacity) <= 0:
                        del self._buckets[key]
            capacity = window.cap * self.per_user
            bucket = self._buckets[pool, user] = _Bucket(
                capacity, capacity / window.budget.window_s, capacity, now
            )
        return bucket

    def observe_used_weight(self, exchange_id: str, used: float) -> None:
        """The exchange reported ``used`` weight for this IP; count what we did not spend ourselves.

        More than we spent means other processes share the IP (another worker, a restart that lost
        our log). That surplus counts against the same share until one window has passed.
        """
        window = self._window(exchange_id)
        now = self._monotonic()
        window.log.prune(now)
        surplus = used - window.log.used
        if surplus > 0:
            window.external = surplus
            window.external_until = now + window.budget.window_s
        else:
            window.external = 0.0

    def penalize(self, exchange_id: str, retry_after_s: float | None = None, *, banned: bool = False) -> None:
        """The exchange throttled (429) or banned (418 / Bybit 403) us: pause every call to it.

        Without a ``Retry-After`` we wait one full window after a 429 (the exchange's counter has
        reset by then) and the exchange's minimum ban after a ban.
        """
        window = self._window(exchange_id)
        if retry_after_s is None:
            retry_after_s = window.budget.ban_pause_s if banned else window.budget.window_s
        window.paused_until = max(window.paused_until, self._monotonic() + retry_after_s)

    def in_use(self, exchange_id: str) -> float:
        """Weight counted in the current window: ours plus what the exchange says others spent."""
        return self._window(exchange_id).in_use(self._monotonic())

    def paused_for(self, exchange_id: str) -> float:
        """Seconds the exchange stays paused (0 when calls may go)."""
        return max(self._window(exchange_id).paused_until - self._monotonic(), 0.0)

    def capacity_per_minute(self, exchange_id: str, weight: float) -> float:
        """How many calls of ``weight`` our share allows per minute."""
        budget = self.budget(exchange_id)
        return budget.limit * self.share * (60 / budget.window_s) / weight

    def stretch_interval(
        self, exchange_id: str, connections: int, probe_weight: float, requested_interval_s: float
    ) -> float:
        """The probe interval our share can sustain for ``connections`` probes of ``probe_weight``.

        Returns ``requested_interval_s`` when it fits; otherwise the shortest interval that does,
        which spreads the budget evenly over all connections instead of starving the last ones.
        """
        budget = self.budget(exchange_id)
        weight_per_second = budget.limit * self.share / budget.window_s
        needed = connections * probe_weight / weight_per_second
        return max(requested_interval_s, needed)
