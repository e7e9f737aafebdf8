"""Wiring: settings → database, vault, exchange hub → aiogram Dispatcher and Bot.

This is the one module of ``bot/`` that imports ``handlers/``: it builds the router list.
"""

from __future__ import annotations

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
from bot.middlewares import ButtonCheck, GateMiddleware
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
    hub = ExchangeHub(
        url_overrides=settings.exchange_url_overrides,
        clock=clock,
        budgets=budgets or BudgetRegistry(overrides=settings.exchange_weight_per_minute),
        transport=transport,
        egress=routes_from_settings(settings.egress_ips, settings.egress_proxies),
    )
    # The limiter counts on the app clock, so tests that move time move its minute too.
    threecommas = ThreeCommasAccess(
        settings.threecommas_api_url, monotonic=lambda: clock.now().timestamp(), transport=transport
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
    dp = Dispatcher(
        storage=DatabaseStorage(app.sessions, app.clock), vault_alarm=VaultAlarm(app), **app.workflow_data()
    )
    dp.update.outer_middleware(
        GateMiddleware(app.sessions, app.clock, app.i18n, app.settings.allowed_user_ids)
    )
    guard = SecretGuardMiddleware()
    dp.message.outer_middleware(guard)
    dp.edited_message.outer_middleware(guard)
    dp.callback_query.middleware(ButtonCheck(app.sessions))
    dp.include_routers(*feature_routers(), *extra, fallback.build_router())
    return dp
