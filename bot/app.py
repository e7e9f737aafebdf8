"""Wiring: settings → database, vault, exchange hub → aiogram Dispatcher and Bot."""

from __future__ import annotations

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import LinkPreviewOptions

from bot.context import AppContext
from bot.fsm_storage import DatabaseStorage
from bot.i18n import build_i18n
from bot.middlewares import GateMiddleware
from bot.settings import Settings
from handlers import errors, language, link, mute, orders, privacy, start, status, threecommas
from handlers import help as help_handler
from services.core.clock import Clock, SystemClock
from services.core.transport import Transport
from services.core.vault import Vault
from services.exchanges.budget import BudgetRegistry
from services.exchanges.hub import ExchangeHub
from services.storage.db import create_engine, run_migrations, session_factory
from services.threecommas.client import ThreeCommasAccess


async def build_context(
    settings: Settings,
    *,
    clock: Clock | None = None,
    budgets: BudgetRegistry | None = None,
    transport: Transport | None = None,
) -> AppContext:
    """Open the database (migrating it), the vault, the translations and the exchange hub.

    ``transport`` (tests) replaces DNS and TLS trust for exchanges and 3Commas alike.
    """
    engine = create_engine(settings.database_url)
    await run_migrations(engine)
    clock = clock or SystemClock()
    return AppContext(
        settings=settings,
        clock=clock,
        engine=engine,
        sessions=session_factory(engine),
        vault=Vault(settings.vault_key),
        i18n=build_i18n(),
        hub=ExchangeHub(
            url_overrides=settings.exchange_url_overrides,
            clock=clock,
            budgets=budgets or BudgetRegistry(overrides=settings.exchange_weight_per_minute),
            transport=transport,
        ),
        # The limiter counts on the app clock, so tests that move time move its minute too.
        threecommas=ThreeCommasAccess(
            settings.threecommas_api_url, monotonic=lambda: clock.now().timestamp(), transport=transport
        ),
    )


async def close_context(app: AppContext) -> None:
    if app.hub is not None:
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


def build_dispatcher(app: AppContext) -> Dispatcher:
    dp = Dispatcher(storage=DatabaseStorage(app.sessions, app.clock))
    dp.update.outer_middleware(GateMiddleware(app))
    attach(
        dp,
        errors.router,
        start.router,
        help_handler.router,
        language.router,
        privacy.router,
        mute.router,
        orders.router,
        threecommas.router,
        link.router,
        status.router,
    )
    return dp


def attach(dp: Dispatcher, *routers: Router) -> None:
    """Include module-level routers, detaching them from a Dispatcher built earlier in this process.

    aiogram lets a router have one parent; tests and the sandbox build a fresh Dispatcher per
    run while the handler modules (and their routers) are imported once.
    """
    for router in routers:
        router._parent_router = None
        dp.include_router(router)
