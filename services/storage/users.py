"""Users: who talks to keysentry, in which language, and whether they blocked the bot."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.db import Sessions
from services.storage.models import ChatNotice, Connection, User


async def get_or_create_user(session: AsyncSession, user_id: int, language: str, now: datetime) -> User:
    user = await session.get(User, user_id)
    if user is None:
        user = User(id=user_id, language=language, blocked=False, created_at=now)
        session.add(user)
        await session.flush()
    return user


async def set_language(session: AsyncSession, user_id: int, language: str) -> None:
    await session.execute(update(User).where(User.id == user_id).values(language=language))


async def save_language(sessions: Sessions, user_id: int, language: str) -> None:
    """The language the user picked, in its own transaction."""
    async with sessions.begin() as session:
        await set_language(session, user_id, language)


async def mark_blocked(session: AsyncSession, user_id: int, blocked: bool) -> None:
    """A user who blocked the bot is not polled (nobody would read the alerts) until /start again."""
    await session.execute(update(User).where(User.id == user_id).values(blocked=blocked))


async def unblock(sessions: Sessions, user_id: int) -> None:
    """The user is back (/start): poll and alert them again."""
    async with sessions.begin() as session:
        await mark_blocked(session, user_id, False)


async def claim_chat_notice(session: AsyncSession, chat_id: int, now: datetime) -> bool:
    """True the first time a group chat is seen, so the private-only notice is sent once."""
    if await session.get(ChatNotice, chat_id) is not None:
        return False
    session.add(ChatNotice(chat_id=chat_id, created_at=now))
    await session.flush()
    return True


async def user_connections(sessions: Sessions, user_id: int) -> list[Connection]:
    """Every connection of the user, oldest first (the order /status numbers them in)."""
    async with sessions() as session:
        result = await session.scalars(
            select(Connection).where(Connection.user_id == user_id).order_by(Connection.id)
        )
        return list(result)
