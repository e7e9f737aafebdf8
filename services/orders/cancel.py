"""Cancelling orphan orders: re-verified against the exchange and 3Commas at the moment of the tap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import ccxt.async_support as ccxt
from sqlalchemy import select

from services.core.verdicts import Verdict
from services.exchanges.classifier import Classification, classify
from services.exchanges.egress import whitelist_of
from services.exchanges.hub import ExchangeClient
from services.exchanges.open_orders import MARGIN_PARAMS, MARGIN_WEIGHTS, WEIGHTS, Weights, venue_of
from services.orders.attribution import (
    Attribution,
    OpenOrder,
)
from services.orders.listing import MARGIN_ORDERS, Deps, _row_order, row_lock, to_open_order
from services.orders.locked_funds import Lock, freed_by
from services.storage import audit, money_actions
from services.storage.connections import owned_connection
from services.storage.models import Connection, ListedOrder, OrderList
from services.storage.money_actions import ActionState, Unverifiable
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.entities import Deal, SmartTrade
from services.threecommas.errors import NotFound, ThreeCommasError
from services.threecommas.links import LinkedAccount, accounts_for_connection

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
    KEY_PROBLEM = "key_problem"  # the key itself was refused (``verdict`` says how); nothing sent
    EXCHANGE_FAILED = "exchange_failed"  # refused or unreachable before anything was sent
    IN_PROGRESS = "in_progress"  # another tap's cancel of this order is on its way
    UNVERIFIED = "unverified"  # sent without an answer, and the exchange cannot be asked yet


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    row: ListedOrder | None = None
    freed: Lock | None = None
    repeat: bool = False
    """The row already had this outcome: nothing was sent to the exchange this time."""
    verdict: Classification | None = None
    """For KEY_PROBLEM / EXCHANGE_FAILED: the classifier's reading of the exchange's answer."""
    reconciled: bool = False
    """The cancel got no answer; its outcome is what the exchange showed afterwards."""

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


@dataclass(frozen=True)
class _Book:
    """Which of the key's order books holds the order: ccxt params and the weights there."""

    params: dict[str, object]
    weights: Weights


def _book(venue: str, margin: bool) -> _Book:
    if margin:
        return _Book(dict(MARGIN_PARAMS), MARGIN_WEIGHTS[venue])
    return _Book({}, WEIGHTS.get(venue, Weights()))


async def _still_open(
    client: ExchangeClient, row: ListedOrder, now: datetime, book: _Book
) -> OpenOrder | CancelOutcome:
    """The order as the exchange shows it now, or why it is no longer open.

    Looks in the symbol's open orders (Binance weight 6, supported everywhere) rather than
    fetching the single order; only when it is gone does one ``fetch_order`` tell filled from
    cancelled, and if the exchange cannot say, "no longer open" is the answer.
    """
    weights = book.weights
    if client.exchange_id == "binance":
        client.instance.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
    listed = await client.call(
        "fetch_open_orders", row.symbol, None, None, book.params, weight=weights.symbol_open_orders
    )
    for raw in listed:
        if str(raw.get("id")) == row.exchange_order_id:
            return to_open_order(raw, now) or _row_order(row)
    try:
        status = (
            await client.call(
                "fetch_order",
                row.exchange_order_id,
                row.symbol,
                {**_fetch_order_params(client), **book.params},
                weight=weights.order,
            )
        ).get("status")
    except (ccxt.BaseError, TimeoutError) as error:
        if classify(client.exchange_id, error).verdict is Verdict.OK:  # -2013, 51603, 110001...
            return CancelOutcome.NOT_FOUND
        raise
    if status == "closed":
        return CancelOutcome.ALREADY_FILLED
    if status in ("canceled", "cancelled", "expired", "rejected"):
        return CancelOutcome.ALREADY_CANCELLED
    return CancelOutcome.NOT_FOUND


def _fetch_order_params(client: ExchangeClient) -> dict[str, object]:
    """Bybit unified accounts: ccxt's ``fetch_order`` only reads the last 500 orders and refuses
    (``ArgumentsRequired``) unless the caller acknowledges it (ccxt bybit.py ``fetch_order``)."""
    return {"acknowledged": True} if client.exchange_id == "bybit" else {}


def _refused(exchange_id: str, error: BaseException, row: ListedOrder) -> CancelResult:
    """A failed read before the cancel, told apart by the one classifier: a dead key is not an outage."""
    verdict = classify(exchange_id, error)
    if verdict.verdict.is_key_problem:
        return CancelResult(CancelOutcome.KEY_PROBLEM, row, verdict=verdict)
    return CancelResult(CancelOutcome.EXCHANGE_FAILED, row, verdict=verdict)


_LOST_IN_TRANSIT = frozenset({Verdict.NETWORK, Verdict.EXCHANGE_DOWN})
"""No answer to a sent cancel (a timeout, a 5xx, a dropped connection): it may have been carried
out. A rate limit or any refusal is an answer: nothing was done."""


async def _verify_and_cancel(
    deps: Deps,
    row: ListedOrder,
    client: ExchangeClient,
    accounts: Sequence[LinkedAccount],
    action: money_actions.Action,
    book: _Book,
) -> CancelResult | None:
    """Re-verify, then cancel; None when the cancel was sent and its answer lost."""
    now = deps.clock.now()
    try:
        seen = await _still_open(client, row, now, book)
    except (ccxt.BaseError, TimeoutError) as error:
        return _refused(client.exchange_id, error, row)
    if isinstance(seen, CancelOutcome):
        return CancelResult(seen, row)
    if row.attribution == Attribution.ORPHAN and row.deal_ref:
        finished = await _deal_still_finished(deps.threecommas, accounts, row.deal_ref)
        if finished is None:
            return CancelResult(CancelOutcome.DEAL_UNVERIFIED, row)
        if not finished:
            return CancelResult(CancelOutcome.DEAL_ACTIVE_AGAIN, row)
    await money_actions.mark_sent(deps.sessions, action, now)
    try:
        answer = await client.call(
            "cancel_order", row.exchange_order_id, row.symbol, book.params, weight=book.weights.cancel
        )
    except (ccxt.BaseError, TimeoutError) as error:
        verdict = classify(client.exchange_id, error)
        if verdict.verdict is Verdict.OK:  # the exchange no longer has it open (-2011, 51400, 110001)
            return CancelResult(CancelOutcome.ALREADY_CANCELLED, row)
        if verdict.verdict.is_key_problem:
            # The same key just read this order, so a refusal now is about trading rights
            # (Binance -2015, Bybit 10005, OKX 50120 for a read-only key), not a dead key.
            return CancelResult(CancelOutcome.NO_TRADE_PERMISSION, row, verdict=verdict)
        if verdict.verdict in _LOST_IN_TRANSIT:
            return None
        return CancelResult(CancelOutcome.EXCHANGE_FAILED, row, verdict=verdict)
    # The cancel answer carries the remaining amount at cancel time: exactly what was freed.
    at_cancel = to_open_order(answer, now) if answer.get("remaining") is not None else None
    return CancelResult(CancelOutcome.CANCELLED, row, freed_by(at_cancel or seen))


async def _reconcile(
    deps: Deps, row: ListedOrder, client: ExchangeClient, action: money_actions.Action, book: _Book
) -> CancelResult:
    """A cancel without an answer: the order's state now says whether it happened."""

    async def ask() -> dict[str, str] | None:
        try:
            seen = await _still_open(client, row, deps.clock.now(), book)
        except (ccxt.BaseError, TimeoutError) as error:
            raise Unverifiable(type(error).__name__) from None
        if not isinstance(seen, CancelOutcome):
            return None  # still open: the cancel did not happen, a retry may be sent
        done = CancelOutcome.CANCELLED if seen is CancelOutcome.ALREADY_CANCELLED else seen
        return {"outcome": done.value}

    settled = await money_actions.reconcile(deps.sessions, action, deps.clock.now(), ask)
    if settled.state is ActionState.DONE:
        outcome = CancelOutcome(settled.result["outcome"])
        freed = row_lock(row) if outcome is CancelOutcome.CANCELLED else None
        return CancelResult(outcome, row, freed, reconciled=True)
    if settled.state is ActionState.FAILED:
        return CancelResult(CancelOutcome.EXCHANGE_FAILED, row, reconciled=True)
    return CancelResult(CancelOutcome.UNVERIFIED, row, reconciled=True)


_FINAL_OUTCOMES = frozenset(
    {
        CancelOutcome.CANCELLED,
        CancelOutcome.ALREADY_FILLED,
        CancelOutcome.ALREADY_CANCELLED,
        CancelOutcome.NOT_FOUND,
    }
)


ACTION = "order_cancel"


async def cancel_order(deps: Deps, row_id: int, user_id: int, *, allow_unknown: bool = False) -> CancelResult:
    """Cancel one listed order after re-verifying it; safe to call twice, also at the same time.

    ``allow_unknown`` is set only by the explicit "it may belong to something else"
    confirmation; ACTIVE orders are refused whatever the caller says. The exchange order's
    :mod:`money action <services.storage.money_actions>` makes one cancel at a time across taps,
    listings and processes; a cancel whose answer was lost is reconciled against the order's
    state before anything is sent again. Every call, refusals included, leaves an audit entry.
    """
    async with deps.sessions() as session:
        row = await session.get(ListedOrder, row_id)
        if row is None or row.user_id != user_id:
            return await _record(deps, user_id, row_id, None, CancelResult(CancelOutcome.LIST_GONE))
        connection = await owned_connection(session, user_id, row.connection_id)
        notes = await session.scalar(select(OrderList.notes).where(OrderList.id == row.list_version))
        margin = row.exchange_order_id in (notes or {}).get(MARGIN_ORDERS, ())
        accounts = (
            []
            if connection is None
            else await accounts_for_connection(session, deps.vault, user_id, connection.id)
        )
    if connection is None:
        result = CancelResult(CancelOutcome.CONNECTION_GONE, row)
    elif row.outcome is not None:
        # A second tap: report what the first one did, without touching the exchange.
        result = CancelResult(CancelOutcome(row.outcome), row, repeat=True)
    elif row.attribution == Attribution.ACTIVE:
        result = CancelResult(CancelOutcome.ACTIVE_DEAL, row)
    elif row.attribution == Attribution.UNKNOWN and not allow_unknown:
        result = CancelResult(CancelOutcome.NEEDS_CONFIRMATION, row)
    else:
        attempt = await _attempt(deps, user_id, row, connection, accounts, margin)
        return await _record(deps, user_id, row_id, *attempt)
    return await _record(deps, user_id, row_id, None, result)


async def _attempt(
    deps: Deps,
    user_id: int,
    row: ListedOrder,
    connection: Connection,
    accounts: Sequence[LinkedAccount],
    margin: bool,
) -> tuple[money_actions.Action | None, CancelResult]:
    target = f"{connection.id}:{row.exchange_order_id}"
    # Opened before the claim: a VAULT_KEY that cannot open it (VaultError, the operator's error)
    # must not leave an action row that looks in flight.
    credentials = deps.vault.open(connection.credentials)
    claim = await money_actions.claim(
        deps.sessions, user_id=user_id, kind=ACTION, target=target, now=deps.clock.now()
    )
    action = claim.action
    if not claim.claimed and action.state is ActionState.DONE:
        return None, CancelResult(CancelOutcome(action.result["outcome"]), row, repeat=True)
    if not claim.claimed and action.in_flight:
        return None, CancelResult(CancelOutcome.IN_PROGRESS, row)
    venue = venue_of(connection.exchange, row.symbol)  # a futures order is cancelled on its own API
    book = _book(venue, margin)
    try:
        egress = deps.hub.egress_for(connection.user_id, whitelist_of(connection.key_info))
        client = await deps.hub.client(venue, credentials, egress=egress)
    except (ccxt.BaseError, TimeoutError) as error:
        return (action if claim.claimed else None), _refused(venue, error, row)
    if not claim.claimed:  # unknown: ask the exchange before anything is sent again
        return None, await _reconcile(deps, row, client, action, book)
    result = await _verify_and_cancel(deps, row, client, accounts, action, book)
    if result is None:
        async with deps.sessions.begin() as session:
            action = await money_actions.settle(session, action, ActionState.UNKNOWN, deps.clock.now())
        return None, await _reconcile(deps, row, client, action, book)
    return action, result


async def _record(
    deps: Deps, user_id: int, row_id: int, action: money_actions.Action | None, result: CancelResult
) -> CancelResult:
    """Store the row's outcome, settle the attempt (``action``, when this call made one) and audit it."""
    now = deps.clock.now()
    async with deps.sessions.begin() as session:
        stored = await session.get(ListedOrder, row_id) if result.row is not None else None
        final = result.outcome in _FINAL_OUTCOMES
        if stored is not None and stored.outcome is None and final:
            stored.outcome = result.outcome.value
        if action is not None:
            await money_actions.settle(
                session,
                action,
                ActionState.DONE if final else ActionState.FAILED,
                now,
                result={"outcome": result.outcome.value} if final else None,
                error="" if final else result.outcome.value,
            )
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
            reconciled=result.reconciled or None,
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
