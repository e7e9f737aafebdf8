"""Actions that move money run once: one row per target, a state, reconciliation before a retry.

Cancelling an order, recreating a deal or updating a key in 3Commas changes someone's money, and the
request can be lost in either direction: a timeout, a 5xx or a dropped connection *after* sending
says nothing about whether the far side carried it out. So every such action is one row per target
(``kind`` + ``target``, unique), moving through::

    requested ──► sent ──► done
        │           ├────► failed   (the far side refused, or certainly did not act: a retry may go)
        └─► failed  └────► unknown  (no answer: ask the far side before anything is sent again)

* :func:`claim` makes the caller the only one attempting the action: a second tap, another listing
  of the same order or another process sees it in flight and reports its progress instead.
* :func:`mark_sent` is written *before* the request leaves, so a crash mid-call is never mistaken for
  "nothing sent": a ``sent`` row older than :data:`IN_FLIGHT_LEASE` counts as ``unknown``.
* :func:`reconcile` asks the far side (recent SmartTrades, deals, the order's state) what became of an
  ``unknown`` action and records what is true; only a certain "it did not happen" allows a retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.db import Sessions
from services.storage.models import MoneyAction

IN_FLIGHT_LEASE = timedelta(minutes=2)
"""How long a claim holds without news; the longest request (two timeouts) fits well inside it."""


class ActionState(StrEnum):
    REQUESTED = "requested"
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Unverifiable(Exception):
    """Raised by a reconcile function when the far side could not be asked (it is still down)."""


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    kind: str
    target: str
    state: ActionState
    attempts: int
    result: dict[str, Any]
    error: str
    sent_at: datetime | None

    @property
    def in_flight(self) -> bool:
        return self.state in (ActionState.REQUESTED, ActionState.SENT)


@dataclass(frozen=True, slots=True)
class Claim:
    action: Action
    claimed: bool
    """True: this caller owns the attempt. False: ``action`` says what is happening or happened."""


def _view(row: MoneyAction) -> Action:
    return Action(
        row.id,
        row.kind,
        row.target,
        ActionState(row.state),
        row.attempts,
        dict(row.result),
        row.error,
        row.sent_at,
    )


async def _row(session: AsyncSession, kind: str, target: str) -> MoneyAction | None:
    return await session.scalar(
        select(MoneyAction).where(MoneyAction.kind == kind, MoneyAction.target == target)
    )


async def claim(sessions: Sessions, *, user_id: int, kind: str, target: str, now: datetime) -> Claim:
    """Become the one attempt of this action, or learn why not (in flight, done, unknown).

    A new target gets a row; a ``failed`` one (or a ``requested`` one whose claimer vanished before
    sending) is taken over with a conditional UPDATE, so two processes never both win. A ``sent``
    row past its lease is turned into ``unknown``: its request may have been carried out.
    """
    stale = now - IN_FLIGHT_LEASE
    try:
        async with sessions.begin() as session:
            session.add(
                MoneyAction(
                    user_id=user_id,
                    kind=kind,
                    target=target,
                    state=ActionState.REQUESTED.value,
                    attempts=1,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        pass  # the target has a row already: take it over below, or report it
    else:
        async with sessions() as session:
            row = await _row(session, kind, target)
            assert row is not None
            return Claim(_view(row), claimed=True)

    async with sessions.begin() as session:
        await session.execute(
            update(MoneyAction)
            .where(
                MoneyAction.kind == kind,
                MoneyAction.target == target,
                MoneyAction.state == ActionState.SENT.value,
                MoneyAction.updated_at < stale,
            )
            .values(state=ActionState.UNKNOWN.value, updated_at=now)
        )
        taken = await session.execute(
            update(MoneyAction)
            .where(
                MoneyAction.kind == kind,
                MoneyAction.target == target,
                or_(
                    MoneyAction.state == ActionState.FAILED.value,
                    (MoneyAction.state == ActionState.REQUESTED.value) & (MoneyAction.updated_at < stale),
                ),
            )
            .values(
                state=ActionState.REQUESTED.value,
                attempts=MoneyAction.attempts + 1,
                error="",
                result={},
                sent_at=None,
                updated_at=now,
            )
        )
        row = await _row(session, kind, target)
        assert row is not None
        await session.refresh(row)
        return Claim(_view(row), claimed=getattr(taken, "rowcount", 0) == 1)


async def mark_sent(sessions: Sessions, action: Action, now: datetime) -> None:
    """Written before the request leaves: from here on, a lost answer means "unknown"."""
    async with sessions.begin() as session:
        await session.execute(
            update(MoneyAction)
            .where(MoneyAction.id == action.id)
            .values(state=ActionState.SENT.value, sent_at=now, updated_at=now)
        )


async def settle(
    session: AsyncSession,
    action: Action,
    state: ActionState,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: str = "",
) -> Action:
    """Record how the attempt ended, in the caller's transaction (next to its audit entry)."""
    await session.execute(
        update(MoneyAction)
        .where(MoneyAction.id == action.id)
        .values(state=state.value, result=result or {}, error=error[:300], updated_at=now)
    )
    return replace(action, state=state, result=result or {}, error=error[:300])


async def reconcile(
    sessions: Sessions,
    action: Action,
    now: datetime,
    ask: Callable[[], Awaitable[dict[str, Any] | None]],
) -> Action:
    """What became of an unanswered request, as the far side tells it now.

    ``ask`` returns what it found (the created SmartTrade, the cancelled order) → ``done``; None when
    it is certain nothing happened → ``failed``, so a retry may be sent; raises :class:`Unverifiable`
    when it cannot tell yet → the action stays ``unknown`` and nothing is sent.
    """
    try:
        found = await ask()
    except Unverifiable as why:
        async with sessions.begin() as session:
            return await settle(session, action, ActionState.UNKNOWN, now, error=str(why))
    async with sessions.begin() as session:
        if found is None:
            return await settle(session, action, ActionState.FAILED, now, error="not carried out")
        return await settle(session, action, ActionState.DONE, now, result=found)
