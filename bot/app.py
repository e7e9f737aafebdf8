"""Wiring: settings → database, vault, exchange hub → aiogram Dispatcher and Bot.

This is the one module of ``bot/`` that imports ``handlers/``: it builds the router list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import LinkPreviewOptions
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.context import AppContext
from bot.fsm_storage import DatabaseStorage
from bot.i18n import build_i18n
from bot.middlewares import ButtonCheck, GateMiddleware, InFlight
from bot.operator import VaultAlarm
from bot.settings import Settings
from bot.views.secrets import SecretGuardMiddleware
from handlers import (
    errors,
    fallback,
    language,
    link,
    mute,
    orders,
    privacy,
    repair,
    start,
    status,
    threecommas,
)
from handlers import help as help_handler
from services.core.clock import Clock, SystemClock
from services.core.transport import Transport
from services.core.vault import Vault
from services.exchanges.budget import BudgetRegistry
from services.exchanges.egress import routes_from_settings
from services.exchanges.hub import ExchangeHub
from services.monitoring.refresh import KeyStore, Refreshes
from services.orders.listing import Deps as OrderDeps
from services.storage.db import create_engine, run_migrations, session_factory
from services.threecommas.client import ThreeCommasAccess

log = logging.getLogger(__name__)


def make_context(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock | None = None,
    vault: Vault | None = None,
    budgets: BudgetRegistry | None = None,
    transport: Transport | None = None,
) -> AppContext:
    """Every long-lived service on an open (already migrated) database.

    ``transport`` (tests) replaces DNS and TLS trust for exchanges and 3Commas alike.
    """
    clock = clock or SystemClock()
    sessions = session_factory(engine)
    vault = vault or Vault(settings.vault_key)
    # The limiters count on the app clock, so tests that move time move their windows too.
    hub = ExchangeHub(
        url_overrides=settings.exchange_url_overrides,
        clock=clock,
        budgets=budgets
        or BudgetRegistry(
            overrides=settings.exchange_weight_per_minute, monotonic=clock.monotonic, sleep=clock.sleep
        ),
        transport=transport,
        egress=routes_from_settings(settings.egress_ips, settings.egress_proxies),
    )
    threecommas = ThreeCommasAccess(
        settings.threecommas_api_url, monotonic=clock.monotonic, transport=transport
    )
    return AppContext(
        settings=settings,
        clock=clock,
        engine=engine,
        sessions=sessions,
        vault=vault,
        i18n=build_i18n(),
        hub=hub,
        threecommas=threecommas,
        refreshes=Refreshes(sessions, vault, hub, clock),
        key_store=KeyStore(sessions, vault, hub, clock),
        order_deps=OrderDeps(sessions, vault, hub, clock, threecommas),
    )


async def build_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    budgets: BudgetRegistry | None = None,
    transport: Transport | None = None,
) -> AppContext:
    """Open the database (migrating it), then build every service on it."""
    engine = create_engine(settings.database_url)
    await run_migrations(engine)
    return make_context(settings, engine, clock=clock, budgets=budgets, transport=transport)


async def close_context(app: AppContext) -> None:
    await app.hub.close()
    await app.engine.dispose()


def build_bot(settings: Settings) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return Bot(
        token=settings.bot_token,
        session=session,
        # link_preview_options: aiogram maps the older flag to disable_web_page_preview, which the
        # current Bot API no longer documents.
        default=DefaultBotProperties(
            parse_mode=ParseMode.HTML, link_preview=LinkPreviewOptions(is_disabled=True)
        ),
    )


def feature_routers() -> list[Router]:
    """A fresh router per feature, in the order updates try them.

    Errors first (it only handles errors); status last: its catch-all answers stale buttons of
    its own prefixes after every other router had its chance.
    """
    return [
        errors.build_router(),
        start.build_router(),
        help_handler.build_router(),
        language.build_router(),
        privacy.build_router(),
        mute.build_router(),
        orders.build_router(),
        threecommas.build_router(),
        repair.build_router(),
        link.build_router(),
        status.build_router(),
    ]


def build_dispatcher(app: AppContext, *extra: Router) -> Dispatcher:
    """The Dispatcher with every service as workflow data and the feature routers, then ``extra``
    (the sandbox's commands, a test's router), then the fallback for messages nobody took."""
    in_flight = InFlight()
    dp = Dispatcher(
        storage=DatabaseStorage(app.sessions, app.clock),
        vault_alarm=VaultAlarm(app),
        in_flight=in_flight,
        **app.workflow_data(),
    )
    dp.update.outer_middleware(in_flight)
    dp.update.outer_middleware(
        GateMiddleware(app.sessions, app.clock, app.i18n, app.settings.allowed_user_ids)
    )
    guard = SecretGuardMiddleware()
    dp.message.outer_middleware(guard)
    dp.edited_message.outer_middleware(guard)
    dp.callback_query.middleware(ButtonCheck(app.sessions))
    dp.include_routers(*feature_routers(), *extra, fallback.build_router())
    return dp


async def stop_polling(dp: Dispatcher, polling: asyncio.Task[None], *, grace: float = 10.0) -> None:
    """Stop reading updates, then give the ones being handled ``grace`` seconds to send their
    replies: only after this may the Bot's session and what the handlers call be closed."""
    if not polling.done():
        try:
            await dp.stop_polling()
        except RuntimeError:  # "Polling is not started": the task has not run yet
            polling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await polling
    in_flight: InFlight = dp["in_flight"]
    if not await in_flight.drained(grace):
        log.warning("stopped with updates still being handled after %.0f s", grace)
