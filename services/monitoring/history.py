"""/history: what keysentry did for a user and what it told them, newest first, a page at a time.

Two sources are merged by time: the audit log (links, key updates, removals, cancels, recreates,
3Commas key updates; kept as long as the user) and the alerts and recoveries delivered from the
outbox (kept :data:`~services.monitoring.outbox.SENT_RETENTION`). Every entry names its connection
as the user knows it (:class:`~services.monitoring.events.Target`): the row as it is now, or, for a
removed one, what the audit entry recorded about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.monitoring.events import Alert, Recovery, Target, from_payload
from services.storage import audit
from services.storage.db import Sessions
from services.storage.models import AuditEntry, Connection, OutboxMessage

PAGE_SIZE = 8
TOLD = (Alert, Recovery)
"""The messages /history repeats: a connection broke, a connection works again."""


@dataclass(frozen=True)
class Done:
    """Something keysentry did: an audit action (``connection_linked``, ``order_cancel`` …)."""

    action: str
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    target: Target | None  # None: the entry names no connection
    what: Done | Alert | Recovery


@dataclass(frozen=True)
class HistoryPage:
    entries: list[HistoryEntry]
    page: int
    more: bool  # a later page exists


async def history_page(sessions: Sessions, user_id: int, page: int, size: int = PAGE_SIZE) -> HistoryPage:
    """Page ``page`` (0 = newest) of the user's history; a page past the end is the last one."""
    page = max(page, 0)
    async with sessions() as session:
        wanted = (page + 1) * size + 1
        entries = sorted(
            [*await _done(session, user_id, wanted), *await _told(session, user_id, wanted)],
            key=lambda e: e.at,
            reverse=True,
        )
    last = max(0, (len(entries) - 1) // size)
    page = min(page, last)
    return HistoryPage(entries[page * size : (page + 1) * size], page, len(entries) > (page + 1) * size)


async def _done(session: AsyncSession, user_id: int, limit: int) -> list[HistoryEntry]:
    rows = await audit.recent(session, user_id, limit)
    ids = {r.connection_id for r in rows if r.connection_id}
    known = {
        c.id: Target(c.id, c.exchange, c.label, c.key_hint)
        for c in (await session.scalars(select(Connection).where(Connection.id.in_(ids))) if ids else [])
    }
    return [
        HistoryEntry(row.created_at, _named(row, known), Done(row.action, dict(row.detail or {})))
        for row in rows
    ]


def _named(row: AuditEntry, known: Mapping[int, Target]) -> Target | None:
    if not row.connection_id:
        return None
    detail = row.detail or {}
    gone = Target(row.connection_id, str(detail.get("exchange") or ""), "", str(detail.get("key_hint") or ""))
    return known.get(row.connection_id, gone)


async def _told(session: AsyncSession, user_id: int, limit: int) -> list[HistoryEntry]:
    """Delivered alerts and recoveries of connections (not of a 3Commas deal or account behind one);
    a row of any other kind or shape is left out, not fatal."""
    rows = await session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.user_id == user_id, OutboxMessage.sent_at.is_not(None))
        .order_by(OutboxMessage.event_at.desc(), OutboxMessage.id.desc())
        .limit(limit * 4)  # reminders, expiry notices … are skipped below
    )
    entries: list[HistoryEntry] = []
    for row in rows:
        try:
            notice = from_payload(row.payload or {})
        except (KeyError, ValueError, TypeError):
            continue
        if isinstance(notice.event, TOLD) and notice.check is None:
            entries.append(HistoryEntry(row.event_at, notice.target, notice.event))
    return entries[:limit]
