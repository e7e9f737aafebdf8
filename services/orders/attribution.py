"""Attribute exchange open orders to 3Commas deals.

After a mass key revocation 3Commas marks deals finished but cannot cancel their limit orders,
which then sit on the exchange and lock funds. This module sorts every open order into:

* ``ACTIVE``  – it belongs to a running deal; cancelling it would break that deal.
* ``ORPHAN``  – it positively and uniquely belongs to one finished deal; safe to cancel in one tap.
* ``UNKNOWN`` – manual, another bot, or we cannot tell; the user decides.

3Commas never returns the exchange's order id or client order id (its ``order_id`` is an internal
trade id, one trade may span several exchange orders, and it re-places orders the exchange
cancelled under new exchange ids), so an order is recognised by what it looks like: symbol,
side, limit price, original amount and creation time. A false ORPHAN makes the user cancel a
live order with one tap, a false UNKNOWN only costs a manual look, so every rule below errs
towards UNKNOWN.

Matching rules (a deal order "fits" an exchange order when all hold):

* Same ccxt symbol and side. The caller converts 3Commas ``QUOTE_BASE`` pairs and maps deal
  statuses (completed, cancelled, failed, panic_sold, ...) to ``"finished"``.
* Price strictly within one tick: ``|Δprice| < tick``. 3Commas rounds prices to the market grid
  itself and its rounding mode is undocumented; any rounding of an off-grid price moves it by
  less than one tick, while a *different* on-grid price is at least one full tick away, so the
  strict bound accepts every rounding and rejects the neighbouring price level.
* Amount strictly within one step, ``|Δamount| < step``, comparing the deal order's quantity with
  the exchange order's *original* amount (remaining + filled), so partially filled orders still
  fit. Same reasoning as for the price.
* Markets without known precision fall back to a relative tolerance of 1e-8 (inclusive) on both
  price and amount: about "equal up to float noise". Too tight only ever yields UNKNOWN.
* Creation time within ``time_window`` (inclusive) when the deal order has a time. A finished
  deal order whose time disagrees does not fit at all: a same-looking order placed at another
  time is somebody else's. An *active* deal order fits regardless of time, because 3Commas
  re-places orders the exchange cancelled (new exchange id and time under the same trade) and
  treating a look-alike as active can only prevent a cancel, never cause one.

Decision for one exchange order, from the deal orders that fit it:

* none fit → UNKNOWN ``no_match``;
* both active and finished deals fit → UNKNOWN ``conflict_active_and_finished``;
* only active deals fit → ACTIVE; it names the deal (``matched_active``) only when a single deal
  fits and no other exchange order fits the same deal orders, otherwise ``ambiguous`` with no deal;
* only finished deals fit → ORPHAN ``matched_finished`` only when all fitting deal orders belong
  to one deal, no other exchange order fits any of them (one deal order claims at most one
  exchange order; a contested deal order claims none, even if one fit is closer, because
  closeness within a tick proves nothing), and at least one fit is corroborated by time
  (otherwise ``finished_time_unknown``). Anything else is UNKNOWN ``ambiguous``.

Deal orders are indexed by (symbol, side) and sorted by price, so each exchange order only
looks at the few deal orders inside its price band (bisect), not at all of them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal

Side = Literal["buy", "sell"]
DealStatus = Literal["active", "finished"]

UNKNOWN_PRECISION_TOLERANCE = Decimal("1e-8")
"""Relative price/amount tolerance for symbols missing from the precision map."""

_SIDES = frozenset({"buy", "sell"})
_DEAL_STATUSES = frozenset({"active", "finished"})


def _require_aware(moment: datetime, what: str) -> None:
    # Naive datetimes would compare as local time against UTC ones and shift the window by hours.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment!r}")


@dataclass(frozen=True)
class OpenOrder:
    """An open order as the exchange lists it (ccxt unified symbol, e.g. ``BTC/USDT``).

    ``amount`` is what is still open; ``filled`` what already traded, so the original size is
    their sum.
    """

    order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    filled: Decimal
    created_at: datetime
    client_order_id: str | None = None

    def __post_init__(self) -> None:
        if self.side not in _SIDES:
            raise ValueError(f"side must be 'buy' or 'sell', got {self.side!r}")
        _require_aware(self.created_at, "OpenOrder.created_at")

    @property
    def original_amount(self) -> Decimal:
        return self.amount + self.filled


@dataclass(frozen=True)
class DealOrder:
    """One limit order 3Commas placed for a deal or smart trade.

    ``deal_ref`` is ``"deal:<id>"`` or ``"smart_trade:<id>"``; ``amount`` is the order's full
    quantity; ``created_at`` is None when 3Commas did not report it (that weakens the match).
    """

    deal_ref: str
    deal_status: DealStatus
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    created_at: datetime | None
    label: str
    ended: str = ""  # a finished deal's ending (threecommas.entities.ending), "" while active

    def __post_init__(self) -> None:
        if self.side not in _SIDES:
            raise ValueError(f"side must be 'buy' or 'sell', got {self.side!r}")
        if self.deal_status not in _DEAL_STATUSES:
            raise ValueError(f"deal_status must be 'active' or 'finished', got {self.deal_status!r}")
        if self.created_at is not None:
            _require_aware(self.created_at, "DealOrder.created_at")


@dataclass(frozen=True)
class MarketPrecision:
    """The market's price tick and amount step (ccxt ``precision`` in TICK_SIZE mode)."""

    tick: Decimal
    step: Decimal

    def __post_init__(self) -> None:
        if self.tick <= 0 or self.step <= 0:
            raise ValueError(f"tick and step must be positive, got {self.tick} / {self.step}")


class Attribution(StrEnum):
    ACTIVE = "active"
    ORPHAN = "orphan"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Why an order got its attribution; stable strings for logs, metrics and message keys."""

    MATCHED_ACTIVE = "matched_active"
    MATCHED_FINISHED = "matched_finished"
    NO_MATCH = "no_match"
    AMBIGUOUS = "ambiguous"
    CONFLICT_ACTIVE_AND_FINISHED = "conflict_active_and_finished"
    FINISHED_TIME_UNKNOWN = "finished_time_unknown"


@dataclass(frozen=True)
class AttributedOrder:
    """An open order with its verdict; ``deal_ref`` is set only when one deal is named."""

    order: OpenOrder
    attribution: Attribution
    deal_ref: str | None
    reason: Reason


@dataclass(frozen=True, slots=True)
class _Fit:
    deal_index: int
    time_confirmed: bool


class _Bucket:
    """Deal orders of one (symbol, side), sorted by price for bisecting."""

    __slots__ = ("indices", "prices")

    def __init__(self, entries: list[tuple[Decimal, int]]) -> None:
        entries.sort()
        self.prices = [price for price, _ in entries]
        self.indices = [index for _, index in entries]


def _build_index(deal_orders: Sequence[DealOrder]) -> dict[tuple[str, str], _Bucket]:
    grouped: defaultdict[tuple[str, str], list[tuple[Decimal, int]]] = defaultdict(list)
    for index, deal_order in enumerate(deal_orders):
        grouped[(deal_order.symbol, deal_order.side)].append((deal_order.price, index))
    return {key: _Bucket(entries) for key, entries in grouped.items()}


def _fits(
    order: OpenOrder,
    bucket: _Bucket,
    deal_orders: Sequence[DealOrder],
    precision: MarketPrecision | None,
    time_window: timedelta,
) -> list[_Fit]:
    price = order.price
    original = order.original_amount
    if precision is not None:
        # Strict on both ends: a deal order exactly one tick away is the neighbouring price level.
        lo = bisect_right(bucket.prices, price - precision.tick)
        hi = bisect_left(bucket.prices, price + precision.tick)
        amount_limit, amount_strict = precision.step, True
    else:
        price_tolerance = abs(price) * UNKNOWN_PRECISION_TOLERANCE
        lo = bisect_left(bucket.prices, price - price_tolerance)
        hi = bisect_right(bucket.prices, price + price_tolerance)
        amount_limit, amount_strict = abs(original) * UNKNOWN_PRECISION_TOLERANCE, False

    fits: list[_Fit] = []
    for position in range(lo, hi):
        deal_index = bucket.indices[position]
        deal_order = deal_orders[deal_index]
        amount_gap = abs(deal_order.amount - original)
        if amount_gap > amount_limit or (amount_strict and amount_gap == amount_limit):
            continue
        if deal_order.created_at is None:
            fits.append(_Fit(deal_index, time_confirmed=False))
        elif abs(order.created_at - deal_order.created_at) <= time_window:
            fits.append(_Fit(deal_index, time_confirmed=True))
        elif deal_order.deal_status == "active":  # re-placed by 3Commas; may only veto a cancel
            fits.append(_Fit(deal_index, time_confirmed=False))
    return fits


def _decide(
    order: OpenOrder, fits: list[_Fit], deal_orders: Sequence[DealOrder], claims: list[int]
) -> AttributedOrder:
    if not fits:
        return AttributedOrder(order, Attribution.UNKNOWN, None, Reason.NO_MATCH)
    fitting = [deal_orders[fit.deal_index] for fit in fits]
    statuses = {deal_order.deal_status for deal_order in fitting}
    if len(statuses) > 1:
        return AttributedOrder(order, Attribution.UNKNOWN, None, Reason.CONFLICT_ACTIVE_AND_FINISHED)
    refs = {deal_order.deal_ref for deal_order in fitting}
    contested = any(claims[fit.deal_index] > 1 for fit in fits)
    if "active" in statuses:
        if len(refs) == 1 and not contested:
            return AttributedOrder(order, Attribution.ACTIVE, refs.pop(), Reason.MATCHED_ACTIVE)
        return AttributedOrder(order, Attribution.ACTIVE, None, Reason.AMBIGUOUS)
    if len(refs) > 1 or contested:
        return AttributedOrder(order, Attribution.UNKNOWN, None, Reason.AMBIGUOUS)
    if not any(fit.time_confirmed for fit in fits):
        return AttributedOrder(order, Attribution.UNKNOWN, None, Reason.FINISHED_TIME_UNKNOWN)
    return AttributedOrder(order, Attribution.ORPHAN, refs.pop(), Reason.MATCHED_FINISHED)


def attribute(
    orders: Sequence[OpenOrder],
    deal_orders: Sequence[DealOrder],
    precision: Mapping[str, MarketPrecision],
    *,
    time_window: timedelta = timedelta(minutes=2),
) -> list[AttributedOrder]:
    """Attribute each open order (same order as ``orders``) to an active deal, an orphan, or nobody.

    ``deal_orders`` should hold every order 3Commas placed that may still be open on the exchange:
    for active deals their open orders, for finished deals all orders not reported as filled
    (3Commas shows them cancelled even when the cancel never reached a revoked key). Passing more
    is safe: extra deal orders can only add ambiguity, never an orphan. ``precision`` is keyed by
    ccxt symbol; see the module docstring for the tolerances.
    """
    index = _build_index(deal_orders)
    all_fits: list[list[_Fit]] = []
    claims = [0] * len(deal_orders)
    for order in orders:
        bucket = index.get((order.symbol, order.side))
        fits = (
            _fits(order, bucket, deal_orders, precision.get(order.symbol), time_window)
            if bucket is not None
            else []
        )
        for fit in fits:
            claims[fit.deal_index] += 1
        all_fits.append(fits)
    return [_decide(order, fits, deal_orders, claims) for order, fits in zip(orders, all_fits, strict=True)]
