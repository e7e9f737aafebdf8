"""Audit log of actions keysentry took on a user's behalf."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.models import AuditEntry


def record(
    session: AsyncSession,
    user_id: int,
    action: str,
    now: datetime,
    *,
    connection_id: int | None = None,
    **detail: Any,
) -> None:
    """Add an entry to the caller's transaction, so the action and its record commit together."""
    session.add(
        AuditEntry(user_id=user_id, connection_id=connection_id, action=action, detail=detail, created_at=now)
    )


async def recent(session: AsyncSession, user_id: int, limit: int = 20) -> list[AuditEntry]:
    """The user's latest audit entries, newest first (/history merges them with delivered alerts)."""
    rows = await session.scalars(
        select(AuditEntry)
        .where(AuditEntry.user_id == user_id)
        .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
        .limit(limit)
    )
    return list(rows)
