"""Benchmark: attribute 1,000 open orders against 1,000 deal orders.

Run: ``.venv/bin/python -m bench.attribution [--seed N] [--repeat N]``.

Absolute milliseconds depend on the machine, so two baselines are measured in the same run:

* ``sort``  – just sorting the deal orders by (symbol, side, price), the floor for any indexed
  matcher;
* ``naive`` – the O(n·m) matcher (every open order against every deal order) timed on a
  100-order slice and scaled ×10, what the index exists to avoid.

The data set imitates the morning after a mass key revocation: 250 DCA deals (one take-profit
sell plus safety buys) over 80 markets of very different price scales, two thirds finished;
most of their orders still open on the exchange (rounded to the grid by 3Commas, placed seconds
after 3Commas recorded them, some partly filled), a few deals cloned by multi-deal bots, some
deal orders without a time, and manual orders filling the list up to 1,000.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from operator import attrgetter

from services.orders.attribution import DealOrder, MarketPrecision, OpenOrder, attribute

ORDERS = 1000
DEALS = 250
MARKETS = 80
NAIVE_SLICE = 100
WINDOW = timedelta(minutes=2)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def make_markets(rng: random.Random) -> dict[str, tuple[MarketPrecision, Decimal]]:
    """Symbol → (precision, reference price), from sub-cent coins to BTC-sized prices."""
    markets = {}
    for i in range(MARKETS):
        magnitude = rng.randint(-4, 4)
        tick = Decimal(1).scaleb(magnitude - 4)
        step = Decimal(1).scaleb(-magnitude // 2 - 1)
        price = (Decimal(rng.uniform(1, 9.99)).scaleb(magnitude)).quantize(tick)
        markets[f"C{i}/USDT"] = (MarketPrecision(tick=tick, step=step), price)
    return markets


def make_world(rng: random.Random) -> tuple[list[OpenOrder], list[DealOrder], dict[str, MarketPrecision]]:
    markets = make_markets(rng)
    symbols = list(markets)
    deal_orders: list[DealOrder] = []
    opened: list[OpenOrder] = []

    def place(symbol: str, side: str, price: Decimal, amount: Decimal, at: datetime, tag: str) -> None:
        precision = markets[symbol][0]
        on_grid = price.quantize(precision.tick, ROUND_HALF_UP)
        size = amount.quantize(precision.step, ROUND_DOWN)
        filled = (size * Decimal(rng.choice([0, 0, 0, 0, 25, 60])) / 100).quantize(precision.step)
        opened.append(
            OpenOrder(
                order_id=f"{tag}-{len(opened)}",
                symbol=symbol,
                side=side,  # type: ignore[arg-type]
                price=on_grid,
                amount=size - filled,
                filled=filled,
                created_at=at + timedelta(seconds=rng.uniform(0.2, 20)),
            )
        )

    deal_id = 0
    while len(deal_orders) < ORDERS:
        deal_id += 1
        symbol = rng.choice(symbols)
        precision, reference = markets[symbol]
        entry = reference * Decimal(rng.uniform(0.95, 1.05))  # deals open at different prices
        status = "active" if rng.random() < 0.35 else "finished"
        start = T0 + timedelta(minutes=rng.uniform(0, 7 * 24 * 60))
        clones = 2 if rng.random() < 0.04 else 1  # multi-deal bot starting twin deals
        legs = [("sell", entry * Decimal("1.015"), start + timedelta(minutes=rng.uniform(1, 600)))]
        legs += [
            ("buy", entry * (1 - Decimal("0.02") * n), start + timedelta(seconds=n))
            for n in range(1, rng.randint(2, 5))
        ]
        for clone in range(clones):
            for side, raw_price, at in legs:
                # 3Commas sometimes reports the unrounded price; the exchange only has the grid one.
                price = raw_price if rng.random() < 0.3 else raw_price.quantize(precision.tick)
                amount = (Decimal(25) / raw_price).quantize(precision.step) + precision.step
                deal_orders.append(
                    DealOrder(
                        deal_ref=f"deal:{deal_id}.{clone}",
                        deal_status=status,  # type: ignore[arg-type]
                        symbol=symbol,
                        side=side,  # type: ignore[arg-type]
                        price=price,
                        amount=amount,
                        created_at=None if rng.random() < 0.1 else at,
                        label=f"bot {deal_id} / {symbol}",
                    )
                )
                if rng.random() < 0.7:
                    place(symbol, side, raw_price, amount, at, "bot")
    while len(opened) < ORDERS:
        symbol = rng.choice(symbols)
        reference = markets[symbol][1]
        price = reference * Decimal(rng.uniform(0.9, 1.1))
        place(symbol, rng.choice(["buy", "sell"]), price, Decimal(25) / price, T0, "manual")
    rng.shuffle(opened)
    by_symbol = {symbol: market[0] for symbol, market in markets.items()}
    return opened[:ORDERS], deal_orders[:ORDERS], by_symbol


def naive_candidates(
    orders: Sequence[OpenOrder], deal_orders: Sequence[DealOrder], precision: dict[str, MarketPrecision]
) -> int:
    """Every open order against every deal order; returns the number of fitting pairs."""
    pairs = 0
    for order in orders:
        market = precision[order.symbol]
        original = order.amount + order.filled
        for deal in deal_orders:
            if (
                deal.symbol == order.symbol
                and deal.side == order.side
                and abs(deal.price - order.price) < market.tick
                and abs(deal.amount - original) < market.step
                and (deal.created_at is None or abs(deal.created_at - order.created_at) <= WINDOW)
            ):
                pairs += 1
    return pairs


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark open-order attribution.")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    orders, deal_orders, precision = make_world(random.Random(args.seed))
    results = attribute(orders, deal_orders, precision, time_window=WINDOW)
    mix = Counter(f"{r.attribution}/{r.reason}" for r in results)

    run = timed(lambda: attribute(orders, deal_orders, precision, time_window=WINDOW), args.repeat)
    sort = timed(lambda: sorted(deal_orders, key=attrgetter("symbol", "side", "price")), args.repeat)
    naive_slice = timed(lambda: naive_candidates(orders[:NAIVE_SLICE], deal_orders, precision), 3)
    attribute_ms = statistics.median(run)
    sort_ms = statistics.median(sort)
    naive_ms = statistics.median(naive_slice) * (len(orders) / NAIVE_SLICE)

    print(f"{len(orders)} open orders × {len(deal_orders)} deal orders, {MARKETS} markets, seed {args.seed}")
    print("mix: " + ", ".join(f"{key}={count}" for key, count in sorted(mix.items())))
    print(f"attribute      median {attribute_ms:8.2f} ms   best {min(run):8.2f} ms   (budget 50 ms)")
    print(f"baseline sort  median {sort_ms:8.2f} ms   attribute/sort  = {attribute_ms / sort_ms:6.1f}×")
    print(f"baseline naive scaled {naive_ms:8.2f} ms   naive/attribute = {naive_ms / attribute_ms:6.1f}×")


if __name__ == "__main__":
    main()
