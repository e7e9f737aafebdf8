"""Open orders of one exchange connection, sorted into active-deal / orphan / unknown, and
cancelling orphans safely.

Why it looks the way it does:

* **One listing, few requests.** Every open order of the key is fetched with the exchange's
  "all symbols" endpoint (Binance ``openOrders`` without a symbol, Bybit v5 ``order/realtime`` per
  category, OKX ``orders-pending`` per instType), never one request per symbol: a per-symbol
  loop over hundreds of markets would burn the shared IP budget every user depends on.
* **Rows, not ids, in buttons.** The listing is stored (``order_lists`` + ``listed_orders``) and
  buttons carry only the short row id, so callback data stays under 64 bytes and never
  contains exchange order ids or symbols.
* **Everything re-checked at tap time.** A list can be minutes old when a button is pressed: the
  connection may be gone, the order filled, the deal restarted. :func:`cancel_order` re-reads
  ownership, the order and the deal before cancelling, and each outcome (including refusals) is
  written to the audit log in the same transaction as the row's new state.
* **A tap's share, not the IP's.** A listing is interactive: its exchange calls draw on the user's
  fair share of the exchange budget and its 3Commas calls on the key's interactive share
  (:mod:`services.exchanges.budget`, :mod:`services.threecommas.limiter`), so a listing never
  delays anyone's scheduled checks; when the share is used up the answer is :class:`TryLater`.
  Repeated taps are merged before they get here (:mod:`services.orders.listing_gate`).
* **Err towards not cancelling.** If 3Commas could not be read completely (an error, or more
  active deals than we may fetch), nothing is offered as an orphan: a missed active deal would
  otherwise make one of its live orders look orphaned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import ccxt.async_support as ccxt
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.clock import Clock
from services.core.single_flight import SingleFlight
from services.core.vault import Credentials, Vault
from services.exchanges.budget import OverShare
from services.exchanges.classifier import Classification, classify
from services.exchanges.egress import Egress, whitelist_of
from services.exchanges.hub import ExchangeClient, ExchangeHub
from services.exchanges.open_orders import (
    COIN_MARGINED_VENUES,
    FUTURES_VENUES,
    MARGIN_PARAMS,
    MARGIN_WEIGHTS,
    WEIGHTS,
    Weights,
    fetch_all_open_orders,
)
from services.orders.attribution import (
    AttributedOrder,
    Attribution,
    DealOrder,
    MarketPrecision,
    OpenOrder,
    Reason,
    attribute,
)
from services.orders.locked_funds import Lock, LockedFunds, freed_by, summarize
from services.storage.button_tokens import listing_token
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import Connection, ListedOrder, OrderList
from services.threecommas.client import ThreeCommasAccess, ThreeCommasClient
from services.threecommas.entities import Deal, SmartTrade, ending, market_of
from services.threecommas.errors import ThreeCommasError
from services.threecommas.links import THREECOMMAS, LinkedAccount, accounts_for_connection

log = logging.getLogger(__name__)

LIST_TTL = timedelta(days=1)
"""How long a listing stays usable; older ones are pruned when the connection is listed again."""

MAX_DEAL_ORDER_FETCHES = 40
"""``market_orders`` calls per listing and 3Commas key (3Commas allows ~100 requests a minute)."""

RECENT_FINISHED_DEALS = 50
"""Finished deals looked at: orphans come from deals that ended recently (e.g. the last revocation)."""
"""Bybit v5 lists linear orders per settle coin; one request each."""
"""OKX ``orders-pending`` per instrument type; one request each (more only past 100 orders)."""
"""Bybit and OKX budgets count requests (see services/exchanges/budget.py), so every call weighs 1 there."""
"""Largest page of open orders per request; a full page means there may be another one."""


def _dec(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


def to_open_order(raw: Mapping[str, Any], now: datetime) -> OpenOrder | None:
    """A ccxt order as :class:`OpenOrder`; None for orders without a limit price (stop/market)."""
    side = raw.get("side")
    price = raw.get("price")
    if side not in ("buy", "sell") or not price or not raw.get("id") or not raw.get("symbol"):
        return None
    timestamp = raw.get("timestamp")
    created = datetime.fromtimestamp(timestamp / 1000, now.tzinfo) if timestamp else now
    return OpenOrder(
        order_id=str(raw["id"]),
        symbol=str(raw["symbol"]),
        side=side,
        price=_dec(price),
        amount=_dec(raw.get("remaining") if raw.get("remaining") is not None else raw.get("amount")),
        filled=_dec(raw.get("filled")),
        created_at=created,
        client_order_id=raw.get("clientOrderId"),
    )


def precision_map(
    markets: Mapping[str, Mapping[str, Any]], symbols: Iterable[str]
) -> dict[str, MarketPrecision]:
    """Tick and step for the listed symbols (ccxt 4 markets are in TICK_SIZE precision mode)."""
    result: dict[str, MarketPrecision] = {}
    for symbol in set(symbols):
        precision = (markets.get(symbol) or {}).get("precision") or {}
        tick, step = precision.get("price"), precision.get("amount")
        if tick and step and Decimal(str(tick)) > 0 and Decimal(str(step)) > 0:
            result[symbol] = MarketPrecision(Decimal(str(tick)), Decimal(str(step)))
    return result


# -- the 3Commas side --------------------------------------------------------------------------


@dataclass
class DealSource:
    """What 3Commas said about one exchange connection: deal orders, and whether it is complete."""

    deal_orders: list[DealOrder] = field(default_factory=list)
    complete: bool = True
    linked: bool = False
    errors: list[str] = field(default_factory=list)
    requests: int = 0


def _status(finished: bool) -> str:
    return "finished" if finished else "active"


def deal_orders_of_smart_trade(trade: SmartTrade) -> list[DealOrder]:
    """The limit orders a SmartTrade places: its entry while waiting, and its take-profit steps.

    3Commas does not list SmartTrade orders with times, so take-profit steps carry no
    ``created_at`` and can never become orphans on their own (attribution needs time proof).
    """
    symbol = trade.symbol
    if symbol is None or trade.side not in ("buy", "sell") or trade.units is None:
        return []
    status = "finished" if trade.finished else "active"
    ref, label = f"smart_trade:{trade.id}", f"SmartTrade {trade.id}"
    end = ending(trade.status) if trade.finished else ""
    orders = []
    if trade.order_type == "limit" and trade.price is not None and not trade.skip_enter_step:
        orders.append(
            DealOrder(ref, status, symbol, trade.side, trade.price, trade.units, trade.created_at, label, end)  # type: ignore[arg-type]
        )
    exit_side = "sell" if trade.side == "buy" else "buy"
    for step in trade.take_profit:
        if step.price is not None and step.order_type == "limit":
            amount = trade.units * step.volume / 100
            orders.append(DealOrder(ref, status, symbol, exit_side, step.price, amount, None, label, end))  # type: ignore[arg-type]
    return orders


async def _deal_orders_of_deal(client: ThreeCommasClient, deal: Deal) -> list[DealOrder]:
    finished = deal.finished
    result = []
    for order in await client.market_orders_of_deal(deal):
        if order.symbol is None or order.price is None or order.amount is None:
            continue
        if order.side not in ("buy", "sell"):
            continue
        # Active deals: only their open orders. Finished deals: whatever may still sit on the
        # exchange (MarketOrder.may_still_lock: active, or "cancelled" by 3Commas unverified).
        if not (order.may_still_lock if finished else order.is_open):
            continue
        result.append(
            DealOrder(
                f"deal:{deal.id}",
                _status(finished),  # type: ignore[arg-type]
                order.symbol,
                order.side,  # type: ignore[arg-type]
                order.price,
                order.amount,
                order.created_at,
                f"deal {deal.id}",
                ending(deal.status) if finished else "",
            )
        )
    return result


async def _read_account(
    access: ThreeCommasAccess, linked: LinkedAccount, symbols: set[str], source: DealSource
) -> None:
    async with access.open(linked.credentials, interactive=True) as client:
        account = linked.account_id
        active = await client.deals(scope="active", account_id=account, limit=1000)
        finished = await client.deals(
            scope="finished", account_id=account, limit=RECENT_FINISHED_DEALS, order="closed_at"
        )
        source.requests += 2
        # Deals whose pair has no open order cannot own one: skip their market_orders call.
        relevant_active = [d for d in active if d.symbol in symbols]
        relevant_finished = [d for d in finished if d.symbol in symbols]
        if len(relevant_active) > MAX_DEAL_ORDER_FETCHES:
            source.complete = False
        budget = MAX_DEAL_ORDER_FETCHES
        for deal in (relevant_active + relevant_finished)[:budget]:
            source.deal_orders += await _deal_orders_of_deal(client, deal)
            source.requests += 1
        async with access.open(linked.credentials, max_pages=1, interactive=True) as recent_only:
            trades = await client.smart_trades(status="active", account_id=account)
            trades += await recent_only.smart_trades(
                status="finished", account_id=account, order_by="closed_at"
            )
            source.requests += 2
        for trade in trades:
            source.deal_orders += deal_orders_of_smart_trade(trade)


async def read_deals(
    access: ThreeCommasAccess, accounts: Sequence[LinkedAccount], symbols: set[str]
) -> DealSource:
    """Deal orders of every 3Commas account mapped onto the connection; errors mark it incomplete."""
    source = DealSource(linked=bool(accounts))
    if not symbols:
        return source
    for linked in accounts:
        try:
            await _read_account(access, linked, symbols, source)
        except ThreeCommasError as error:
            source.complete = False
            source.errors.append(f"{error.error}")
    return source


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deps:
    """The services a listing or a cancel needs (the app context, minus Telegram), and the
    listings running in this process (:mod:`services.orders.listing_gate`)."""

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    hub: ExchangeHub
    clock: Clock
    threecommas: ThreeCommasAccess
    listings: SingleFlight[tuple[int, int], ListingResult] = field(default_factory=SingleFlight)


class ListingError(StrEnum):
    NOT_FOUND = "not_found"
    NOT_AN_EXCHANGE = "not_an_exchange"
    EXCHANGE_FAILED = "exchange_failed"


@dataclass(frozen=True)
class TryLater:
    """The user's share of the exchange budget is used up for now; nothing was sent."""

    seconds: float


@dataclass(frozen=True)
class Listing:
    """A stored listing: enough to render any page of it again from the database."""

    list_id: int
    connection: Connection
    rows: list[ListedOrder]
    funds: LockedFunds
    notes: dict[str, Any]
    listed_at: datetime

    @property
    def version(self) -> str:
        """The token its buttons carry (see :mod:`services.storage.button_tokens`)."""
        return listing_token(self.list_id, self.connection.id, self.listed_at, self.rows)

    @property
    def orphan_rows(self) -> list[ListedOrder]:
        return [row for row in self.rows if row.attribution == Attribution.ORPHAN and row.outcome is None]


def _row_order(row: ListedOrder) -> OpenOrder:
    return OpenOrder(
        order_id=row.exchange_order_id,
        symbol=row.symbol,
        side=row.side,  # type: ignore[arg-type]
        price=Decimal(row.price),
        amount=Decimal(row.amount),
        filled=Decimal(row.filled),
        created_at=row.order_created_at,
    )


def row_lock(row: ListedOrder) -> Lock:
    """What the listed order locks (quote for buys, base for sells; margin for derivatives)."""
    return freed_by(_row_order(row))


# ListedOrder.outcome of a row this list cancelled (services.orders.cancel.CancelOutcome.CANCELLED;
# that module builds on this one, so the value is named here).
CANCELLED_OUTCOME = "cancelled"


def _funds(rows: Sequence[ListedOrder], balances: Mapping[str, Mapping[str, Any]]) -> LockedFunds:
    # Orders already cancelled from this list no longer lock anything, and what they locked is
    # free now: the balance snapshot was taken before the cancel.
    still_open = [
        AttributedOrder(_row_order(row), Attribution(row.attribution), row.deal_ref, Reason(row.reason))
        for row in rows
        if row.outcome is None
    ]
    freed: dict[str, Decimal] = {}
    for row in rows:
        lock = freed_by(_row_order(row)) if row.outcome == CANCELLED_OUTCOME else None
        if lock is not None and lock.amount is not None:
            freed[lock.currency] = freed.get(lock.currency, Decimal(0)) + lock.amount
    if not freed:
        return summarize(still_open, balances)
    adjusted = {currency: dict(entry) for currency, entry in balances.items()}
    for currency, amount in freed.items():
        entry = adjusted.setdefault(currency, {})
        if entry.get("free") is not None:
            free = Decimal(str(entry["free"])) + amount
            total = entry.get("total")
            entry["free"] = str(min(free, Decimal(str(total))) if total is not None else free)
    return summarize(still_open, adjusted)


async def load_listing(sessions: Sessions, user_id: int, list_id: int) -> Listing | None:
    """A stored listing of this user, or None when it expired, was replaced by pruning, or is not theirs."""
    async with sessions() as session:
        return await owned_listing(session, user_id, list_id)


async def newest_listing(
    sessions: Sessions, user_id: int, connection_id: int, since: datetime
) -> Listing | None:
    """The connection's newest stored listing made after ``since``, if any."""
    async with sessions() as session:
        list_id = await session.scalar(
            select(OrderList.id)
            .where(
                OrderList.connection_id == connection_id,
                OrderList.user_id == user_id,
                OrderList.listed_at > since,
            )
            .order_by(OrderList.id.desc())
            .limit(1)
        )
        return None if list_id is None else await owned_listing(session, user_id, list_id)


async def owned_listing(session: AsyncSession, user_id: int, list_id: int) -> Listing | None:
    """:func:`load_listing` inside the caller's read."""
    order_list = await session.get(OrderList, list_id)
    if order_list is None or order_list.user_id != user_id:
        return None
    connection = await owned_connection(session, user_id, order_list.connection_id)
    if connection is None:
        return None
    rows = list(
        await session.scalars(
            select(ListedOrder).where(ListedOrder.list_version == list_id).order_by(ListedOrder.position)
        )
    )
    return Listing(
        list_id, connection, rows, _funds(rows, order_list.balances), order_list.notes, order_list.listed_at
    )


async def owned_row(sessions: Sessions, user_id: int, row_id: int) -> ListedOrder | None:
    """A listed order of this user, or None when it is gone or someone else's."""
    async with sessions() as session:
        row = await session.get(ListedOrder, row_id)
    return row if row is not None and row.user_id == user_id else None


def _balances(raw: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """ccxt's balance as JSON-safe decimal text per currency (only currencies with a total)."""
    result: dict[str, dict[str, str | None]] = {}
    for currency, entry in raw.items():
        if not isinstance(entry, dict) or currency in ("info", "free", "used", "total"):
            continue
        if entry.get("total") is None and entry.get("free") is None:
            continue
        result[currency] = {
            key: None if entry.get(key) is None else str(entry.get(key)) for key in ("free", "total")
        }
    return result


def futures_venues(exchange_id: str, accounts: Sequence[LinkedAccount]) -> list[str]:
    """The key's separate futures APIs (``binanceusdm``, ``binancecoinm``) a mapped 3Commas account
    trades on. Without such an account nothing there can be attributed, so it is not listed (40
    weight saved on USDⓈ-M, 5 on COIN-M)."""
    traded = {market.exchange for linked in accounts if (market := market_of(linked.market_code))}
    venues = (FUTURES_VENUES.get(exchange_id), COIN_MARGINED_VENUES.get(exchange_id))
    return [venue for venue in venues if venue is not None and venue in traded]


MARGIN_ORDERS = "margin_order_ids"
"""Listing note: ids of the orders listed from the margin account (cancelled there too)."""


def trades_margin(exchange_id: str, accounts: Sequence[LinkedAccount]) -> bool:
    """A mapped 3Commas account trades the key's margin account (``binance_margin``), whose orders
    the exchange lists apart from spot ones."""
    return exchange_id in MARGIN_WEIGHTS and any(
        (market := market_of(linked.market_code)) is not None
        and market.exchange == exchange_id
        and market.market_type == "margin"
        for linked in accounts
    )


async def _margin_orders(client: ExchangeClient) -> list[dict[str, Any]]:
    """Open orders of the margin account; a failure (e.g. no margin account, or the user's share
    used up, as for the futures API) leaves the rest intact, its orders then simply not shown."""
    weight = MARGIN_WEIGHTS[client.exchange_id].all_open_orders
    try:
        return list(await client.call("fetch_open_orders", None, None, None, MARGIN_PARAMS, weight=weight))
    except OverShare:
        log.info("listing margin orders skipped: the user's share is used up")
    except (ccxt.BaseError, TimeoutError) as error:
        verdict = classify(client.exchange_id, error)
        log.info("listing margin orders failed: %s %s", verdict.verdict, verdict.code)
    return []


async def _futures_orders(
    deps: Deps, venue: str, credentials: Credentials, egress: Egress, user_id: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Open orders and markets of the futures API; a failure there (e.g. a key without futures
    rights, or the user's share used up) leaves the spot listing intact, its orders then simply
    not shown."""
    try:
        client = await deps.hub.client(venue, credentials, egress=egress, interactive_for=user_id)
        orders = await fetch_all_open_orders(client)
        return orders, await deps.hub.markets(venue)
    except OverShare:
        log.info("listing %s orders skipped: the user's share is used up", venue)
    except (ccxt.BaseError, TimeoutError) as error:
        verdict = classify(venue, error)
        log.info("listing %s orders failed: %s %s", venue, verdict.verdict, verdict.code)
    return [], {}


ListingResult = Listing | ListingError | Classification | TryLater


async def list_orders(deps: Deps, user_id: int, connection_id: int) -> ListingResult:
    """Fetch, attribute, store and return the connection's open orders.

    A key the exchange refused comes back as the classifier's verdict (the user must see that
    reason and its fix, not "try again"); the user's budget share used up as :class:`TryLater`;
    other failures as EXCHANGE_FAILED.

    Requests: the exchange's open-orders call(s) (see the module docstring), one balance call,
    markets from the hub's shared cache, the futures API's open orders when a mapped 3Commas
    account trades futures there (:func:`futures_venues`), and for each mapped 3Commas account 4
    calls plus one per deal on a symbol that has open orders (at most :data:`MAX_DEAL_ORDER_FETCHES`).
    """
    async with deps.sessions() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return ListingError.NOT_FOUND
        if connection.kind != "exchange":
            return ListingError.NOT_AN_EXCHANGE
        credentials = deps.vault.open(connection.credentials)
        exchange_id = connection.exchange
        egress = deps.hub.egress_for(user_id, whitelist_of(connection.key_info))
        accounts = await accounts_for_connection(session, deps.vault, user_id, connection_id)
        threecommas_key = bool(
            await session.scalar(
                select(func.count())
                .select_from(Connection)
                .where(Connection.user_id == user_id, Connection.kind == THREECOMMAS)
            )
        )

    now = deps.clock.now()
    weights = WEIGHTS.get(exchange_id, Weights())
    try:
        client = await deps.hub.client(exchange_id, credentials, egress=egress, interactive_for=user_id)
        raw_orders = await fetch_all_open_orders(client)
        balances = _balances(await client.call("fetch_balance", weight=weights.balance))
        markets = await deps.hub.markets(exchange_id)
    except OverShare as over:
        return TryLater(over.retry_after_s)
    except (ccxt.BaseError, TimeoutError) as error:
        verdict = classify(exchange_id, error)
        log.info(
            "listing orders of connection %s failed: %s %s", connection_id, verdict.verdict, verdict.code
        )
        if verdict.verdict.is_key_problem:
            return verdict
        return ListingError.EXCHANGE_FAILED
    venue_notes: dict[str, Any] = {}
    for venue in futures_venues(exchange_id, accounts):
        futures_raw, futures_markets = await _futures_orders(deps, venue, credentials, egress, user_id)
        raw_orders = [*raw_orders, *futures_raw]
        markets = {**markets, **futures_markets}
    if trades_margin(exchange_id, accounts):
        margin_raw = await _margin_orders(client)
        venue_notes[MARGIN_ORDERS] = [str(raw["id"]) for raw in margin_raw]
        raw_orders = [*raw_orders, *margin_raw]
    orders = [order for raw in raw_orders if (order := to_open_order(raw, now)) is not None]

    symbols = {order.symbol for order in orders}
    source = await read_deals(deps.threecommas, accounts, symbols)
    attributed = attribute(orders, source.deal_orders, precision_map(markets, symbols))
    if not source.complete:
        attributed = [
            AttributedOrder(item.order, Attribution.UNKNOWN, None, Reason.AMBIGUOUS)
            if item.attribution is Attribution.ORPHAN
            else item
            for item in attributed
        ]
    # Newest first inside each group; orphans lead, since they are what the user came for.
    rank = {Attribution.ORPHAN: 0, Attribution.UNKNOWN: 1, Attribution.ACTIVE: 2}
    attributed.sort(key=lambda item: (rank[item.attribution], -item.order.created_at.timestamp()))
    notes = {
        "threecommas_linked": source.linked,  # an account is mapped to this connection
        "threecommas_key": threecommas_key,  # the user linked a 3Commas key at all
        "threecommas_complete": source.complete,
        "threecommas_errors": source.errors,
        "threecommas_requests": source.requests,
        **venue_notes,
    }

    ended = {deal_order.deal_ref: deal_order.ended for deal_order in source.deal_orders}
    async with deps.sessions.begin() as session:
        await session.execute(
            delete(OrderList).where(
                OrderList.connection_id == connection_id, OrderList.listed_at < now - LIST_TTL
            )
        )
        order_list = OrderList(
            user_id=user_id, connection_id=connection_id, balances=balances, notes=notes, listed_at=now
        )
        session.add(order_list)
        await session.flush()
        session.add_all(
            ListedOrder(
                user_id=user_id,
                connection_id=connection_id,
                list_version=order_list.id,
                position=position,
                exchange_order_id=item.order.order_id,
                symbol=item.order.symbol,
                side=item.order.side,
                price=str(item.order.price),
                amount=str(item.order.amount),
                filled=str(item.order.filled),
                order_created_at=item.order.created_at,
                attribution=item.attribution.value,
                reason=item.reason.value,
                deal_ref=item.deal_ref,
                deal_ended=ended.get(item.deal_ref or "") or None,
                listed_at=now,
            )
            for position, item in enumerate(attributed)
        )
        list_id = order_list.id
    listing = await load_listing(deps.sessions, user_id, list_id)
    assert listing is not None
    return listing
