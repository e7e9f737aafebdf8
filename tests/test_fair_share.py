"""Fair shares of the exchange and 3Commas budgets, on a FakeClock: nothing here waits for real time.

Interactive calls (a user's taps) may never delay background ones (scheduled checks): they queue
apart, fill at most ``1 - reserved`` of a window, draw on a bucket per user, and give up with a
retry time rather than wait long.
"""

from __future__ import annotations

import asyncio

import pytest

from services.core.clock import FakeClock
from services.exchanges.budget import BudgetRegistry, OverShare
from services.threecommas.errors import RateLimited
from services.threecommas.limiter import KeyLimiter

LISTING = 80  # Binance GET /api/v3/openOrders without a symbol
CHECK = 20  # Binance GET /api/v3/account, the scheduled check's balance call


class Time:
    """A FakeClock as the limiters' monotonic clock; sleeping moves it."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []
        self.hold: asyncio.Event | None = None
        """When set, sleepers stay asleep until it fires: a wait that is still going on."""

    def monotonic(self) -> float:
        return self.clock.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.hold is not None:
            await self.hold.wait()
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def time() -> Time:
    return Time()


def registry(time: Time, **shares: float) -> BudgetRegistry:
    """Binance at the default 6000/min, our share 3000: interactive 1500, a user 600 a minute."""
    return BudgetRegistry(monotonic=time.monotonic, sleep=time.sleep, **shares)


async def spend(budgets: BudgetRegistry, weight: float, user: int | None) -> float | None:
    """None when the call went; the retry time when its share was used up."""
    try:
        await budgets.acquire("binance", weight, user=user)
    except OverShare as over:
        return over.retry_after_s
    return None


async def test_one_users_flood_takes_their_bucket_and_no_more(time: Time) -> None:
    budgets = registry(time)
    results = await asyncio.gather(*(spend(budgets, LISTING, user=1) for _ in range(40)))
    went = [r for r in results if r is None]
    # 600 of weight a minute for one user: 7 listings of 80 at once and an 8th after 4 s (within
    # the 5 s a tap may wait), not 40; the others are told when to come back.
    assert len(went) == 8 and time.sleeps and all(s == pytest.approx(4) for s in time.sleeps)
    assert all(r is not None and 0 < r <= 60 for r in results if r is not None)
    assert budgets.in_use("binance") == 8 * LISTING

    assert await spend(budgets, LISTING, user=2) is None  # another user still has their share
    slept = len(time.sleeps)
    assert await spend(budgets, CHECK, user=None) is None and len(time.sleeps) == slept


async def test_a_bucket_refills_and_the_retry_time_says_when(time: Time) -> None:
    budgets = registry(time, interactive_wait_s=0)
    for _ in range(7):
        assert await spend(budgets, LISTING, user=1) is None
    retry = await spend(budgets, LISTING, user=1)
    assert retry == pytest.approx(4)  # 40 left, 80 needed, 10 a second come back
    time.clock.advance(retry)
    assert await spend(budgets, LISTING, user=1) is None


async def test_interactive_calls_together_leave_the_reserved_part_to_checks(time: Time) -> None:
    budgets = registry(time)
    results = await asyncio.gather(*(spend(budgets, LISTING, user=user) for user in range(100)))
    interactive = sum(LISTING for r in results if r is None)
    assert 1500 - LISTING < interactive <= 1500  # half of our 3000: the other half is reserved
    # The reserved half is all there for scheduled checks, at once.
    checks = await asyncio.gather(*(spend(budgets, CHECK, user=None) for _ in range(1500 // CHECK)))
    assert checks == [None] * (1500 // CHECK) and time.sleeps == []


async def test_a_check_never_queues_behind_an_interactive_call_that_waits(time: Time) -> None:
    budgets = registry(time, interactive_wait_s=120)
    for user in range(1500 // LISTING):  # the interactive half is full: 18 users' listings
        assert await spend(budgets, LISTING, user=user) is None
    time.hold = asyncio.Event()
    waiting = asyncio.create_task(budgets.acquire("binance", LISTING, user=99))
    await asyncio.sleep(0)
    assert time.sleeps and not waiting.done()  # it waits for the window, and keeps waiting
    # A scheduled check arriving now goes at once: the waiting tap holds nothing a check needs.
    await asyncio.wait_for(budgets.acquire("binance", CHECK), 1)
    assert len(time.sleeps) == 1
    time.hold.set()
    await waiting


async def test_an_interactive_call_gives_up_during_a_pause_a_check_waits_it_out(time: Time) -> None:
    budgets = registry(time)
    budgets.penalize("binance", 60)  # a 429: the exchange is paused for a minute
    assert await spend(budgets, CHECK, user=7) == pytest.approx(60)
    assert time.sleeps == []
    await budgets.acquire("binance", CHECK)
    assert time.sleeps == [pytest.approx(60)]


async def test_threecommas_taps_leave_half_of_each_window_to_the_keys_checks(time: Time) -> None:
    limiter = KeyLimiter(clock=time.monotonic, sleep=time.sleep)

    async def tap() -> str | None:
        try:
            await limiter.acquire("deals", interactive=True)
        except RateLimited as refused:
            assert 0 < (refused.retry_after or 0) <= 60
            return refused.error
        return None

    taps = await asyncio.gather(*(tap() for _ in range(89)))
    assert taps.count(None) == 47  # half of the 95 a minute the general window allows
    assert set(taps) == {None, "local_share"} and time.sleeps == []
    for _ in range(95 - 47):  # the scheduled checks' half is untouched
        await limiter.acquire("deals")
    assert time.sleeps == []
