"""aiogram FSM storage in our database.

Wizard state lives in the same database as everything else, so a conversation continues
whichever process receives the next update. Wizards store only sealed (vault-encrypted)
fragments of credentials here, never plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder, StateType, StorageKey
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.clock import Clock
from services.storage.models import ConversationState

# A wizard left alone for two days is abandoned; its sealed fragments go with it.
ABANDONED_AFTER = timedelta(days=2)


async def prune_abandoned(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """Delete conversations untouched for :data:`ABANDONED_AFTER` (daily job)."""
    async with sessions.begin() as session:
        await session.execute(
            delete(ConversationState).where(ConversationState.updated_at < now - ABANDONED_AFTER)
        )


class DatabaseStorage(BaseStorage):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._keys = DefaultKeyBuilder(prefix="fsm")

    async def _row(self, session: AsyncSession, key: StorageKey) -> ConversationState:
        storage_key = self._keys.build(key)
        row = await session.get(ConversationState, storage_key)
        if row is None:
            row = ConversationState(key=storage_key, state=None, data={}, updated_at=self._clock.now())
            session.add(row)
        return row

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        async with self._sessions.begin() as session:
            row = await self._row(session, key)
            row.state = state.state if isinstance(state, State) else state
            row.updated_at = self._clock.now()

    async def get_state(self, key: StorageKey) -> str | None:
        async with self._sessions() as session:
            row = await session.get(ConversationState, self._keys.build(key))
            return None if row is None else row.state

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        async with self._sessions.begin() as session:
            row = await self._row(session, key)
            row.data = dict(data)
            row.updated_at = self._clock.now()

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await session.get(ConversationState, self._keys.build(key))
            return {} if row is None else dict(row.data)

    async def close(self) -> None:
        """The engine is owned by the application."""
