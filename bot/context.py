"""The process's long-lived objects, built once by :func:`bot.app.build_context`.

Handlers never see this bag: the Dispatcher hands each service to them by name as workflow data
(:meth:`AppContext.workflow_data`), so a handler's signature says exactly what it uses. The worker,
the sender and the web side take the context itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import Settings
from services.core.clock import Clock
from services.core.vault import Vault
from services.exchanges.hub import ExchangeHub
from services.monitoring.refresh import KeyStore, Refreshes
from services.orders.listing import Deps as OrderDeps
from services.storage.db import Sessions
from services.threecommas.client import ThreeCommasAccess


@dataclass
class AppContext:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessions: Sessions
    vault: Vault
    i18n: I18n
    hub: ExchangeHub
    # 3Commas clients share one limiter per key for the app's lifetime (about 100 requests/min).
    threecommas: ThreeCommasAccess
    refreshes: Refreshes
    key_store: KeyStore
    order_deps: OrderDeps

    def workflow_data(self) -> dict[str, Any]:
        """What handlers may ask for, by parameter name (aiogram injects workflow data by name)."""
        return {
            "settings": self.settings,
            "clock": self.clock,
            "sessions": self.sessions,
            "vault": self.vault,
            "i18n": self.i18n,
            "hub": self.hub,
            "threecommas": self.threecommas,
            "refreshes": self.refreshes,
            "key_store": self.key_store,
            "order_deps": self.order_deps,
        }
