"""Senders in several processes share one Telegram budget through the database.

Telegram limits the bot, not the process: 30 messages a second in all, and a 429 ``retry_after``
is meant for every request of the bot. Each sender therefore keeps a row in ``outbox_senders``
(its heartbeat) and, about once a second, learns from the table how many senders are alive and
whether any of them was told to wait:

* its share of the configured rate is ``rate / live senders`` (a sender that stops deletes its
  row; one that dies stops counting once its heartbeat is ``STALE`` old);
* a 429 answer is written as ``paused_until`` on the sender's row, and every sender pauses until
  the latest such moment.

A new sender is counted by the others within one refresh; it joins quietly (sends nothing for
that second) so the fleet never goes over the configured rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.storage.models import OutboxSender

STALE = timedelta(seconds=10)


@dataclass(frozen=True)
class FleetView:
    live: int
    """Senders alive, this one included (at least 1)."""
    paused_until: datetime | None
    """The latest 429 pause any sender recorded, if still in the future."""


async def heartbeat(sessions: async_sessionmaker[AsyncSession], worker_id: str, now: datetime) -> FleetView:
    """Record that this sender is alive and read the fleet: live senders and any pause in force."""
    async with sessions.begin() as session:
        updated = await session.execute(
            update(OutboxSender).where(OutboxSender.worker_id == worker_id).values(seen_at=now)
        )
        if not updated.rowcount:  # type: ignore[attr-defined]
            session.add(OutboxSender(worker_id=worker_id, seen_at=now))
            await session.flush()
        live, paused = (
            await session.execute(
                select(func.count(), func.max(OutboxSender.paused_until)).where(
                    OutboxSender.seen_at > now - STALE
                )
            )
        ).one()
    return FleetView(max(int(live or 0), 1), paused if paused is not None and paused > now else None)


async def pause(sessions: async_sessionmaker[AsyncSession], worker_id: str, until: datetime) -> None:
    """Telegram said 429 to this sender: every sender waits until ``until``."""
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxSender)
            .where(
                OutboxSender.worker_id == worker_id,
                (OutboxSender.paused_until.is_(None)) | (OutboxSender.paused_until < until),
            )
            .values(paused_until=until)
        )


async def leave(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Graceful stop: the others take over this sender's share at their next refresh."""
    async with sessions.begin() as session:
        await session.execute(delete(OutboxSender).where(OutboxSender.worker_id == worker_id))
