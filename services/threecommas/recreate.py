"""Recreating a failed deal or SmartTrade: the plan the user approves, stored, then sent once.

A Telegram button carries at most 64 bytes, so it names a short row id; the row holds exactly
what the confirmation showed, so the request that goes to 3Commas is the one the user approved
even if the original deal changes meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.vault import Vault
from services.core.verdicts import DETAIL_MAX
from services.storage import audit
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import FailedDeal
from services.threecommas.client import ThreeCommasAccess, ThreeCommasClient, start_new_deal_body
from services.threecommas.entities import (
    Deal,
    SmartTrade,
    SmartTradeParams,
    StopLoss,
    TakeProfitStep,
    decimal_text,
)
from services.threecommas.errors import PermissionDenied, ThreeCommasError

# -- recreate --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecreatePlan:
    """Exactly the request :func:`recreate` will send, for the user to confirm first.

    ``body`` is produced by the same code the client uses, so what the UI shows is what goes
    out. ``warnings`` lists how the result will differ from what failed.
    """

    kind: str  # "smart_trade" or "dca_deal"
    source_ref: str
    method: str
    path: str
    body: dict[str, Any]
    summary: str
    warnings: tuple[str, ...] = ()
    smart_trade: SmartTradeParams | None = None
    bot_id: int | None = None
    pair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source_ref": self.source_ref,
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "summary": self.summary,
            "warnings": list(self.warnings),
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
    settings = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("take profit %", decimal_text(deal.take_profit)),
            ("stop loss %", decimal_text(deal.stop_loss_percentage)),
            ("base order", decimal_text(deal.base_order_volume)),
        )
        if value is not None
    )
    warnings = [
        "The new deal uses the bot's current settings"
        + (f" (the old deal had {settings})." if settings else ".")
    ]
    held = (deal.bought_amount or Decimal(0)) - (deal.sold_amount or Decimal(0))
    if held > 0:  # failing or cancelling a deal leaves what it bought on the account
        base = deal.pair.partition("_")[2]
        warnings.append(
            f"The old deal had bought {held} {base}; the new deal buys again, it does not sell those."
        )
    return RecreatePlan(
        kind="dca_deal",
        source_ref=f"deal:{deal.id}",
        method="POST",
        path=f"/ver1/bots/{deal.bot_id}/start_new_deal",
        body=start_new_deal_body(deal.pair),
        summary=f"Start a new deal on bot {deal.bot_name or deal.bot_id} for {deal.symbol or deal.pair}",
        warnings=tuple(warnings),
        bot_id=deal.bot_id,
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
    warnings: list[str] = []
    if entered > 0 and held <= 0:
        raise ValueError(f"SmartTrade {trade.id} was already closed; nothing is left to protect")
    if entered > 0:
        entry_price = trade.average_enter_price or trade.price
        params = SmartTradeParams(
            account_id=trade.account_id,
            pair=trade.pair,
            side=trade.side,
            units=held,
            order_type="market",
            price=entry_price,
            take_profit=trade.take_profit,
            stop_loss=trade.stop_loss,
            skip_enter_step=True,
            leverage_type=trade.leverage_type,
            leverage_value=trade.leverage_value,
        )
        warnings.append(
            f"The position was already entered ({held} at {entry_price}); the new SmartTrade only places "
            "the take profit and stop loss for it, it does not buy again."
        )
        summary = f"Protect {held} {trade.symbol or trade.pair} with the original take profit and stop loss"
    else:
        params = SmartTradeParams(
            account_id=trade.account_id,
            pair=trade.pair,
            side=trade.side,
            units=trade.units,
            order_type=trade.order_type,
            price=trade.price,
            take_profit=trade.take_profit,
            stop_loss=trade.stop_loss,
            skip_enter_step=trade.skip_enter_step,
            instant=trade.instant,
            leverage_type=trade.leverage_type,
            leverage_value=trade.leverage_value,
        )
        at = f" at {trade.price}" if trade.order_type == "limit" else " at market"
        summary = f"{trade.side.capitalize()} {trade.units} {trade.symbol or trade.pair}{at} again"
        if trade.order_type == "market":
            warnings.append(f"A market entry fills at the current price, not at the original {trade.price}.")
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
        error=(error or "")[:DETAIL_MAX],
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
    GONE = "not_found"
    NO_WRITE_PERMISSION = "no_write_permission"
    REFUSED = "refused"


@dataclass(frozen=True)
class RecreateResult:
    outcome: RecreateOutcome
    ref: str | None = None
    status: str | None = None
    error: str | None = None


async def load_failed_deal(sessions: Sessions, row_id: int, user_id: int) -> FailedDeal | None:
    """:func:`failed_deal` in a read of its own (the Recreate button)."""
    async with sessions() as session:
        return await failed_deal(session, row_id, user_id)


async def failed_deal(session: AsyncSession, row_id: int, user_id: int) -> FailedDeal | None:
    """The stored failed deal when it is this user's; None for another user's or a missing row."""
    row = await session.get(FailedDeal, row_id)
    return row if row is not None and row.user_id == user_id else None


_PENDING = "pending"


async def recreate_failed_deal(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    access: ThreeCommasAccess,
    *,
    row_id: int,
    user_id: int,
    now: datetime,
) -> RecreateResult:
    """Send the stored plan to 3Commas at most once; a second tap reports the first result.

    The row is claimed with a conditional UPDATE before the call, so two quick taps (or two
    bot processes) cannot open two trades; a failed call releases the claim so the user can
    retry, e.g. after granting write permission. The network call runs outside any
    transaction so a slow 3Commas never holds a database lock.
    """
    async with sessions.begin() as session:
        row = await failed_deal(session, row_id, user_id)
        if row is None or await owned_connection(session, user_id, row.tc_connection_id) is None:
            return RecreateResult(RecreateOutcome.GONE)
        claimed = await session.execute(
            update(FailedDeal)
            .where(FailedDeal.id == row_id, FailedDeal.recreated_at.is_(None))
            .values(recreated_at=now, recreated_ref=_PENDING)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            await session.refresh(row)
            return RecreateResult(RecreateOutcome.ALREADY, ref=row.recreated_ref)
        tc = await owned_connection(session, user_id, row.tc_connection_id)
        assert tc is not None
        credentials = vault.open(tc.credentials)
        params, kind, tc_connection_id = dict(row.params), row.kind, row.tc_connection_id

    result: RecreateResult
    try:
        async with access.open(credentials) as client:
            created: Deal | SmartTrade
            if kind == "smart_trade":
                created = await client.create_smart_trade(smart_trade_params(params["body"]))
                result = RecreateResult(RecreateOutcome.CREATED, f"smart_trade:{created.id}", created.status)
            else:
                bot_id, pair = dca_target(params)
                created = await client.start_new_deal(bot_id, pair)
                result = RecreateResult(RecreateOutcome.CREATED, f"deal:{created.id}", created.status)
    except PermissionDenied as denied:
        result = RecreateResult(RecreateOutcome.NO_WRITE_PERMISSION, error=str(denied))
    except ThreeCommasError as refused:
        attributes = "; ".join(f"{k}: {', '.join(v)}" for k, v in refused.attributes.items())
        detail = " — ".join(part for part in (refused.error, refused.message, attributes) if part)
        result = RecreateResult(RecreateOutcome.REFUSED, error=detail[:DETAIL_MAX])

    async with sessions.begin() as session:
        stored = await session.get(FailedDeal, row_id)
        if stored is not None:
            created_now = result.outcome is RecreateOutcome.CREATED
            stored.recreated_at = now if created_now else None
            stored.recreated_ref = result.ref if created_now else None
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
        )
    return result
