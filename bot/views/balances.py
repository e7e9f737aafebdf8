"""A balance in one short phrase: stablecoins summed as USD, other coins listed or counted."""

from __future__ import annotations

from typing import Any

from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext

from bot import formatting

STABLECOINS = frozenset({"USDT", "USDC", "BUSD", "FDUSD", "USD"})


def _amount(value: float) -> str:
    return formatting.number(value, digits=2) if value >= 1 else formatting.coin(value)


def _total(entry: Any) -> float:
    try:
        return float(entry.get("total") or 0) if isinstance(entry, dict) else float(entry or 0)
    except (TypeError, ValueError):
        return 0.0


def balance_summary(balances: dict[str, Any], top: int = 0) -> str:
    """Stablecoins summed 1:1 as USD, then other coins: listed (``top`` of them) or counted."""
    held = {coin: _total(entry) for coin, entry in (balances or {}).items()}
    held = {coin: amount for coin, amount in held.items() if amount > 0}
    if not held:
        return _("no balance")
    usd = sum(amount for coin, amount in held.items() if coin.upper() in STABLECOINS)
    # Without prices, amounts of different coins do not compare: list them by name.
    others = sorted((c, a) for c, a in held.items() if c.upper() not in STABLECOINS)
    text = _("≈ {usd} USD").format(usd=formatting.number(usd, digits=2)) if usd or not others else ""
    shown = [f"{_amount(amount)} {coin}" for coin, amount in others[:top]]
    if shown:
        text = " · ".join(([text] if text else []) + shown)
    hidden = len(others) - len(shown)
    if hidden:
        more = ngettext("+ {n} other coin", "+ {n} other coins", hidden).format(n=hidden)
        text = f"{text} {more}" if text else more
    return text
