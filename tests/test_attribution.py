"""Attribution of exchange open orders to 3Commas deals: the safety rules and their edges."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.orders.attribution import (
    UNKNOWN_PRECISION_TOLERANCE,
    AttributedOrder,
    Attribution,
    DealOrder,
    MarketPrecision,
    OpenOrder,
    Reason,
    attribute,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=2)
PRECISION = {
    "BTC/USDT": MarketPrecision(tick=Decimal("0.01"), step=Decimal("0.00001")),
    "DOGE/USDT": MarketPrecision(tick=Decimal("0.00001"), step=Decimal("1")),
}


def exchange_order(
    order_id: str = "x1",
    *,
    symbol: str = "BTC/USDT",
    side: str = "sell",
    price: str = "65000.00",
    amount: str = "0.01000",
    filled: str = "0",
    at: datetime = T0,
) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=Decimal(price),
        amount=Decimal(amount),
        filled=Decimal(filled),
        created_at=at,
    )


def deal_order(
    deal_ref: str = "deal:1",
    *,
    status: str = "finished",
    symbol: str = "BTC/USDT",
    side: str = "sell",
    price: str = "65000.00",
    amount: str = "0.01000",
    at: datetime | None = T0,
) -> DealOrder:
    return DealOrder(
        deal_ref=deal_ref,
        deal_status=status,  # type: ignore[arg-type]
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=Decimal(price),
        amount=Decimal(amount),
        created_at=at,
        label="TP bot / BTC",
    )


def verdict(result: AttributedOrder) -> tuple[Attribution, str | None, Reason]:
    return result.attribution, result.deal_ref, result.reason


def one(orders: list[OpenOrder], deals: list[DealOrder], **kwargs: timedelta) -> list[tuple]:
    return [verdict(r) for r in attribute(orders, deals, PRECISION, **kwargs)]


# --- basic outcomes -----------------------------------------------------------------------------


def test_finished_deal_order_is_orphan() -> None:
    assert one([exchange_order()], [deal_order()]) == [
        (Attribution.ORPHAN, "deal:1", Reason.MATCHED_FINISHED)
    ]


def test_active_deal_order_is_active_and_named() -> None:
    assert one([exchange_order()], [deal_order("smart_trade:7", status="active")]) == [
        (Attribution.ACTIVE, "smart_trade:7", Reason.MATCHED_ACTIVE)
    ]


def test_order_without_any_fit_is_unknown() -> None:
    deals = [deal_order(price="64000.00"), deal_order(side="buy"), deal_order(symbol="DOGE/USDT")]
    assert one([exchange_order()], deals) == [(Attribution.UNKNOWN, None, Reason.NO_MATCH)]
    assert one([exchange_order()], []) == [(Attribution.UNKNOWN, None, Reason.NO_MATCH)]


def test_results_follow_input_order_and_keep_the_order_object() -> None:
    orders = [exchange_order("a", price="1.00"), exchange_order("b"), exchange_order("c", side="buy")]
    results = attribute(orders, [deal_order()], PRECISION)
    assert [r.order for r in results] == orders
    assert [r.attribution for r in results] == [
        Attribution.UNKNOWN,
        Attribution.ORPHAN,
        Attribution.UNKNOWN,
    ]


def test_reason_values_are_the_documented_strings() -> None:
    assert {r.value for r in Reason} == {
        "matched_active",
        "matched_finished",
        "no_match",
        "ambiguous",
        "conflict_active_and_finished",
        "finished_time_unknown",
    }


# --- tolerances -----------------------------------------------------------------------------------


def test_partially_filled_order_matches_on_original_amount() -> None:
    partial = exchange_order(amount="0.00400", filled="0.00600")
    assert one([partial], [deal_order()])[0][0] is Attribution.ORPHAN
    # The remaining amount alone would not fit a deal order of the original size.
    assert one([partial], [deal_order(amount="0.00400")])[0][0] is Attribution.UNKNOWN


def test_neighbouring_price_level_does_not_match() -> None:
    for price in ("65000.01", "64999.99"):
        assert one([exchange_order(price=price)], [deal_order()])[0][2] is Reason.NO_MATCH


def test_off_grid_deal_price_matches_either_rounding() -> None:
    # 3Commas may report the unrounded price; floor and ceil both stay under one tick.
    for price in ("65000.00", "65000.01"):
        assert one([exchange_order(price=price)], [deal_order(price="65000.004")])[0][0] is (
            Attribution.ORPHAN
        )


def test_neighbouring_amount_step_does_not_match() -> None:
    assert one([exchange_order(amount="0.01001")], [deal_order()])[0][2] is Reason.NO_MATCH
    assert one([exchange_order(amount="0.010005")], [deal_order()])[0][0] is Attribution.ORPHAN


def test_unknown_precision_uses_tight_relative_tolerance() -> None:
    symbol = "NEW/USDT"
    exact = exchange_order(symbol=symbol, price="0.12345678", amount="100")
    deals = [deal_order(symbol=symbol, price="0.12345678", amount="100")]
    assert one([exact], deals)[0][0] is Attribution.ORPHAN
    nudged = replace(exact, price=Decimal("0.12345678") * (1 + UNKNOWN_PRECISION_TOLERANCE * 2))
    assert one([nudged], deals)[0][2] is Reason.NO_MATCH
    one_tick_off = replace(exact, price=Decimal("0.12345679"))
    assert one([one_tick_off], deals)[0][2] is Reason.NO_MATCH


# --- time -----------------------------------------------------------------------------------------


def test_time_window_edges() -> None:
    inside = exchange_order(at=T0 + WINDOW)
    outside = exchange_order(at=T0 - WINDOW - timedelta(seconds=1))
    assert one([inside], [deal_order()])[0][0] is Attribution.ORPHAN
    assert one([outside], [deal_order()])[0] == (Attribution.UNKNOWN, None, Reason.NO_MATCH)


def test_time_window_is_configurable() -> None:
    late = exchange_order(at=T0 + timedelta(minutes=10))
    assert one([late], [deal_order()])[0][0] is Attribution.UNKNOWN
    assert one([late], [deal_order()], time_window=timedelta(minutes=15))[0][0] is Attribution.ORPHAN


def test_finished_deal_order_without_time_is_not_enough_for_orphan() -> None:
    assert one([exchange_order()], [deal_order(at=None)]) == [
        (Attribution.UNKNOWN, None, Reason.FINISHED_TIME_UNKNOWN)
    ]


def test_active_deal_order_without_time_is_enough_for_active() -> None:
    assert one([exchange_order()], [deal_order(status="active", at=None)]) == [
        (Attribution.ACTIVE, "deal:1", Reason.MATCHED_ACTIVE)
    ]


def test_active_deal_order_fits_even_when_time_disagrees() -> None:
    # 3Commas re-places orders the exchange cancelled: same trade, new exchange time.
    replaced = exchange_order(at=T0 + timedelta(hours=5))
    assert one([replaced], [deal_order(status="active")])[0] == (
        Attribution.ACTIVE,
        "deal:1",
        Reason.MATCHED_ACTIVE,
    )


# --- safety: conflicts and ambiguity --------------------------------------------------------------


def test_active_and_finished_fit_is_never_orphan() -> None:
    deals = [deal_order("deal:1"), deal_order("deal:2", status="active")]
    assert one([exchange_order()], deals) == [
        (Attribution.UNKNOWN, None, Reason.CONFLICT_ACTIVE_AND_FINISHED)
    ]


def test_stale_active_look_alike_still_vetoes_orphan() -> None:
    deals = [deal_order("deal:1"), deal_order("deal:2", status="active", at=T0 - timedelta(days=3))]
    assert one([exchange_order()], deals)[0][2] is Reason.CONFLICT_ACTIVE_AND_FINISHED


def test_two_finished_deals_are_ambiguous() -> None:
    deals = [deal_order("deal:1"), deal_order("smart_trade:2", price="65000.005")]
    assert one([exchange_order()], deals) == [(Attribution.UNKNOWN, None, Reason.AMBIGUOUS)]


def test_finished_deal_without_time_still_makes_another_match_ambiguous() -> None:
    deals = [deal_order("deal:1"), deal_order("deal:2", at=None)]
    assert one([exchange_order()], deals)[0] == (Attribution.UNKNOWN, None, Reason.AMBIGUOUS)


def test_two_active_deals_stay_active_without_naming_one() -> None:
    deals = [deal_order("deal:1", status="active"), deal_order("deal:2", status="active")]
    assert one([exchange_order()], deals) == [(Attribution.ACTIVE, None, Reason.AMBIGUOUS)]


def test_two_exchange_orders_contesting_one_finished_deal_order_are_both_unknown() -> None:
    twins = [exchange_order("a"), exchange_order("b", at=T0 + timedelta(seconds=30))]
    assert one(twins, [deal_order()]) == [(Attribution.UNKNOWN, None, Reason.AMBIGUOUS)] * 2


def test_closer_fit_does_not_win_a_contest() -> None:
    # Rounding direction is unknown, so 65000.00 and 65000.01 are equally plausible for 65000.004.
    pair = [exchange_order("a", price="65000.00"), exchange_order("b", price="65000.01")]
    assert one(pair, [deal_order(price="65000.004")]) == [(Attribution.UNKNOWN, None, Reason.AMBIGUOUS)] * 2


def test_contest_for_an_active_deal_order_keeps_both_active_unnamed() -> None:
    twins = [exchange_order("a"), exchange_order("b")]
    assert one(twins, [deal_order(status="active")]) == [(Attribution.ACTIVE, None, Reason.AMBIGUOUS)] * 2


def test_one_exchange_order_fitting_two_orders_of_the_same_finished_deal_is_orphan() -> None:
    deals = [deal_order(), deal_order(price="65000.001", at=None)]
    assert one([exchange_order()], deals)[0] == (Attribution.ORPHAN, "deal:1", Reason.MATCHED_FINISHED)


def test_distinct_orders_of_one_finished_deal_are_all_orphans() -> None:
    deals = [
        deal_order(side="buy", price="60000.00", amount="0.02000"),
        deal_order(side="buy", price="58000.00", amount="0.04000"),
        deal_order(side="sell", price="66000.00", amount="0.01000"),
    ]
    orders = [
        exchange_order("so1", side="buy", price="60000.00", amount="0.02000"),
        exchange_order("so2", side="buy", price="58000.00", amount="0.01000", filled="0.03000"),
        exchange_order("tp", side="sell", price="66000.00", amount="0.01000"),
    ]
    assert [r[0] for r in one(orders, deals)] == [Attribution.ORPHAN] * 3


# --- validation -----------------------------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        exchange_order(at=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        deal_order(at=datetime(2026, 3, 1, 12, 0))


def test_bad_enum_strings_and_precision_are_rejected() -> None:
    with pytest.raises(ValueError, match="side"):
        exchange_order(side="long")
    with pytest.raises(ValueError, match="deal_status"):
        deal_order(status="completed")
    with pytest.raises(ValueError, match="positive"):
        MarketPrecision(tick=Decimal(0), step=Decimal(1))


# --- properties -----------------------------------------------------------------------------------

TICKS = [Decimal("0.01"), Decimal("0.00001"), Decimal("0.5"), Decimal("1E-8")]
STEPS = [Decimal("0.00001"), Decimal("1"), Decimal("0.001")]


@st.composite
def market(draw: st.DrawFn) -> tuple[MarketPrecision, Decimal, Decimal]:
    precision = MarketPrecision(tick=draw(st.sampled_from(TICKS)), step=draw(st.sampled_from(STEPS)))
    price = precision.tick * draw(st.integers(3, 10**7))
    amount = precision.step * draw(st.integers(3, 10**6))
    return precision, price, amount


def split_fill(original: Decimal, percent: int) -> tuple[Decimal, Decimal]:
    filled = original * percent / 100
    return original - filled, filled


@settings(max_examples=300, deadline=None)
@given(
    market=market(),
    dimension=st.sampled_from(["price", "amount", "time"]),
    sign=st.sampled_from([-1, 1]),
    overshoot=st.integers(0, 1000),
    late=st.integers(1, 10**9),
    percent_filled=st.integers(0, 99),
    status=st.sampled_from(["finished", "active"]),
)
def test_just_outside_tolerance_is_never_orphan(
    market: tuple[MarketPrecision, Decimal, Decimal],
    dimension: str,
    sign: int,
    overshoot: int,
    late: int,
    percent_filled: int,
    status: str,
) -> None:
    precision, price, amount = market
    at = T0
    beyond = 1 + Decimal(overshoot) / 1000  # exactly one unit (0) up to two units away
    if dimension == "price":
        price += sign * precision.tick * beyond
    elif dimension == "amount":
        amount += sign * precision.step * beyond
    else:
        at += sign * (WINDOW + timedelta(microseconds=late))
    remaining, filled = split_fill(amount, percent_filled)
    order = replace(exchange_order(at=at), price=price, amount=remaining, filled=filled, symbol="X/USDT")
    deal = replace(deal_order(status=status), price=market[1], amount=market[2], symbol="X/USDT")
    (result,) = attribute([order], [deal], {"X/USDT": precision}, time_window=WINDOW)
    assert result.attribution is not Attribution.ORPHAN
    if status == "finished":
        assert result.reason is Reason.NO_MATCH


@settings(max_examples=300, deadline=None)
@given(
    market=market(),
    price_off=st.integers(-999, 999),
    amount_off=st.integers(-999, 999),
    seconds_off=st.integers(-120, 120),
    percent_filled=st.integers(0, 99),
)
def test_just_inside_tolerance_with_unique_finished_fit_is_orphan(
    market: tuple[MarketPrecision, Decimal, Decimal],
    price_off: int,
    amount_off: int,
    seconds_off: int,
    percent_filled: int,
) -> None:
    precision, price, amount = market
    order_price = price + precision.tick * price_off / 1000
    remaining, filled = split_fill(amount + precision.step * amount_off / 1000, percent_filled)
    order = replace(
        exchange_order(at=T0 + timedelta(seconds=seconds_off)),
        symbol="X/USDT",
        price=order_price,
        amount=remaining,
        filled=filled,
    )
    deals = [
        replace(deal_order("deal:42"), symbol="X/USDT", price=price, amount=amount),
        # Noise that must not interfere: other side, other symbol, far price.
        replace(deal_order("deal:1", status="active"), symbol="X/USDT", side="buy", price=price),
        replace(deal_order("deal:2", status="active"), symbol="Y/USDT", price=price, amount=amount),
        replace(deal_order("deal:3"), symbol="X/USDT", price=price * 2, amount=amount),
    ]
    (result,) = attribute([order], deals, {"X/USDT": precision}, time_window=WINDOW)
    assert verdict(result) == (Attribution.ORPHAN, "deal:42", Reason.MATCHED_FINISHED)


# Small random worlds on a coarse grid so collisions, contests and conflicts are frequent.
GRID = MarketPrecision(tick=Decimal("0.1"), step=Decimal("1"))
WORLD_PRECISION = {"A/USDT": GRID, "B/USDT": GRID}  # "C/USDT" deliberately has no precision
SYMBOLS = ["A/USDT", "B/USDT", "C/USDT"]

world_open_orders = st.lists(
    st.builds(
        lambda i, symbol, side, price, amount, filled, minute: OpenOrder(
            order_id=f"x{i}",
            symbol=symbol,
            side=side,
            price=Decimal(price) / 100,
            amount=Decimal(amount),
            filled=Decimal(filled),
            created_at=T0 + timedelta(minutes=minute),
        ),
        st.integers(0, 10**6),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "sell"]),
        st.integers(995, 1005),
        st.integers(1, 3),
        st.integers(0, 1),
        st.integers(0, 6),
    ),
    max_size=12,
)
world_deal_orders = st.lists(
    st.builds(
        lambda deal, status, symbol, side, price, amount, minute: DealOrder(
            deal_ref=f"deal:{deal}",
            deal_status=status,
            symbol=symbol,
            side=side,
            price=Decimal(price) / 100,
            amount=Decimal(amount),
            created_at=None if minute is None else T0 + timedelta(minutes=minute),
            label="bot",
        ),
        st.integers(1, 4),
        st.sampled_from(["active", "finished"]),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["buy", "sell"]),
        st.integers(995, 1005),
        st.integers(1, 4),
        st.none() | st.integers(0, 6),
    ),
    max_size=12,
)


def fits(order: OpenOrder, deal: DealOrder) -> bool:
    """Price and amount agree, ignoring time (the weakest notion of 'looks like')."""
    if (order.symbol, order.side) != (deal.symbol, deal.side):
        return False
    original = order.amount + order.filled
    precision = WORLD_PRECISION.get(order.symbol)
    if precision is None:
        return deal.price == order.price and deal.amount == original
    return abs(deal.price - order.price) < precision.tick and abs(deal.amount - original) < precision.step


def in_window(order: OpenOrder, deal: DealOrder) -> bool:
    return deal.created_at is not None and abs(order.created_at - deal.created_at) <= WINDOW


def reference(orders: list[OpenOrder], deals: list[DealOrder]) -> list[tuple]:
    """The rules written out as an O(n·m) brute force, to check the indexed implementation."""

    def candidate(order: OpenOrder, deal: DealOrder) -> bool:
        if not fits(order, deal):
            return False
        return deal.deal_status == "active" or deal.created_at is None or in_window(order, deal)

    out: list[tuple] = []
    for order in orders:
        mine = [d for d in deals if candidate(order, d)]
        statuses = {d.deal_status for d in mine}
        refs = {d.deal_ref for d in mine}
        contested = any(candidate(other, d) for d in mine for other in orders if other is not order)
        if not mine:
            out.append((Attribution.UNKNOWN, None, Reason.NO_MATCH))
        elif len(statuses) == 2:
            out.append((Attribution.UNKNOWN, None, Reason.CONFLICT_ACTIVE_AND_FINISHED))
        elif statuses == {"active"}:
            named = len(refs) == 1 and not contested
            out.append(
                (Attribution.ACTIVE, next(iter(refs)), Reason.MATCHED_ACTIVE)
                if named
                else (Attribution.ACTIVE, None, Reason.AMBIGUOUS)
            )
        elif len(refs) > 1 or contested:
            out.append((Attribution.UNKNOWN, None, Reason.AMBIGUOUS))
        elif not any(in_window(order, d) for d in mine):
            out.append((Attribution.UNKNOWN, None, Reason.FINISHED_TIME_UNKNOWN))
        else:
            out.append((Attribution.ORPHAN, next(iter(refs)), Reason.MATCHED_FINISHED))
    return out


@settings(max_examples=400, deadline=None)
@given(orders=world_open_orders, deals=world_deal_orders)
def test_indexed_attribution_equals_brute_force(orders: list[OpenOrder], deals: list[DealOrder]) -> None:
    got = [verdict(r) for r in attribute(orders, deals, WORLD_PRECISION, time_window=WINDOW)]
    assert got == reference(orders, deals)


@settings(max_examples=400, deadline=None)
@given(orders=world_open_orders, deals=world_deal_orders)
def test_every_orphan_is_positively_and_uniquely_attributed(
    orders: list[OpenOrder], deals: list[DealOrder]
) -> None:
    for result in attribute(orders, deals, WORLD_PRECISION, time_window=WINDOW):
        order = result.order
        looks_like = [d for d in deals if fits(order, d)]
        if any(d.deal_status == "active" for d in looks_like):
            assert result.attribution is not Attribution.ORPHAN
        if result.attribution is not Attribution.ORPHAN:
            continue
        timed = [d for d in looks_like if in_window(order, d)]
        assert timed and {d.deal_ref for d in timed} == {result.deal_ref}
        assert all(d.deal_status == "finished" for d in looks_like)
        claimed = [d for d in looks_like if d.created_at is None or in_window(order, d)]
        assert {d.deal_ref for d in claimed} == {result.deal_ref}
        for other in orders:
            if other is not order:
                assert not any(
                    fits(other, d) and (d.created_at is None or in_window(other, d)) for d in claimed
                )
