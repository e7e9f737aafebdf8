"""Recreating a failed deal or SmartTrade: the plan the user approves, stored, then sent once.

A Telegram button carries at most 64 bytes, so it names a short row id; the row holds exactly
what the confirmation showed, so the request that goes to 3Commas is the one the user approved
even if the original deal changes meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.vault import Credentials, Vault
from services.core.verdicts import clip_detail
from services.storage import audit, money_actions
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import FailedDeal
from services.storage.money_actions import ActionState, Unverifiable
from services.threecommas.client import ThreeCommasAccess, ThreeCommasClient, start_new_deal_body
from services.threecommas.entities import (
    Deal,
    SmartTrade,
    SmartTradeParams,
    StopLoss,
    TakeProfitStep,
    decimal_text,
)
from services.threecommas.errors import PermissionDenied, ThreeCommasError, Unavailable

# -- recreate --------------------------------------------------------------------------------------


class Caveat(StrEnum):
    """How a recreated deal or SmartTrade will differ from the one that failed."""

    BOT_SETTINGS_NOW = "bot_settings_now"
    """A DCA bot starts a fresh deal with its settings as they are now (the old deal's in the fields)."""
    HELD_NOT_SOLD = "held_not_sold"
    """The old deal had bought ``amount`` ``currency``; the new deal buys again and does not sell them."""
    ONLY_PROTECTS = "only_protects"
    """The SmartTrade's position was entered (``amount`` ``currency`` at ``price``): the new one only
    places its take profit and stop loss, it does not buy again."""
    MARKET_PRICE = "market_price"
    """A market entry fills at the price of the moment, not at the original ``price`` (if known)."""


@dataclass(frozen=True, slots=True)
class PlanWarning:
    """One :class:`Caveat` with its numbers and names; the bot words it in the user's language.

    Stored in the plan's ``warnings`` as :meth:`to_dict`; plans stored before this held English
    sentences there, which :func:`plan_warnings` hands back as they are.
    """

    caveat: Caveat
    amount: Decimal | None = None
    currency: str | None = None
    """The coin of ``amount``; with BOT_SETTINGS_NOW the quote currency of ``base_order``."""
    price: Decimal | None = None
    take_profit: Decimal | None = None
    """BOT_SETTINGS_NOW: the old deal's take profit, in %."""
    stop_loss: Decimal | None = None
    """BOT_SETTINGS_NOW: the old deal's stop loss, in %."""
    base_order: Decimal | None = None
    """BOT_SETTINGS_NOW: the old deal's base order, in ``currency``."""

    def to_dict(self) -> dict[str, str]:
        values = {
            "amount": decimal_text(self.amount),
            "currency": self.currency,
            "price": decimal_text(self.price),
            "take_profit": decimal_text(self.take_profit),
            "stop_loss": decimal_text(self.stop_loss),
            "base_order": decimal_text(self.base_order),
        }
        return {"caveat": self.caveat.value} | {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PlanWarning:
        def number(name: str) -> Decimal | None:
            value = raw.get(name)
            return None if value is None else Decimal(str(value))

        return cls(
            Caveat(raw["caveat"]),
            amount=number("amount"),
            currency=str(raw["currency"]) if raw.get("currency") else None,
            price=number("price"),
            take_profit=number("take_profit"),
            stop_loss=number("stop_loss"),
            base_order=number("base_order"),
        )


def plan_warnings(params: Mapping[str, Any]) -> list[PlanWarning | str]:
    """A stored plan's warnings: typed, or the English sentence a plan stored before held (shown as
    it is). One this version cannot read comes back as its raw text rather than not at all."""
    warnings: list[PlanWarning | str] = []
    for raw in params.get("warnings") or ():
        if isinstance(raw, Mapping):
            try:
                warnings.append(PlanWarning.from_dict(raw))
            except (KeyError, ValueError, ArithmeticError):
                warnings.append(str(raw.get("caveat") or raw))
        else:
            warnings.append(str(raw))
    return warnings


@dataclass(frozen=True, slots=True)
class RecreatePlan:
    """Exactly the request :func:`recreate` will send, for the user to confirm first.

    ``body`` is produced by the same code the client uses, so what the UI shows is what goes
    out. ``warnings`` lists how the result will differ from what failed; ``summary`` is an English
    record of the plan (logs, /export), never shown in chat.
    """

    kind: str  # "smart_trade" or "dca_deal"
    source_ref: str
    method: str
    path: str
    body: dict[str, Any]
    summary: str
    warnings: tuple[PlanWarning, ...] = ()
    smart_trade: SmartTradeParams | None = None
    bot_id: int | None = None
    bot_name: str | None = None
    pair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source_ref": self.source_ref,
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "summary": self.summary,
            "warnings": [warning.to_dict() for warning in self.warnings],
            "bot_id": self.bot_id,
            "bot_name": self.bot_name,
        }


def recreate_params(item: Deal | SmartTrade) -> RecreatePlan:
    """How to put a failed/cancelled deal or SmartTrade back; ValueError when it cannot be done."""
    if isinstance(item, Deal):
        return _recreate_deal(item)
    return _recreate_smart_trade(item)


def _recreate_deal(deal: Deal) -> RecreatePlan:
    """A DCA deal cannot be re-sent as it was: the bot starts a fresh one with its settings now."""
    if deal.bot_id is None:
        raise ValueError(f"deal {deal.id} names no bot to start a new deal on")
    quote, _, base = deal.pair.partition("_")
    warnings = [
        PlanWarning(
            Caveat.BOT_SETTINGS_NOW,
            # 3Commas states a DCA bot's base order in the quote currency (USDT of USDT_ETH)
            currency=quote if deal.base_order_volume is not None else None,
            take_profit=deal.take_profit,
            stop_loss=deal.stop_loss_percentage,
            base_order=deal.base_order_volume,
        )
    ]
    held = (deal.bought_amount or Decimal(0)) - (deal.sold_amount or Decimal(0))
    if held > 0:  # failing or cancelling a deal leaves what it bought on the account
        warnings.append(PlanWarning(Caveat.HELD_NOT_SOLD, amount=held, currency=base))
    return RecreatePlan(
        kind="dca_deal",
        source_ref=f"deal:{deal.id}",
        method="POST",
        path=f"/ver1/bots/{deal.bot_id}/start_new_deal",
        body=start_new_deal_body(deal.pair),
        summary=f"Start a new deal on bot {deal.bot_name or deal.bot_id} for {deal.symbol or deal.pair}",
        warnings=tuple(warnings),
        bot_id=deal.bot_id,
        bot_name=deal.bot_name,
        pair=deal.pair,
    )


def _recreate_smart_trade(trade: SmartTrade) -> RecreatePlan:
    """Same entry, targets and stop; but if the position was already bought, only protect it.

    Re-sending the entry of a trade whose position filled would buy a second time, so a filled
    position becomes a Smart Sell (``skip_enter_step``) for the coins still held.
    """
    if trade.account_id is None or trade.side is None or trade.units is None or trade.order_type is None:
        raise ValueError(f"SmartTrade {trade.id} lacks its account, side, size or order type")
    entered = trade.entered_amount or Decimal(0)
    held = entered - (trade.closed_amount or Decimal(0))
    warnings: list[PlanWarning] = []
    if entered > 0 and held <= 0:
        raise ValueError(f"SmartTrade {trade.id} was already closed; nothing is left to protect")
    if entered > 0:
        entry_price = trade.average_enter_price or trade.price
        entry = (held, "market", entry_price, True, False)
        base = trade.pair.partition("_")[2] or None
        warnings.append(PlanWarning(Caveat.ONLY_PROTECTS, amount=held, currency=base, price=entry_price))
        summary = f"Protect {held} {trade.symbol or trade.pair} with the original take profit and stop loss"
    else:
        entry = (trade.units, trade.order_type, trade.price, trade.skip_enter_step, trade.instant)
        at = f" at {trade.price}" if trade.order_type == "limit" else " at market"
        summary = f"{trade.side.capitalize()} {trade.units} {trade.symbol or trade.pair}{at} again"
        if trade.order_type == "market":
            warnings.append(PlanWarning(Caveat.MARKET_PRICE, price=trade.price))
    units, order_type, price, skip_enter_step, instant = entry
    params = SmartTradeParams(
        account_id=trade.account_id,
        pair=trade.pair,
        side=trade.side,
        units=units,
        order_type=order_type,
        price=price,
        take_profit=trade.take_profit,
        stop_loss=trade.stop_loss,
        skip_enter_step=skip_enter_step,
        instant=instant,
        leverage_type=trade.leverage_type,
        leverage_value=trade.leverage_value,
    )
    return RecreatePlan(
        kind="smart_trade",
        source_ref=f"smart_trade:{trade.id}",
        method="POST",
        path="/v2/smart_trades",
        body=params.to_body(),
        summary=summary,
        warnings=tuple(warnings),
        smart_trade=params,
    )


async def recreate(client: ThreeCommasClient, plan: RecreatePlan) -> Deal | SmartTrade:
    """Send the confirmed plan; 3Commas' errors (e.g. PermissionDenied for a read-only key) propagate."""
    if plan.smart_trade is not None:
        return await client.create_smart_trade(plan.smart_trade)
    if plan.bot_id is None:
        raise ValueError("the plan names neither a SmartTrade nor a bot")
    return await client.start_new_deal(plan.bot_id, plan.pair)


# -- failed deals and recreating them ------------------------------------------------------------


async def store_failed_deal(
    session: AsyncSession,
    *,
    user_id: int,
    tc_connection_id: int,
    plan: RecreatePlan | Mapping[str, Any],
    error: str | None,
    now: datetime,
) -> int:
    """Keep what a Recreate button will send; returns the row id to put into ``RecreateCb``.

    ``plan`` is :func:`services.threecommas.checks.recreate_params`' result or its ``to_dict()`` (the
    ``recreate`` field of a deal_failed observation). Storing the same deal twice returns the
    existing row, so a repeated outbox event does not make a second button with another id.
    """
    data = plan.to_dict() if isinstance(plan, RecreatePlan) else dict(plan)
    kind, _, ref_id = str(data["source_ref"]).partition(":")
    existing = await session.scalar(
        select(FailedDeal).where(
            FailedDeal.tc_connection_id == tc_connection_id,
            FailedDeal.kind == kind,
            FailedDeal.tc_id == int(ref_id),
        )
    )
    if existing is not None:
        return existing.id
    row = FailedDeal(
        user_id=user_id,
        tc_connection_id=tc_connection_id,
        kind=kind,
        tc_id=int(ref_id),
        params=data,
        error=clip_detail(error or ""),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row.id


def _step(raw: Mapping[str, Any]) -> TakeProfitStep:
    price = raw.get("price") or {}
    trailing = raw.get("trailing") or {}
    return TakeProfitStep(
        price=Decimal(str(price["value"])),
        volume=Decimal(str(raw["volume"])),
        price_type=str(price.get("type", "bid")),
        order_type=str(raw.get("order_type", "limit")),
        trailing_percent=Decimal(str(trailing["percent"])) if trailing.get("enabled") else None,
    )


def _stop_loss(raw: Mapping[str, Any] | None) -> StopLoss | None:
    if not raw or not raw.get("enabled"):
        return None
    conditional = raw.get("conditional") or {}
    price = conditional.get("price") or {}
    trailing = conditional.get("trailing") or {}
    return StopLoss(
        price=Decimal(str(price["value"])),
        price_type=str(price.get("type", "bid")),
        order_type=str(raw.get("order_type", "market")),
        trailing_percent=Decimal(str(trailing["percent"])) if trailing.get("enabled") else None,
    )


def smart_trade_params(body: Mapping[str, Any]) -> SmartTradeParams:
    """The inverse of :meth:`SmartTradeParams.to_body`: the stored body back into params.

    Going through the validating dataclass again means a stored row that was tampered with or
    written by an older version fails here, before anything is sent.
    """
    position = body["position"]
    price = (position.get("price") or {}).get("value")
    leverage = body.get("leverage") or {}
    take_profit = body.get("take_profit") or {}
    return SmartTradeParams(
        account_id=int(body["account_id"]),
        pair=str(body["pair"]),
        side=str(position["type"]),
        units=Decimal(str(position["units"]["value"])),
        order_type=str(position["order_type"]),
        price=Decimal(str(price)) if price is not None else None,
        take_profit=tuple(_step(step) for step in take_profit.get("steps") or ())
        if take_profit.get("enabled")
        else (),
        stop_loss=_stop_loss(body.get("stop_loss")),
        skip_enter_step=bool(body.get("skip_enter_step")),
        instant=bool(body.get("instant")),
        leverage_type=str(leverage.get("type")) if leverage.get("enabled") else None,
        leverage_value=Decimal(str(leverage["value"])) if leverage.get("enabled") else None,
    )


def dca_target(params: Mapping[str, Any]) -> tuple[int, str | None]:
    """(bot id, pair) of a stored DCA plan; the bot id is read from the path the plan names."""
    path = str(params["path"])  # /ver1/bots/{id}/start_new_deal
    bot_id = int(path.split("/")[3])
    pair = (params.get("body") or {}).get("pair")
    return bot_id, str(pair) if pair else None


class RecreateOutcome(StrEnum):
    CREATED = "created"
    ALREADY = "already_recreated"
    IN_PROGRESS = "in_progress"  # another tap's request is on its way
    NOT_CREATED = "not_created"  # no answer, and 3Commas shows nothing was created: may be retried
    UNVERIFIED = "unverified"  # no answer, and 3Commas cannot be asked yet: nothing is sent again
    GONE = "not_found"
    NO_WRITE_PERMISSION = "no_write_permission"
    REFUSED = "refused"


@dataclass(frozen=True)
class RecreateResult:
    outcome: RecreateOutcome
    ref: str | None = None
    status: str | None = None
    error: str | None = None
    reconciled: bool = False
    """3Commas did not answer the create; what it had done was looked up afterwards."""


async def load_failed_deal(sessions: Sessions, row_id: int, user_id: int) -> FailedDeal | None:
    """:func:`failed_deal` in a read of its own (the Recreate button)."""
    async with sessions() as session:
        return await failed_deal(session, row_id, user_id)


async def failed_deal(session: AsyncSession, row_id: int, user_id: int) -> FailedDeal | None:
    """The stored failed deal when it is this user's; None for another user's or a missing row."""
    row = await session.get(FailedDeal, row_id)
    return row if row is not None and row.user_id == user_id else None


ACTION = "deal_recreate"

RECENT_CREATED = 20
"""SmartTrades / deals looked at when reconciling: the newest ones, one of which we may have created."""


def _matches_plan(kind: str, params: Mapping[str, Any], tc_id: int, item: Deal | SmartTrade) -> bool:
    """Is ``item`` what the lost create request asked for? Newer than the failed original (3Commas
    ids only grow), on the same account / bot, the same pair, side and size."""
    if item.id <= tc_id:
        return False
    if isinstance(item, SmartTrade):
        if kind != "smart_trade":
            return False
        wanted = smart_trade_params(params["body"])
        return (
            item.account_id == wanted.account_id
            and item.pair == wanted.pair
            and item.side == wanted.side
            and item.units == wanted.units
        )
    bot_id, pair = dca_target(params)
    return kind != "smart_trade" and item.bot_id == bot_id and (pair is None or item.pair == pair)


async def _find_created(
    access: ThreeCommasAccess, credentials: Credentials, kind: str, params: Mapping[str, Any], tc_id: int
) -> dict[str, Any] | None:
    """What 3Commas shows now for a create whose answer was lost (see money_actions.reconcile)."""
    try:
        async with access.open(credentials, max_pages=1) as client:
            items: list[Deal] | list[SmartTrade]
            if kind == "smart_trade":
                account_id = smart_trade_params(params["body"]).account_id
                items = await client.smart_trades(account_id=account_id, limit=RECENT_CREATED)
            else:
                items = await client.deals(limit=RECENT_CREATED)
    except ThreeCommasError as error:
        raise Unverifiable(str(error)) from None
    found = [item for item in items if _matches_plan(kind, params, tc_id, item)]
    if not found:
        return None
    created = min(found, key=lambda item: item.id)  # the first one after the original is ours
    return {"ref": f"{kind if kind == 'smart_trade' else 'deal'}:{created.id}", "status": created.status}


async def _send(client: ThreeCommasClient, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    created: Deal | SmartTrade
    if kind == "smart_trade":
        created = await client.create_smart_trade(smart_trade_params(params["body"]))
        return {"ref": f"smart_trade:{created.id}", "status": created.status}
    bot_id, pair = dca_target(params)
    created = await client.start_new_deal(bot_id, pair)
    return {"ref": f"deal:{created.id}", "status": created.status}


def _from_action(action: money_actions.Action, *, reconciled: bool) -> RecreateResult:
    """What an action row says to the user once nothing more can be learned now."""
    state = action.state
    if state is ActionState.DONE:
        outcome = RecreateOutcome.CREATED if reconciled else RecreateOutcome.ALREADY
        return RecreateResult(
            outcome, action.result.get("ref"), action.result.get("status"), reconciled=reconciled
        )
    if state is ActionState.FAILED:
        return RecreateResult(RecreateOutcome.NOT_CREATED, reconciled=reconciled)
    if state is ActionState.UNKNOWN:
        return RecreateResult(RecreateOutcome.UNVERIFIED, error=action.error, reconciled=reconciled)
    return RecreateResult(RecreateOutcome.IN_PROGRESS)


async def recreate_failed_deal(
    sessions: Sessions,
    vault: Vault,
    access: ThreeCommasAccess,
    *,
    row_id: int,
    user_id: int,
    now: datetime,
    on_unknown: Callable[[], Awaitable[None]] | None = None,
) -> RecreateResult:
    """Send the stored plan to 3Commas at most once, whatever the taps, processes and lost answers.

    The failed deal's :mod:`money action <services.storage.money_actions>` is claimed first, so a
    second tap is told the first one is on its way. A timeout, 5xx or dropped connection after
    sending leaves it ``unknown``: ``on_unknown`` lets the caller say "checking…", and 3Commas'
    newest SmartTrades / deals are searched for the one the request asked for before anything is
    sent again. A refusal (read-only key, validation) allows a retry, e.g. after granting write
    permission. No network call runs inside a transaction.
    """
    async with sessions() as session:
        row = await failed_deal(session, row_id, user_id)
        tc = None if row is None else await owned_connection(session, user_id, row.tc_connection_id)
        if row is None or tc is None:
            return RecreateResult(RecreateOutcome.GONE)
        credentials = vault.open(tc.credentials)
        params, kind, tc_connection_id, tc_id = dict(row.params), row.kind, row.tc_connection_id, row.tc_id
    target = f"{tc_connection_id}:{kind}:{tc_id}"

    def ask() -> Awaitable[dict[str, Any] | None]:
        return _find_created(access, credentials, kind, params, tc_id)

    async def reconciled(action: money_actions.Action) -> RecreateResult:
        if on_unknown is not None:
            await on_unknown()
        action = await money_actions.reconcile(sessions, action, now, ask)
        result = _from_action(action, reconciled=True)
        await _record(sessions, row_id, user_id, tc_connection_id, params, result, now)
        return result

    claim = await money_actions.claim(sessions, user_id=user_id, kind=ACTION, target=target, now=now)
    if not claim.claimed:
        if claim.action.state is ActionState.UNKNOWN:
            return await reconciled(claim.action)
        return _from_action(claim.action, reconciled=False)

    action = claim.action
    await money_actions.mark_sent(sessions, action, now)
    result: RecreateResult
    try:
        async with access.open(credentials) as client:
            sent = await _send(client, kind, params)
    except Unavailable:  # 5xx, timeout, connection lost: 3Commas may have created it all the same
        async with sessions.begin() as session:
            action = await money_actions.settle(session, action, ActionState.UNKNOWN, now, error="no answer")
        return await reconciled(action)
    except PermissionDenied as denied:
        result = RecreateResult(RecreateOutcome.NO_WRITE_PERMISSION, error=str(denied))
    except ThreeCommasError as refused:  # an answer that says no (422, 429, 404): nothing was created
        attributes = "; ".join(f"{k}: {', '.join(v)}" for k, v in refused.attributes.items())
        detail = " — ".join(part for part in (refused.error, refused.message, attributes) if part)
        result = RecreateResult(RecreateOutcome.REFUSED, error=clip_detail(detail))
    else:
        result = RecreateResult(RecreateOutcome.CREATED, sent["ref"], sent["status"])
    async with sessions.begin() as session:
        created = result.outcome is RecreateOutcome.CREATED
        await money_actions.settle(
            session,
            action,
            ActionState.DONE if created else ActionState.FAILED,
            now,
            result={"ref": result.ref, "status": result.status} if created else None,
            error=result.error or "",
        )
    await _record(sessions, row_id, user_id, tc_connection_id, params, result, now)
    return result


async def _record(
    sessions: Sessions,
    row_id: int,
    user_id: int,
    tc_connection_id: int,
    params: Mapping[str, Any],
    result: RecreateResult,
    now: datetime,
) -> None:
    """The failed deal shows what replaced it; the audit log keeps every attempt."""
    async with sessions.begin() as session:
        stored = await session.get(FailedDeal, row_id)
        if stored is not None and result.outcome is RecreateOutcome.CREATED:
            stored.recreated_at, stored.recreated_ref = now, result.ref
        audit.record(
            session,
            user_id,
            "deal_recreate",
            now,
            connection_id=tc_connection_id,
            source=params.get("source_ref"),
            outcome=result.outcome.value,
            ref=result.ref,
            error=result.error,
            reconciled=result.reconciled,
        )
