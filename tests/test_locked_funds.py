"""Locked funds per currency and what cancelling orphans frees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.orders.attribution import AttributedOrder, Attribution, OpenOrder, Reason
from services.orders.locked_funds import CurrencyFunds, Lock, LockKind, freed_by, summarize

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def order(
    symbol: str = "BTC/USDT", side: str = "buy", price: str = "60000", amount: str = "0.5", filled: str = "0"
) -> OpenOrder:
    return OpenOrder(
        order_id=f"{symbol}-{side}-{price}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=Decimal(price),
        amount=Decimal(amount),
        filled=Decimal(filled),
        created_at=T0,
    )


def orphan(o: OpenOrder) -> AttributedOrder:
    return AttributedOrder(o, Attribution.ORPHAN, "deal:1", Reason.MATCHED_FINISHED)


def active(o: OpenOrder) -> AttributedOrder:
    return AttributedOrder(o, Attribution.ACTIVE, "deal:2", Reason.MATCHED_ACTIVE)


def unknown(o: OpenOrder) -> AttributedOrder:
    return AttributedOrder(o, Attribution.UNKNOWN, None, Reason.NO_MATCH)


def funds(currency: str, *, total: str, free: str, locked: str, orphans: str, after: str) -> CurrencyFunds:
    return CurrencyFunds(
        currency=currency,
        total=Decimal(total),
        free=Decimal(free),
        locked_by_orders=Decimal(locked),
        locked_by_orphans=Decimal(orphans),
        free_after_cancelling_orphans=Decimal(after),
    )


def test_buy_locks_quote_for_the_remaining_amount() -> None:
    partly_filled = order(side="buy", price="60000", amount="0.25", filled="0.25")
    assert freed_by(partly_filled) == Lock("USDT", Decimal("15000.00"), LockKind.SPOT)


def test_sell_locks_remaining_base() -> None:
    assert freed_by(order(side="sell", price="70000", amount="0.1", filled="0.4")) == Lock(
        "BTC", Decimal("0.1"), LockKind.SPOT
    )


@pytest.mark.parametrize(
    ("symbol", "settle"),
    [("BTC/USDT:USDT", "USDT"), ("BTC/USDT:USDT-250627", "USDT"), ("BTC/USD:BTC", "BTC")],
)
def test_derivatives_lock_margin_which_is_not_computed(symbol: str, settle: str) -> None:
    assert freed_by(order(symbol=symbol)) == Lock(settle, None, LockKind.MARGIN)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "BTC/", "/USDT", "A/B/C"])
def test_non_unified_symbols_are_rejected(symbol: str) -> None:
    with pytest.raises(ValueError, match="unified symbol"):
        freed_by(order(symbol=symbol))


def test_totals_per_currency_and_freed_by_orphans() -> None:
    attributed = [
        orphan(order(side="buy", price="60000", amount="0.1")),  # 6000 USDT
        active(order(side="buy", price="55000", amount="0.2")),  # 11000 USDT
        unknown(order(symbol="ETH/USDT", side="buy", price="3000", amount="1")),  # 3000 USDT
        orphan(order(side="sell", price="70000", amount="0.3")),  # 0.3 BTC
        active(order(side="sell", price="72000", amount="0.05")),  # 0.05 BTC
    ]
    balances = {
        "USDT": {"free": Decimal("500"), "used": Decimal("20000"), "total": Decimal("20500")},
        "BTC": {"free": Decimal("0.01"), "used": Decimal("0.35"), "total": Decimal("0.36")},
        "DOGE": {"free": Decimal("3"), "total": Decimal("3")},
    }
    report = summarize(attributed, balances)
    assert report.currencies == (
        funds("BTC", total="0.36", free="0.01", locked="0.35", orphans="0.3", after="0.31"),
        funds("USDT", total="20500", free="500", locked="20000", orphans="6000", after="6500"),
    )
    assert report.margin_orders == ()


def test_free_after_cancelling_is_capped_at_total() -> None:
    # Balance fetched after part of the orphan already filled: free + lock would exceed total.
    report = summarize([orphan(order(side="sell", amount="1"))], {"BTC": {"free": "0.9", "total": "1.2"}})
    assert report.currencies[0].free_after_cancelling_orphans == Decimal("1.2")


def test_currency_missing_from_balances_still_reports_locks() -> None:
    (funds,) = summarize([orphan(order(side="buy", price="2", amount="10"))], {}).currencies
    assert funds == CurrencyFunds("USDT", None, None, Decimal(20), Decimal(20), None)


def test_no_orphans_means_nothing_freed() -> None:
    (funds,) = summarize(
        [active(order(side="buy", price="2", amount="10"))], {"USDT": {"free": 5, "total": 25}}
    ).currencies
    assert funds.locked_by_orphans == 0
    assert funds.free_after_cancelling_orphans == Decimal(5)


def test_float_balances_convert_without_binary_noise() -> None:
    (funds,) = summarize(
        [orphan(order(side="buy", price="0.1", amount="1"))], {"USDT": {"free": 0.1, "total": 0.3}}
    ).currencies
    assert funds.free == Decimal("0.1")
    assert funds.total == Decimal("0.3")
    assert funds.free_after_cancelling_orphans == Decimal("0.2")


def test_perp_orders_are_listed_apart_and_left_out_of_spot_totals() -> None:
    perp = orphan(order(symbol="BTC/USDT:USDT", side="buy", price="60000", amount="1"))
    spot = orphan(order(side="buy", price="100", amount="1"))
    report = summarize([perp, spot], {"USDT": {"free": "1000", "total": "1100"}})
    (usdt,) = report.currencies
    assert usdt.locked_by_orders == usdt.locked_by_orphans == Decimal("100")
    assert usdt.free_after_cancelling_orphans == Decimal("1100")
    assert report.margin_orders == (perp,)
