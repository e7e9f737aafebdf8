"""What keysentry stores about a user: export it (without secrets) or forget it entirely."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.db import Sessions
from services.storage.models import (
    AuditEntry,
    Connection,
    ConversationState,
    Incident,
    MoneyAction,
    OutboxMessage,
    User,
)

_CONNECTION_FIELDS = (
    "id", "kind", "exchange", "label", "key_hint", "state", "verdict", "verdict_detail",
    "last_check_at", "last_ok_at", "key_info", "balances", "balances_at", "muted_until", "created_at",
)  # fmt: skip


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def export_user_data(sessions: Sessions, user_id: int) -> dict[str, Any]:
    """:func:`export_user` in a read of its own (/export)."""
    async with sessions() as session:
        return await export_user(session, user_id)


async def export_user(session: AsyncSession, user_id: int) -> dict[str, Any]:
    """Everything stored about the user except credentials (only a short key hint is shown)."""
    user = await session.get(User, user_id)
    connections = list(await session.scalars(select(Connection).where(Connection.user_id == user_id)))
    ids = [c.id for c in connections]
    incidents = (
        list(await session.scalars(select(Incident).where(Incident.connection_id.in_(ids)))) if ids else []
    )
    audit = list(await session.scalars(select(AuditEntry).where(AuditEntry.user_id == user_id)))
    return {
        "user": None
        if user is None
        else {
            "telegram_id": user.id,
            "language": user.language,
            "poll_interval_seconds": user.poll_interval_seconds,
            "muted_until": _plain(user.muted_until),
            "created_at": _plain(user.created_at),
        },
        "connections": [{f: _plain(getattr(c, f)) for f in _CONNECTION_FIELDS} for c in connections],
        "incidents": [
            {
                "connection_id": i.connection_id,
                "check": i.check_kind,
                "state": i.state,
                "verdict": i.verdict,
                "since": _plain(i.pending_since),
            }
            for i in incidents
        ],
        "audit_log": [
            {
                "action": a.action,
                "connection_id": a.connection_id,
                "detail": a.detail,
                "at": _plain(a.created_at),
            }
            for a in audit
        ],
    }


async def forget_user(sessions: Sessions, user_id: int) -> int:
    """Delete the user and everything of theirs; returns how many connections went with them."""
    async with sessions.begin() as session:
        return await _forget_user(session, user_id)


async def _forget_user(session: AsyncSession, user_id: int) -> int:
    ids = list(await session.scalars(select(Connection.id).where(Connection.user_id == user_id)))
    if ids:
        await session.execute(delete(Incident).where(Incident.connection_id.in_(ids)))
        await session.execute(delete(Connection).where(Connection.id.in_(ids)))
    await session.execute(delete(OutboxMessage).where(OutboxMessage.user_id == user_id))
    await session.execute(delete(AuditEntry).where(AuditEntry.user_id == user_id))
    await session.execute(delete(MoneyAction).where(MoneyAction.user_id == user_id))
    await session.execute(
        delete(ConversationState).where(ConversationState.key.like(f"fsm:{user_id}:{user_id}%"))
    )
    await session.execute(delete(User).where(User.id == user_id))
    return len(ids)
