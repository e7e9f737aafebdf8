"""The application's shared objects, handed to every handler as ``app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.settings import Settings
from services.core.clock import Clock
from services.core.vault import Vault

if TYPE_CHECKING:
    from services.exchanges.hub import ExchangeHub
    from services.threecommas.client import ThreeCommasAccess


@dataclass
class AppContext:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    i18n: I18n
    hub: ExchangeHub | None = None
    # 3Commas clients share one limiter per key for the app's lifetime (about 100 requests/min).
    threecommas: ThreeCommasAccess | None = None
