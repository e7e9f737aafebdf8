"""Users: who talks to keysentry, in which language, and whether they blocked the bot."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.models import ChatNotice, Connection, User

MIN_POLL_INTERVAL_S = 30
MAX_POLL_INTERVAL_S = 3600


async def get_or_create_user(session: AsyncSession, user_id: int, language: str, now: datetime) -> User:
    user = await session.get(User, user_id)
    if user is None:
        user = User(id=user_id, language=language, blocked=False, created_at=now)
        session.add(user)
        await session.flush()
    return user


async def set_language(session: AsyncSession, user_id: int, language: str) -> None:
    await session.execute(update(User).where(User.id == user_id).values(language=language))


async def mark_blocked(session: AsyncSession, user_id: int, blocked: bool) -> None:
    """A user who blocked the bot is not polled (nobody would read the alerts) until /start again."""
    await session.execute(update(User).where(User.id == user_id).values(blocked=blocked))


async def set_poll_interval(session: AsyncSession, user_id: int, seconds: int | None) -> int | None:
    """Clamp a user's requested interval into sane bounds; None returns to the default."""
    value = None if seconds is None else max(MIN_POLL_INTERVAL_S, min(MAX_POLL_INTERVAL_S, seconds))
    await session.execute(update(User).where(User.id == user_id).values(poll_interval_seconds=value))
    return value


async def claim_chat_notice(session: AsyncSession, chat_id: int, now: datetime) -> bool:
    """True the first time a group chat is seen, so the private-only notice is sent once."""
    if await session.get(ChatNotice, chat_id) is not None:
        return False
    session.add(ChatNotice(chat_id=chat_id, created_at=now))
    await session.flush()
    return True


async def user_connections(session: AsyncSession, user_id: int) -> list[Connection]:
    result = await session.scalars(
        select(Connection).where(Connection.user_id == user_id).order_by(Connection.id)
    )
    return list(result)
