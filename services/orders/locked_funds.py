"""Funds held by open orders, and how much cancelling the orphans would give back.

The point of the orphan feature is money the user cannot use, so the message shows it per
currency: balance total and free, how much all open orders lock, how much of that the orphans
lock, and what free would become after cancelling them.

Spot orders lock exactly computable amounts: a buy locks ``price × remaining`` of the quote
currency, a sell locks ``remaining`` of the base currency. Derivative symbols (ccxt ``BASE/QUOTE:SETTLE``
such as ``BTC/USDT:USDT`` linear perpetuals, dated futures ``...:USDT-250627``, inverse ``BTC/USD:BTC``)
hold *margin* in the settle currency, which depends on leverage, margin mode and offsetting
positions; it cannot be derived from the order alone, so such orders are reported as margin and
left out of the per-currency totals rather than shown with a made-up figure.

Everything is Decimal; balance values from ccxt may arrive as float, str, int or None and are
converted via their string form so 0.1 stays 0.1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.orders.attribution import AttributedOrder, Attribution, OpenOrder

BalanceValue = Decimal | float | int | str | None


class LockKind(StrEnum):
    SPOT = "spot"
    MARGIN = "margin"


@dataclass(frozen=True)
class Lock:
    """What one open order holds back; ``amount`` is None for margin (not computable)."""

    currency: str
    amount: Decimal | None
    kind: LockKind


@dataclass(frozen=True)
class CurrencyFunds:
    """One currency's balance next to what open orders lock.

    ``total``/``free`` are None when the balance did not list the currency.
    ``free_after_cancelling_orphans`` is ``free + locked_by_orphans``, capped at ``total``
    because balances and open orders are fetched at different moments and may disagree slightly.
    """

    currency: str
    total: Decimal | None
    free: Decimal | None
    locked_by_orders: Decimal
    locked_by_orphans: Decimal
    free_after_cancelling_orphans: Decimal | None


@dataclass(frozen=True)
class LockedFunds:
    """Per-currency spot figures (sorted by currency) and the derivative orders left out of them."""

    currencies: tuple[CurrencyFunds, ...]
    margin_orders: tuple[AttributedOrder, ...]


def _split_symbol(symbol: str) -> tuple[str, str, str | None]:
    """``BASE/QUOTE[:SETTLE[-EXPIRY...]]`` → (base, quote, settle or None for spot)."""
    market, _, settle_part = symbol.partition(":")
    base, slash, quote = market.partition("/")
    if not slash or not base or not quote or "/" in quote:
        raise ValueError(f"not a ccxt unified symbol: {symbol!r}")
    if not settle_part:
        return base, quote, None
    return base, quote, settle_part.split("-", 1)[0]


def freed_by(order: OpenOrder) -> Lock:
    """What ``order`` locks, which is exactly what cancelling it frees.

    Pass the order as last seen: after a cancel, the exchange's answer carries the remaining
    amount at cancel time, which may be smaller than when the list was shown.
    """
    base, quote, settle = _split_symbol(order.symbol)
    if settle is not None:
        return Lock(settle, None, LockKind.MARGIN)
    if order.side == "buy":
        return Lock(quote, order.price * order.amount, LockKind.SPOT)
    return Lock(base, order.amount, LockKind.SPOT)


def _to_decimal(value: BalanceValue) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    # str() of a float is its shortest round-tripping form, so 0.1 becomes Decimal("0.1").
    return Decimal(str(value))


def summarize(
    attributed: Sequence[AttributedOrder], balances: Mapping[str, Mapping[str, BalanceValue]]
) -> LockedFunds:
    """Locked funds per currency for every currency some spot order locks.

    ``balances`` maps a currency to at least ``free`` and ``total`` (ccxt ``fetch_balance()``
    per-currency entries). Currencies no order locks are omitted: the message is about locked
    funds, and a balance can list hundreds of dust currencies.
    """
    locked: defaultdict[str, Decimal] = defaultdict(Decimal)
    orphaned: defaultdict[str, Decimal] = defaultdict(Decimal)
    margin_orders: list[AttributedOrder] = []
    for item in attributed:
        lock = freed_by(item.order)
        if lock.amount is None:
            margin_orders.append(item)
            continue
        locked[lock.currency] += lock.amount
        if item.attribution is Attribution.ORPHAN:
            orphaned[lock.currency] += lock.amount

    currencies = []
    for currency in sorted(locked):
        balance = balances.get(currency, {})
        total = _to_decimal(balance.get("total"))
        free = _to_decimal(balance.get("free"))
        after: Decimal | None = None
        if free is not None:
            after = free + orphaned[currency]
            if total is not None:
                after = min(after, total)
        currencies.append(
            CurrencyFunds(
                currency=currency,
                total=total,
                free=free,
                locked_by_orders=locked[currency],
                locked_by_orphans=orphaned[currency],
                free_after_cancelling_orphans=after,
            )
        )
    return LockedFunds(tuple(currencies), tuple(margin_orders))
