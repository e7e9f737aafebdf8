"""Numbers, money and times the way each shipped language writes them (Babel's CLDR data)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import formatting
from bot.i18n import build_i18n

MOMENT = datetime(2026, 3, 5, 14, 30, tzinfo=UTC)
NBSP = {"\u00a0", "\u202f"}


def _in(language: str, render):  # type: ignore[no-untyped-def]
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(language):
        return render()


@pytest.mark.parametrize(
    ("language", "usd", "btc", "until"),
    [
        ("en", "$2,500.00", "0.01 BTC", "2:30 PM UTC"),
        ("ru", "2 500,00 $", "0,01 BTC", "14:30 UTC"),
        ("es", "2.500,00 US$", "0,01 BTC", "14:30 UTC"),
    ],
)
def test_money_amounts_and_times_follow_the_language(language, usd, btc, until):
    def same(text: str) -> str:  # CLDR groups with no-break spaces; compare them as spaces
        return "".join(" " if char in NBSP else char for char in text)

    assert same(_in(language, lambda: formatting.money(2500))) == usd
    assert _in(language, lambda: formatting.coin(0.01, "BTC")) == btc
    assert same(_in(language, lambda: formatting.clock_time(MOMENT))) == until


def test_coin_amounts_keep_satoshis_and_drop_trailing_zeros():
    assert _in("en", lambda: formatting.coin(0.00000001)) == "0.00000001"
    assert _in("en", lambda: formatting.coin(1234.5, "USDT")) == "1,234.5 USDT"
    assert _in("en", lambda: formatting.number(2500, digits=2)) == "2,500.00"
