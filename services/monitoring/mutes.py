"""Mutes: silence one connection or all of a user's alerts for a while.

A mute only stops messages. The poller keeps stepping incidents and, when the mute ends,
compares the state with the one at mute time and sends one summary if it changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import Connection, User

MAX_MUTE = timedelta(days=30)


async def set_mute(
    sessions: Sessions, user_id: int, connection_id: int | None, duration: timedelta, now: datetime
) -> bool:
    """:func:`mute` in a transaction of its own (the /mute buttons)."""
    async with sessions.begin() as session:
        return await mute(session, user_id, connection_id, duration, now)


async def mute(
    session: AsyncSession, user_id: int, connection_id: int | None, duration: timedelta, now: datetime
) -> bool:
    """Mute until ``now + duration`` (zero unmutes). False if the connection is not the user's."""
    until = None if duration <= timedelta(0) else now + min(duration, MAX_MUTE)
    if connection_id is None:
        await session.execute(update(User).where(User.id == user_id).values(muted_until=until))
        if until is None:
            await session.execute(
                update(Connection)
                .where(Connection.user_id == user_id)
                .values(muted_until=None, next_poll_at=now)
            )
        return True
    connection = await owned_connection(session, user_id, connection_id)
    if connection is None:
        return False
    connection.muted_until = until
    if until is None:
        connection.next_poll_at = now  # the summary of what changed comes with the next check
    return True


async def muted_everything_until(sessions: Sessions, user_id: int, now: datetime) -> datetime | None:
    """When the user's mute of all alerts ends, if one is on now (read fresh: the page that shows
    it may be drawn right after the tap that changed it)."""
    async with sessions() as session:
        until = await session.scalar(select(User.muted_until).where(User.id == user_id))
    return until if until is not None and until > now else None
