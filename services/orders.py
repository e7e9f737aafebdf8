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
* **Err towards not cancelling.** If 3Commas could not be read completely (an error, or more
  active deals than we may fetch), nothing is offered as an orphan: a missed active deal would
  otherwise make one of its live orders look orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import ccxt.async_support as ccxt
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services import audit
from services.attribution import (
    AttributedOrder,
    Attribution,
    DealOrder,
    MarketPrecision,
    OpenOrder,
    Reason,
    attribute,
)
from services.clock import Clock
from services.connections import owned_connection
from services.deals_store import LinkedAccount, ThreeCommasAccess, accounts_for_connection
from services.exchanges import ExchangeClient, ExchangeHub
from services.locked_funds import Lock, LockedFunds, freed_by, summarize
from services.models import Connection, ListedOrder, OrderList
from services.threecommas import Deal, NotFound, SmartTrade, ThreeCommasClient, ThreeCommasError
from services.vault import Vault

log = logging.getLogger(__name__)

LIST_TTL = timedelta(days=1)
"""How long a listing stays usable; older ones are pruned when the connection is listed again."""

MAX_DEAL_ORDER_FETCHES = 40
"""``market_orders`` calls per listing and 3Commas key (3Commas allows ~100 requests a minute)."""

RECENT_FINISHED_DEALS = 50
"""Finished deals looked at: orphans come from deals that ended recently (e.g. the last revocation)."""

BYBIT_SETTLE_COINS = ("USDT",)
"""Bybit v5 lists linear orders per settle coin; one request each."""

OKX_INST_TYPES = ("SPOT", "SWAP")
"""OKX ``orders-pending`` per instrument type; one request each (more only past 100 orders)."""


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
}
"""Bybit and OKX budgets count requests (see services/budget.py), so every call weighs 1 there."""

PAGE_LIMITS = {"bybit": 50, "okx": 100}
"""Largest page of open orders per request; a full page means there may be another one."""


async def _pages(client: ExchangeClient, params: dict[str, Any], weight: float) -> list[dict[str, Any]]:
    """All pages of one Bybit category / OKX instType, each page one budgeted request."""
    exchange_id = client.exchange_id
    limit = PAGE_LIMITS[exchange_id]
    orders: list[dict[str, Any]] = []
    cursor: dict[str, Any] = {}
    while True:
        page = await client.call("fetch_open_orders", None, None, limit, {**params, **cursor}, weight=weight)
        orders += page
        if len(page) < limit:
            return orders
        if exchange_id == "bybit":
            # ccxt puts Bybit's nextPageCursor on one order's info (add_pagination_cursor_to_result).
            token = next((o["info"]["nextPageCursor"] for o in page if o["info"].get("nextPageCursor")), None)
            if not token:
                return orders
            cursor = {"cursor": token}
        else:
            cursor = {"after": page[-1]["id"]}  # OKX: orders older than the last one listed


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
    orders = []
    if trade.order_type == "limit" and trade.price is not None and not trade.skip_enter_step:
        orders.append(
            DealOrder(ref, status, symbol, trade.side, trade.price, trade.units, trade.created_at, label)  # type: ignore[arg-type]
        )
    exit_side = "sell" if trade.side == "buy" else "buy"
    for step in trade.take_profit:
        if step.price is not None and step.order_type == "limit":
            amount = trade.units * step.volume / 100
            orders.append(DealOrder(ref, status, symbol, exit_side, step.price, amount, None, label))  # type: ignore[arg-type]
    return orders


async def _deal_orders_of_deal(client: ThreeCommasClient, deal: Deal) -> list[DealOrder]:
    finished = deal.finished
    result = []
    for order in await client.market_orders_of_deal(deal):
        if order.symbol is None or order.price is None or order.amount is None:
            continue
        if order.side not in ("buy", "sell"):
            continue
        # Active deals: only their open orders. Finished deals: everything not reported filled,
        # because 3Commas shows orders cancelled even when the cancel never reached the exchange.
        if (not finished and order.status != "active") or (finished and order.status == "filled"):
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
            )
        )
    return result


async def _read_account(
    access: ThreeCommasAccess, linked: LinkedAccount, symbols: set[str], source: DealSource
) -> None:
    async with access.open(linked.credentials) as client:
        account = linked.account_id
        active = await client.deals(scope="active", account_id=account, limit=1000)
        finished = await client.deals(scope="finished", account_id=account, limit=RECENT_FINISHED_DEALS)
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
        async with access.open(linked.credentials, max_pages=1) as recent_only:
            trades = await client.smart_trades(status="active", account_id=account)
            trades += await recent_only.smart_trades(status="finished", account_id=account)
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
    """The services a listing or a cancel needs (the app context, minus Telegram)."""

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    hub: ExchangeHub
    clock: Clock
    threecommas: ThreeCommasAccess


class ListingError(StrEnum):
    NOT_FOUND = "not_found"
    NOT_AN_EXCHANGE = "not_an_exchange"
    EXCHANGE_FAILED = "exchange_failed"


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


def _funds(rows: Sequence[ListedOrder], balances: Mapping[str, Mapping[str, Any]]) -> LockedFunds:
    # Orders already cancelled from this list no longer lock anything.
    still_open = [
        AttributedOrder(_row_order(row), Attribution(row.attribution), row.deal_ref, Reason(row.reason))
        for row in rows
        if row.outcome is None
    ]
    return summarize(still_open, balances)


async def load_listing(session: AsyncSession, user_id: int, list_id: int) -> Listing | None:
    """A stored listing of this user, or None when it expired, was replaced by pruning, or is not theirs."""
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


async def latest_list_id(session: AsyncSession, connection_id: int) -> int | None:
    return await session.scalar(
        select(func.max(OrderList.id)).where(OrderList.connection_id == connection_id)
    )


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


async def list_orders(deps: Deps, user_id: int, connection_id: int) -> Listing | ListingError:
    """Fetch, attribute, store and return the connection's open orders.

    Requests: the exchange's open-orders call(s) (see the module docstring), one balance call,
    markets from the hub's shared cache, and for each mapped 3Commas account 4 calls plus one
    per deal on a symbol that has open orders (at most :data:`MAX_DEAL_ORDER_FETCHES`).
    """
    async with deps.sessions() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return ListingError.NOT_FOUND
        if connection.kind != "exchange":
            return ListingError.NOT_AN_EXCHANGE
        credentials = deps.vault.open(connection.credentials)
        exchange_id = connection.exchange
        accounts = await accounts_for_connection(session, deps.vault, user_id, connection_id)

    now = deps.clock.now()
    weights = WEIGHTS.get(exchange_id, Weights())
    try:
        client = await deps.hub.client(exchange_id, credentials)
        raw_orders = await fetch_all_open_orders(client)
        balances = _balances(await client.call("fetch_balance", weight=weights.balance))
        markets = await deps.hub.markets(exchange_id)
    except (ccxt.BaseError, TimeoutError) as error:
        log.info("listing orders of connection %s failed: %s", connection_id, type(error).__name__)
        return ListingError.EXCHANGE_FAILED
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
        "threecommas_linked": source.linked,
        "threecommas_complete": source.complete,
        "threecommas_errors": source.errors,
        "threecommas_requests": source.requests,
    }

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
                listed_at=now,
            )
            for position, item in enumerate(attributed)
        )
        list_id = order_list.id
    async with deps.sessions() as session:
        listing = await load_listing(session, user_id, list_id)
    assert listing is not None
    return listing


# -- cancelling --------------------------------------------------------------------------------


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    ALREADY_FILLED = "already_filled"
    ALREADY_CANCELLED = "already_cancelled"
    NOT_FOUND = "not_found"  # the exchange no longer knows the order
    LIST_GONE = "list_gone"  # no such row for this user (expired, or another user's)
    CONNECTION_GONE = "connection_gone"
    ACTIVE_DEAL = "active_deal"  # never cancelled from here
    NEEDS_CONFIRMATION = "needs_confirmation"  # an UNKNOWN order without the explicit confirmation
    DEAL_ACTIVE_AGAIN = "deal_active_again"
    DEAL_UNVERIFIED = "deal_unverified"  # 3Commas could not confirm the deal is finished
    NO_TRADE_PERMISSION = "no_trade_permission"
    EXCHANGE_FAILED = "exchange_failed"


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    row: ListedOrder | None = None
    freed: Lock | None = None
    repeat: bool = False
    """The row already had this outcome: nothing was sent to the exchange this time."""

    @property
    def done(self) -> bool:
        return self.outcome is CancelOutcome.CANCELLED and not self.repeat


async def _deal_still_finished(
    access: ThreeCommasAccess, accounts: Sequence[LinkedAccount], deal_ref: str
) -> bool | None:
    """True/False from 3Commas now; None when no mapped 3Commas key can show the deal."""
    kind, _, raw_id = deal_ref.partition(":")
    for linked in accounts:
        try:
            async with access.open(linked.credentials) as client:
                item: Deal | SmartTrade = (
                    await client.smart_trade(int(raw_id))
                    if kind == "smart_trade"
                    else await client.deal(int(raw_id))
                )
        except NotFound:
            continue
        except ThreeCommasError:
            return None
        return item.finished
    return None


async def _still_open(client: ExchangeClient, row: ListedOrder, now: datetime) -> OpenOrder | CancelOutcome:
    """The order as the exchange shows it now, or why it is no longer open.

    Looks in the symbol's open orders (Binance weight 6, supported everywhere) rather than
    fetching the single order; only when it is gone does one ``fetch_order`` tell filled from
    cancelled, and if the exchange cannot say, "no longer open" is the answer.
    """
    weights = WEIGHTS.get(client.exchange_id, Weights())
    if client.exchange_id == "binance":
        client.instance.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
    listed = await client.call("fetch_open_orders", row.symbol, weight=weights.symbol_open_orders)
    for raw in listed:
        if str(raw.get("id")) == row.exchange_order_id:
            return to_open_order(raw, now) or _row_order(row)
    try:
        status = (
            await client.call("fetch_order", row.exchange_order_id, row.symbol, weight=weights.order)
        ).get("status")
    except (ccxt.BaseError, TimeoutError):
        return CancelOutcome.NOT_FOUND
    if status == "closed":
        return CancelOutcome.ALREADY_FILLED
    if status in ("canceled", "cancelled", "expired", "rejected"):
        return CancelOutcome.ALREADY_CANCELLED
    return CancelOutcome.NOT_FOUND


async def _verify_and_cancel(
    deps: Deps,
    row: ListedOrder,
    connection: Connection,
    accounts: Sequence[LinkedAccount],
    allow_unknown: bool,
) -> CancelResult:
    if row.attribution == Attribution.ACTIVE:
        return CancelResult(CancelOutcome.ACTIVE_DEAL, row)
    if row.attribution == Attribution.UNKNOWN and not allow_unknown:
        return CancelResult(CancelOutcome.NEEDS_CONFIRMATION, row)
    now = deps.clock.now()
    try:
        client = await deps.hub.client(connection.exchange, deps.vault.open(connection.credentials))
        seen = await _still_open(client, row, now)
    except (ccxt.BaseError, TimeoutError):
        return CancelResult(CancelOutcome.EXCHANGE_FAILED, row)
    if isinstance(seen, CancelOutcome):
        return CancelResult(seen, row)
    if row.attribution == Attribution.ORPHAN and row.deal_ref:
        finished = await _deal_still_finished(deps.threecommas, accounts, row.deal_ref)
        if finished is None:
            return CancelResult(CancelOutcome.DEAL_UNVERIFIED, row)
        if not finished:
            return CancelResult(CancelOutcome.DEAL_ACTIVE_AGAIN, row)
    weight = WEIGHTS.get(client.exchange_id, Weights()).cancel
    try:
        answer = await client.call("cancel_order", row.exchange_order_id, row.symbol, weight=weight)
    except ccxt.OrderNotFound:
        return CancelResult(CancelOutcome.ALREADY_CANCELLED, row)
    except (ccxt.PermissionDenied, ccxt.AuthenticationError):
        # The same key just read this order, so a refusal now is about trading rights
        # (Binance -2015, Bybit 10005, OKX 50120 for a read-only key), not a dead key.
        return CancelResult(CancelOutcome.NO_TRADE_PERMISSION, row)
    except (ccxt.BaseError, TimeoutError):
        return CancelResult(CancelOutcome.EXCHANGE_FAILED, row)
    # The cancel answer carries the remaining amount at cancel time: exactly what was freed.
    at_cancel = to_open_order(answer, now) if answer.get("remaining") is not None else None
    return CancelResult(CancelOutcome.CANCELLED, row, freed_by(at_cancel or seen))


_FINAL_OUTCOMES = frozenset(
    {
        CancelOutcome.CANCELLED,
        CancelOutcome.ALREADY_FILLED,
        CancelOutcome.ALREADY_CANCELLED,
        CancelOutcome.NOT_FOUND,
    }
)


# One cancel per listed order at a time in this process: a double tap waits for the first one and
# then reports its outcome, instead of verifying and cancelling on the exchange a second time.
_cancelling: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()


async def cancel_order(deps: Deps, row_id: int, user_id: int, *, allow_unknown: bool = False) -> CancelResult:
    """Cancel one listed order after re-verifying it; safe to call twice, also at the same time.

    ``allow_unknown`` is set only by the explicit "it may belong to something else"
    confirmation; ACTIVE orders are refused whatever the caller says. Every call, refusals
    included, leaves an audit entry.
    """
    lock = _cancelling.get(row_id)
    if lock is None:
        lock = _cancelling[row_id] = asyncio.Lock()
    async with lock:
        return await _cancel_order(deps, row_id, user_id, allow_unknown=allow_unknown)


async def _cancel_order(deps: Deps, row_id: int, user_id: int, *, allow_unknown: bool) -> CancelResult:
    now = deps.clock.now()
    async with deps.sessions() as session:
        row = await session.get(ListedOrder, row_id)
        if row is None or row.user_id != user_id:
            result = CancelResult(CancelOutcome.LIST_GONE)
        else:
            connection = await owned_connection(session, user_id, row.connection_id)
            if connection is None:
                result = CancelResult(CancelOutcome.CONNECTION_GONE, row)
            elif row.outcome is not None:
                # A second tap: report what the first one did, without touching the exchange.
                result = CancelResult(CancelOutcome(row.outcome), row, repeat=True)
            else:
                accounts = await accounts_for_connection(session, deps.vault, user_id, connection.id)
                result = await _verify_and_cancel(deps, row, connection, accounts, allow_unknown)

    async with deps.sessions.begin() as session:
        stored = await session.get(ListedOrder, row_id) if result.row is not None else None
        if stored is not None and stored.outcome is None and result.outcome in _FINAL_OUTCOMES:
            stored.outcome = result.outcome.value
        audit.record(
            session,
            user_id,
            "order_cancel"
            if result.done
            else "order_cancel_repeat"
            if result.repeat
            else "order_cancel_refused",
            now,
            connection_id=result.row.connection_id if result.row else None,
            row_id=row_id,
            outcome=result.outcome.value,
            order_id=result.row.exchange_order_id if result.row else None,
            symbol=result.row.symbol if result.row else None,
            attribution=result.row.attribution if result.row else None,
            deal_ref=result.row.deal_ref if result.row else None,
            freed=None if result.freed is None else [result.freed.currency, str(result.freed.amount)],
        )
    return result


async def cancel_all_orphans(deps: Deps, user_id: int, list_id: int) -> list[CancelResult]:
    """Cancel every still-open orphan of one listing (the user confirmed once for all of them).

    Each order goes through :func:`cancel_order`, so each is re-verified and audited on its own.
    """
    async with deps.sessions() as session:
        row_ids = list(
            await session.scalars(
                select(ListedOrder.id)
                .where(
                    ListedOrder.list_version == list_id,
                    ListedOrder.user_id == user_id,
                    ListedOrder.attribution == Attribution.ORPHAN.value,
                    ListedOrder.outcome.is_(None),
                )
                .order_by(ListedOrder.position)
            )
        )
    return [await cancel_order(deps, row_id, user_id) for row_id in row_ids]


def total_freed(results: Iterable[CancelResult]) -> dict[str, Decimal]:
    """Freed spot funds per currency over several cancels (margin is not computable, see locked_funds)."""
    totals: dict[str, Decimal] = {}
    for result in results:
        if result.freed is not None and result.freed.amount is not None:
            totals[result.freed.currency] = (
                totals.get(result.freed.currency, Decimal(0)) + result.freed.amount
            )
    return totals
