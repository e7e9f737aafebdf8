"""The shared limiter on a simulated clock: nothing here waits for real time."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.exchanges.budget import DEFAULT_BUDGETS, BudgetRegistry, Deferred


class SimTime:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def registry(sim: SimTime, overrides: dict[str, float] | None = None, share: float = 0.5) -> BudgetRegistry:
    return BudgetRegistry(overrides, share, monotonic=sim.monotonic, sleep=sim.sleep)


def max_in_any_window(stamps: list[tuple[float, float]], window: float) -> float:
    """Largest total weight admitted inside any half-open window (t - window, t]."""
    worst = 0.0
    for end, _ in stamps:
        worst = max(worst, sum(w for t, w in stamps if end - window < t <= end))
    return worst


async def admit_all(
    budgets: BudgetRegistry, sim: SimTime, exchange: str, weights: list[float]
) -> list[tuple[float, float]]:
    admitted: list[tuple[float, float]] = []

    async def one(weight: float) -> None:
        await budgets.acquire(exchange, weight)
        admitted.append((sim.now, weight))

    await asyncio.gather(*(one(w) for w in weights))
    return admitted


@pytest.mark.parametrize(
    ("exchange", "weights"),
    [
        ("binance", [1] * 4000),  # 4000 probes, share 3000 per 60 s
        ("binance", [1, 20] * 300),  # key checks and balance calls mixed
        ("bybit", [1] * 1000),  # 300 per 5 s
        ("okx", [1, 1, 2] * 50),  # 10 per 2 s
    ],
)
async def test_a_burst_never_exceeds_the_share_in_any_window(exchange: str, weights: list[float]) -> None:
    sim = SimTime()
    budgets = registry(sim)
    budget = DEFAULT_BUDGETS[exchange]
    admitted = await admit_all(budgets, sim, exchange, weights)
    assert len(admitted) == len(weights)
    assert max_in_any_window(admitted, budget.window_s) <= budget.limit * 0.5 + 1e-9
    # ...and it is a limit, not a trickle: the first window is used up completely.
    first = [w for t, w in admitted if t < 1000.0 + budget.window_s]
    assert sum(first) >= budget.limit * 0.5 - max(weights)


async def test_random_weights_and_arrivals_respect_the_window() -> None:
    sim = SimTime()
    budgets = registry(sim, overrides={"binance": 600})  # 300 of weight per minute for us
    rng = random.Random(7)
    admitted: list[tuple[float, float]] = []

    async def one(delay: float, weight: float) -> None:
        await sim.sleep(delay)
        await budgets.acquire("binance", weight)
        admitted.append((sim.now, weight))

    await asyncio.gather(*(one(rng.uniform(0, 120), rng.choice([1, 1, 1, 5, 20])) for _ in range(400)))
    assert max_in_any_window(admitted, 60) <= 300 + 1e-9


async def test_a_call_heavier_than_the_share_waits_for_an_empty_window() -> None:
    sim = SimTime()
    budgets = registry(sim, overrides={"okx": 60})  # 2 s window → limit 2, share 1
    await budgets.acquire("okx", 1)
    await budgets.acquire("okx", 50)  # clamped to the share: waits until the window is empty
    assert sim.now == pytest.approx(1002.0)


async def test_429_pause_applies_to_every_caller_on_that_exchange_only() -> None:
    sim = SimTime()
    budgets = registry(sim)
    await budgets.acquire("binance", 1)
    budgets.penalize("binance", 30)
    assert budgets.paused_for("binance") == pytest.approx(30)

    admitted = await admit_all(budgets, sim, "binance", [1] * 5)
    assert all(t >= 1030.0 for t, _ in admitted)

    sim.now = 2000.0
    budgets.penalize("binance", 30)
    await budgets.acquire("bybit", 1)  # not paused
    assert sim.now == 2000.0


async def test_pause_defaults_window_for_429_and_ban_length_for_418() -> None:
    sim = SimTime()
    budgets = registry(sim)
    budgets.penalize("binance")
    assert budgets.paused_for("binance") == pytest.approx(60)  # one weight window
    budgets.penalize("bybit", banned=True)
    assert budgets.paused_for("bybit") == pytest.approx(600)  # Bybit: at least 10 minutes
    budgets.penalize("binance", banned=True)
    assert budgets.paused_for("binance") == pytest.approx(120)  # Binance: bans start at 2 minutes
    budgets.penalize("binance", 5)  # a shorter pause never shortens a running one
    assert budgets.paused_for("binance") == pytest.approx(120)


async def test_a_waiter_already_sleeping_sees_a_pause_that_arrives_later() -> None:
    sim = SimTime()
    budgets = registry(sim, overrides={"okx": 60})  # share: 1 per 2 s
    await budgets.acquire("okx", 1)
    waiter = asyncio.create_task(budgets.acquire("okx", 1))
    await asyncio.sleep(0)
    budgets.penalize("okx", 100)
    await waiter
    assert sim.now >= 1100.0


async def test_used_weight_header_tightens_the_budget() -> None:
    sim = SimTime()
    budgets = registry(sim)  # binance: 3000 per 60 s for us
    await budgets.acquire("binance", 100)
    # Binance says this IP used 2900: another process spent 2800 we know nothing about.
    budgets.observe_used_weight("binance", 2900)
    await budgets.acquire("binance", 100)  # 2900 + 100 = 3000: still fits
    assert sim.now == 1000.0
    await budgets.acquire("binance", 1)  # does not fit until the others' weight has aged out
    assert sim.now == pytest.approx(1060.0)


async def test_used_weight_at_or_below_ours_clears_the_external_share() -> None:
    sim = SimTime()
    budgets = registry(sim)
    budgets.observe_used_weight("binance", 2999)
    budgets.observe_used_weight("binance", 0)  # the exchange's window rolled over
    await budgets.acquire("binance", 3000)
    assert sim.now == 1000.0


def test_stretch_interval_math() -> None:
    budgets = BudgetRegistry()
    # Binance: 3000 weight/min for us. 2000 connections × weight 1 every 60 s fits.
    assert budgets.stretch_interval("binance", 2000, 1, 60) == 60
    # With balances (21 each) 2000 connections need 42 000 weight: 14 minutes.
    assert budgets.stretch_interval("binance", 2000, 21, 60) == pytest.approx(840)
    # Bybit: 300 requests / 5 s = 60/s for us. 6000 connections at 60 s need 100/s → 100 s.
    assert budgets.stretch_interval("bybit", 6000, 1, 60) == pytest.approx(100)
    # OKX: 10 / 2 s = 5/s. 300 connections at 60 s fit exactly; 301 do not.
    assert budgets.stretch_interval("okx", 300, 1, 60) == 60
    assert budgets.stretch_interval("okx", 301, 1, 60) == pytest.approx(60.2)
    assert budgets.stretch_interval("okx", 0, 1, 60) == 60


def test_capacity_per_minute() -> None:
    budgets = BudgetRegistry()
    assert budgets.capacity_per_minute("binance", 1) == 3000
    assert budgets.capacity_per_minute("binance", 20) == 150
    assert budgets.capacity_per_minute("bybit", 1) == 3600
    assert budgets.capacity_per_minute("okx", 2) == 150


def test_overrides_are_per_minute_and_share_applies() -> None:
    budgets = BudgetRegistry({"bybit": 72_000, "kraken": 120}, share=1.0)
    assert budgets.budget("bybit").limit == 6000  # per 5 s window
    assert budgets.capacity_per_minute("bybit", 1) == 72_000
    assert budgets.capacity_per_minute("kraken", 1) == 120


def test_unknown_exchange_budget_comes_from_ccxt_rate_limit() -> None:
    budgets = BudgetRegistry()
    assert budgets.capacity_per_minute("gate", 1) == 30  # fallback: 60/min, half of it
    budgets.register_ccxt_default("gate", 50)  # ccxt gate rateLimit 50 ms → 1200/min
    assert budgets.capacity_per_minute("gate", 1) == 600
    budgets.register_ccxt_default("binance", 1)  # a table entry is never replaced
    assert budgets.capacity_per_minute("binance", 1) == 3000


def test_share_is_validated() -> None:
    with pytest.raises(ValueError):
        BudgetRegistry(share=0)


async def test_a_background_call_that_may_not_wait_is_deferred_at_once_to_slots_of_its_own() -> None:
    """A scheduled check must not sit in a poller slot while the share refills: past its
    ``defer_after_s`` it is put off, and calls put off together come back one after another at
    the rate the share refills (weight x window / share), not all at the same moment."""
    sim = SimTime()
    budgets = registry(sim, overrides={"okx": 60})  # 2 s window → limit 2, share 1 weight per 2 s
    await budgets.acquire("okx", 1, defer_after_s=2)  # fits: spent at once
    retries = []
    for _ in range(3):
        with pytest.raises(Deferred) as put_off:
            await budgets.acquire("okx", 1, defer_after_s=1)
        retries.append(put_off.value.retry_after_s)
    assert sim.sleeps == []  # nobody waited
    assert retries == pytest.approx([2.0, 4.0, 6.0])
    await budgets.acquire("okx", 1, defer_after_s=2)  # a wait within the bound is still a wait
    assert sim.now == pytest.approx(1002.0)


async def test_a_429_pause_defers_background_checks_until_it_ends() -> None:
    sim = SimTime()
    budgets = registry(sim)
    budgets.penalize("binance", 30)
    with pytest.raises(Deferred) as put_off:
        await budgets.acquire("binance", 1, defer_after_s=2)
    assert put_off.value.retry_after_s == pytest.approx(30, abs=0.1)
    assert sim.sleeps == []
