"""Numbers, money, dates and times in the user's language, through Babel's CLDR data.

"2,500.00" is English; a Russian reader expects "2 500,00" and a Spanish one "2500,00". The
locale is the one aiogram's i18n context holds for the update (or the outbox row) being
rendered. Times are UTC and say so: users do not tell us their time zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from aiogram.utils.i18n import get_i18n
from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal, format_percent

from bot.i18n import DEFAULT_LANGUAGE

# Amounts of one coin: enough digits for satoshis, none of them trailing zeros.
_COIN = "#,##0.########"


def current_locale() -> Locale:
    try:
        code = get_i18n().current_locale
    except LookupError:  # outside any i18n context (logs, tests of pure helpers)
        code = DEFAULT_LANGUAGE
    return Locale.parse(code or DEFAULT_LANGUAGE)


def number(value: float | int | Decimal, *, digits: int | None = None) -> str:
    """A count or a measure with the locale's grouping and decimal signs."""
    if digits is None:
        return format_decimal(value, locale=current_locale())
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=current_locale())


def percent(fraction: float | Decimal, *, digits: int = 2) -> str:
    """A share from a fraction (0.04), with the locale's decimal sign: "4.00%", "4,00%"."""
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + "%"
    return format_percent(Decimal(str(fraction)), format=pattern, locale=current_locale())


def coin(value: float | Decimal, currency: str = "") -> str:
    """An amount of a coin ("0.01 BTC", "1 234,5 USDT"): every significant digit up to 8 decimals."""
    text = format_decimal(Decimal(str(value)), format=_COIN, locale=current_locale())
    return f"{text} {currency}" if currency else text


def money(value: float | Decimal, currency: str = "USD") -> str:
    """A fiat sum the locale's way: "$2,500.00", "2 500,00 $", "2500,00 US$"."""
    return format_currency(Decimal(str(value)), currency, locale=current_locale())


def day(moment: date | datetime) -> str:
    """A calendar date: "Mar 5, 2026", "5 мар. 2026 г.", "5 mar 2026"."""
    return format_date(moment, format="medium", locale=current_locale())


def clock_time(moment: datetime) -> str:
    """A time of day in UTC: "2:30 PM UTC", "14:30 UTC"."""
    return format_time(moment.astimezone(UTC), format="short", tzinfo=UTC, locale=current_locale()) + " UTC"


def until(value: datetime, now: datetime) -> str:
    """The end of a mute or a wait: the time alone within a day, else date and time."""
    return clock_time(value) if value - now < timedelta(hours=20) else moment(value)


def moment(value: datetime) -> str:
    """Date and time in UTC, joined the locale's way: "Mar 5, 2026, 2:30 PM UTC"."""
    locale = current_locale()
    utc = value.astimezone(UTC)
    joined = str(locale.datetime_formats["medium"]).format(
        format_time(utc, format="short", tzinfo=UTC, locale=locale),
        format_date(utc, format="medium", locale=locale),
    )
    return joined + " UTC"
