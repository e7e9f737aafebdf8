"""Key-expiry reminders: 7 days and 1 day before a key expires or loses a permission by policy."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.exchanges.probes import KeyInfo, key_warnings
from services.monitoring import outbox
from services.monitoring.events import ExpiryReminder, Notice, Target, to_payload
from services.storage.button_tokens import connection_token
from services.storage.models import Connection, User

# Nearest lead first: inside one day the 1-day reminder is due, not a late 7-day one.
REMIND_BEFORE = (timedelta(days=1), timedelta(days=7))
DATED_WARNINGS = {"expires_soon", "no_ip_restriction"}


async def enqueue_expiry_reminders(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Queue each due reminder once (deduplicated by connection, warning, date and lead time)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    Connection.id,
                    Connection.user_id,
                    Connection.exchange,
                    Connection.label,
                    Connection.key_hint,
                    Connection.credentials,
                    Connection.key_info,
                )
                .join(User, User.id == Connection.user_id)
                .where(Connection.kind == "exchange", User.blocked.is_(False))
            )
        ).all()
    queued = 0
    for row in rows:
        connection_id, user_id, exchange, label, hint, _sealed, info = row
        if not info:
            continue
        target = Target(connection_id, exchange, label, hint, connection_token(row))
        for warning in key_warnings(exchange, KeyInfo.from_json(info), now):
            if warning.code not in DATED_WARNINGS or warning.due is None or warning.due <= now:
                continue
            for lead in REMIND_BEFORE:
                if warning.due - now > lead:
                    continue
                key = f"expiry:{connection_id}:{warning.code}:{warning.due.date()}:{lead.days}"
                queued += await outbox.enqueue_once(
                    sessions,
                    key,
                    user_id=user_id,
                    kind="expiry",
                    payload=to_payload(Notice(target, ExpiryReminder(warning.code, warning.due))),
                    now=now,
                )
                break
    return queued
