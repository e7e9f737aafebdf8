"""3Commas on the user's behalf: linked keys, which exchange connection each 3Commas account
trades on, and failed deals kept so a button can recreate them.

Why it is stored and not fetched on demand: a Telegram button carries at most 64 bytes, so it
names a short row id here; the row holds exactly what the confirmation showed, so the request
that goes to 3Commas is the one the user approved even if the original deal changes meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services import audit
from services.connections import new_connection, owned_connection
from services.deal_checks import RecreatePlan
from services.models import Connection, FailedDeal, ThreeCommasAccountLink
from services.threecommas import (
    Account,
    Deal,
    KeyLimiter,
    PermissionDenied,
    SmartTrade,
    SmartTradeParams,
    StopLoss,
    TakeProfitStep,
    ThreeCommasClient,
    ThreeCommasError,
)
from services.vault import Credentials, Vault

THREECOMMAS = "threecommas"


class ThreeCommasAccess:
    """Opens 3Commas clients that share one :class:`KeyLimiter` per key across calls.

    3Commas allows ~100 requests a minute per key and escalates ignored 429s to IP bans that
    would hit every user behind us, so the limiter must outlive a single /orders call. The
    HTTP session does not need to: each operation gets its own, closed when it ends, so
    nothing leaks when the bot stops.
    """

    def __init__(
        self, base_url: str, *, timeout_s: float = 15, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.base_url = base_url
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._limiters: dict[str, KeyLimiter] = {}

    @contextlib.asynccontextmanager
    async def open(
        self, credentials: Credentials, *, max_pages: int = 20
    ) -> AsyncIterator[ThreeCommasClient]:
        limiter = self._limiters.get(credentials.api_key)
        if limiter is None:
            limiter = self._limiters[credentials.api_key] = KeyLimiter(clock=self._monotonic)
        async with aiohttp.ClientSession() as session:
            yield ThreeCommasClient(
                session,
                self.base_url,
                credentials.api_key,
                credentials.secret,
                limiter=limiter,
                timeout_s=self._timeout_s,
                max_pages=max_pages,
            )


# -- linking a 3Commas key and mapping its accounts ----------------------------------------------


def add_threecommas_connection(
    session: AsyncSession, vault: Vault, *, user_id: int, credentials: Credentials, label: str, now: datetime
) -> Connection:
    """A validated 3Commas key as a connection (``kind="threecommas"``), in the caller's transaction."""
    connection = new_connection(
        vault,
        user_id=user_id,
        exchange=THREECOMMAS,
        label=label,
        credentials=credentials,
        now=now,
        kind=THREECOMMAS,
    )
    session.add(connection)
    return connection


def suggest_connection(account: Account, connections: list[Connection]) -> Connection | None:
    """The user's exchange connection on the account's exchange, when exactly one exists.

    Two Binance keys cannot be told apart from 3Commas' side, so then the user picks.
    """
    exchange = account.exchange_id
    matches = [c for c in connections if c.kind == "exchange" and c.exchange == exchange]
    return matches[0] if len(matches) == 1 else None


async def exchange_connections(session: AsyncSession, user_id: int) -> list[Connection]:
    rows = await session.scalars(
        select(Connection)
        .where(Connection.user_id == user_id, Connection.kind == "exchange")
        .order_by(Connection.id)
    )
    return list(rows)


async def save_account_link(
    session: AsyncSession,
    *,
    user_id: int,
    tc_connection_id: int,
    account: Account,
    exchange_connection_id: int | None,
    now: datetime,
) -> ThreeCommasAccountLink:
    """Create or update the mapping of one 3Commas account (None = the user skipped it)."""
    link = await session.scalar(
        select(ThreeCommasAccountLink).where(
            ThreeCommasAccountLink.tc_connection_id == tc_connection_id,
            ThreeCommasAccountLink.account_id == account.id,
        )
    )
    if link is None:
        link = ThreeCommasAccountLink(
            user_id=user_id, tc_connection_id=tc_connection_id, account_id=account.id, updated_at=now
        )
        session.add(link)
    link.account_name = account.name[:128]
    link.market_code = (account.market_code or "")[:48]
    link.exchange_connection_id = exchange_connection_id
    link.updated_at = now
    return link


@dataclass(frozen=True)
class LinkedAccount:
    """A 3Commas account mapped onto an exchange connection, with the key to read it."""

    tc_connection_id: int
    account_id: int
    credentials: Credentials


async def accounts_for_connection(
    session: AsyncSession, vault: Vault, user_id: int, exchange_connection_id: int
) -> list[LinkedAccount]:
    """3Commas accounts the user said trade on this exchange connection (their own rows only)."""
    rows = await session.execute(
        select(ThreeCommasAccountLink, Connection)
        .join(Connection, Connection.id == ThreeCommasAccountLink.tc_connection_id)
        .where(
            ThreeCommasAccountLink.exchange_connection_id == exchange_connection_id,
            ThreeCommasAccountLink.user_id == user_id,
            Connection.user_id == user_id,
        )
        .order_by(ThreeCommasAccountLink.id)
    )
    return [
        LinkedAccount(link.tc_connection_id, link.account_id, vault.open(tc.credentials)) for link, tc in rows
    ]


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

    ``plan`` is :func:`services.deal_checks.recreate_params`' result or its ``to_dict()`` (the
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
        error=(error or "")[:300],
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
        result = RecreateResult(RecreateOutcome.REFUSED, error=detail[:300])

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
