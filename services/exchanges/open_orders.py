"""Every open order of one key, in as few budgeted requests as each exchange allows.

Binance lists all symbols in one call (weight 80); Bybit v5 and OKX list per category /
instrument type and page by cursor. Each request is priced in the exchange's own weight so
the shared budget counts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from services.exchanges.hub import ExchangeClient

log = logging.getLogger(__name__)

BYBIT_SETTLE_COINS = ("USDT",)

OKX_INST_TYPES = ("SPOT", "SWAP")


# -- the exchange side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Request weight of each call in the exchange's own units (what the shared budget counts)."""

    all_open_orders: float = 1
    symbol_open_orders: float = 1
    balance: float = 1
    order: float = 1
    cancel: float = 1


WEIGHTS: dict[str, Weights] = {
    # ccxt binance cost × 5 = Binance weight: openOrders {cost 1.2, noSymbol 16} → 6 / 80,
    # account 4 → 20, order 0.8 → 4, DELETE order 0.2 → 1.
    "binance": Weights(all_open_orders=80, symbol_open_orders=6, balance=20, order=4, cancel=1),
    # USDⓈ-M: GET /fapi/v1/openOrders 1 with a symbol, 40 without; GET /fapi/v3/account 5; GET/DELETE
    # /fapi/v1/order 1 (https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api).
    "binanceusdm": Weights(all_open_orders=40, symbol_open_orders=1, balance=5, order=1, cancel=1),
    # COIN-M, ccxt binance.py describe()['api']['dapiPrivate']: GET openOrders 1 (noSymbol 5), account 5,
    # GET/DELETE order 1 (ccxt's dapi costs are Binance weights, as its fapi ones are).
    "binancecoinm": Weights(all_open_orders=5, symbol_open_orders=1, balance=5, order=1, cancel=1),
    # Bybit counts requests; ccxt's fetch_balance sends three (GET /v5/user/query-api and
    # /v5/account/info from is_unified_enabled, then /v5/account/wallet-balance; ccxt bybit.py).
    "bybit": Weights(balance=3),
}

# Binance lists cross-margin orders apart from spot ones (GET /sapi/v1/margin/openOrders), on the
# same markets; ccxt reaches them through the unified calls with ``{"type": "margin"}``. IP weight 10
# to list or query, 1 (per UID) to cancel: ccxt binance.py describe() sapi costs 1 / 1 / 0.006667.
MARGIN_PARAMS: dict[str, object] = {"type": "margin"}
MARGIN_WEIGHTS = {"binance": Weights(all_open_orders=10, symbol_open_orders=10, order=10, cancel=1)}

# Binance keeps USDⓈ-M futures (fapi.binance.com, ccxt ``binanceusdm``) and COIN-M futures
# (dapi.binance.com, ``binancecoinm``) on their own APIs with their own weights; one Binance key
# trades all three. Bybit v5 and OKX list contracts through the same client.
FUTURES_VENUES = {"binance": "binanceusdm"}
COIN_MARGINED_VENUES = {"binance": "binancecoinm"}
_LINEAR_SETTLES = (":USDT", ":USDC")


def venue_of(exchange_id: str, symbol: str) -> str:
    """The ccxt exchange whose API holds an order of ``symbol`` placed with a key of ``exchange_id``
    (on a Binance key ``BTC/USDT:USDT`` → ``binanceusdm``, ``BTC/USD:BTC`` → ``binancecoinm``)."""
    pair, _, settle = symbol.partition(":")
    if symbol.endswith(_LINEAR_SETTLES):
        return FUTURES_VENUES.get(exchange_id, exchange_id)
    if settle and pair.startswith(f"{settle}/"):
        return COIN_MARGINED_VENUES.get(exchange_id, exchange_id)
    return exchange_id


PAGE_LIMITS = {"bybit": 50, "okx": 100}
# At most this many pages per Bybit category / OKX instType (5000 / 2000 orders): a cursor that
# never ends (an exchange bug, a fake that ignores paging) must not loop for ever.
MAX_PAGES = 20


async def _pages(client: ExchangeClient, params: dict[str, Any], weight: float) -> list[dict[str, Any]]:
    """All pages of one Bybit category / OKX instType, each page one budgeted request; bounded by
    :data:`MAX_PAGES` and stopped when a cursor does not move."""
    exchange_id = client.exchange_id
    limit = PAGE_LIMITS[exchange_id]
    orders: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {}
    for _ in range(MAX_PAGES):
        page = await client.call("fetch_open_orders", None, None, limit, {**params, **cursor}, weight=weight)
        orders += page
        if len(page) < limit:
            return orders
        if exchange_id == "bybit":
            # ccxt puts Bybit's nextPageCursor on one order's info (add_pagination_cursor_to_result).
            token = next((o["info"]["nextPageCursor"] for o in page if o["info"].get("nextPageCursor")), None)
            following = {"cursor": token} if token else None
        else:
            # OKX: orders older than the oldest one listed (ccxt re-sorts a page by time, so the
            # page's last entry is the newest; OKX order ids grow with time).
            following = {"after": min((str(o["id"]) for o in page), key=int)}
        if following is None or following == cursor:
            return orders
        cursor = following
    log.warning("%s: open orders cut at %d pages of %d", exchange_id, MAX_PAGES, limit)
    return orders


async def fetch_all_open_orders(client: ExchangeClient) -> list[dict[str, Any]]:
    """Every open order of the key without a per-symbol loop (see the module docstring)."""
    exchange_id = client.exchange_id
    weight = WEIGHTS.get(exchange_id, Weights()).all_open_orders
    if exchange_id == "bybit":
        orders = await _pages(client, {"type": "spot"}, weight)
        for settle in BYBIT_SETTLE_COINS:
            orders += await _pages(
                client, {"type": "swap", "subType": "linear", "settleCoin": settle}, weight
            )
        return orders
    if exchange_id == "okx":
        orders = []
        for inst_type in OKX_INST_TYPES:
            orders += await _pages(client, {"instType": inst_type}, weight)
        return orders
    # Binance and the rest: one call without a symbol. ccxt refuses that on Binance unless told
    # we mean it (its warning is about weight, which the budget above already accounts for).
    client.instance.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
    return list(await client.call("fetch_open_orders", weight=weight))
