"""Process roles: everything in one process, the Telegram side only, or a worker only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from aiogram import Bot, Dispatcher
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError, TelegramServerError
from aiohttp import web

from bot.app import build_bot, build_context, build_dispatcher, close_context, stop_polling
from bot.commands import register_commands
from bot.context import AppContext
from bot.settings import Settings
from bot.web import build_web_app, start_web, webhook_secret
from bot.worker import Worker
from services.core.vault import Vault, VaultError
from services.storage.db import create_engine, is_sqlite, run_migrations, session_factory
from services.storage.sealed import reseal_everything, vault_opens_stored

log = logging.getLogger(__name__)

# Seconds between attempts to reach Telegram at start-up: doubling from 1 up to a minute.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


async def migrate(settings: Settings) -> None:
    """Bring the schema to the newest revision and return (the compose file's one-shot step)."""
    engine = create_engine(settings.database_url)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()


WRONG_VAULT_KEY = (
    "VAULT_KEY does not open the {what} in the database: it is not the key they were sealed with. "
    "Put that key back into VAULT_KEY (newest first, comma-separated, to rotate: python -m bot rotate-vault)"
)


async def rotate_vault(settings: Settings) -> int:
    """Re-seal credentials and wizard state under the newest key; one line and nothing written if one
    blob opens with none of the keys."""
    engine = create_engine(settings.database_url)
    try:
        await run_migrations(engine)
        async with session_factory(engine).begin() as session:
            return await reseal_everything(session, Vault(settings.vault_key))
    except VaultError:
        raise SystemExit(WRONG_VAULT_KEY.format(what="stored secrets")) from None
    finally:
        await engine.dispose()


async def require_vault_opens(app: AppContext) -> None:
    """Refuse to start when the configured keys open nothing stored: every check would fail and
    users would be told their keys are broken."""
    what = await vault_opens_stored(app.sessions, app.vault)
    if what is not None:
        raise SystemExit(WRONG_VAULT_KEY.format(what=what))


def _stop_or_timeout(stop: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    return pause


async def connect_telegram(
    bot: Bot,
    setup: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    pause: Callable[[float], Awaitable[None]] | None = None,
) -> bool:
    """Run ``setup`` (the first calls to Telegram) until Telegram answers, backing off between tries.

    Telegram being unreachable at start-up is an outage, not a configuration error: the worker
    side keeps checking keys and queueing alerts meanwhile, and they go out once it answers.
    Returns False when ``stop`` was set before Telegram answered.
    """
    pause = pause or _stop_or_timeout(stop)
    delay = RETRY_FIRST_S
    while not stop.is_set():
        try:
            await setup()
            return True
        except (TelegramNetworkError, TelegramServerError, ClientDecodeError) as error:
            # One line: the first line of the error (a proxy's 502 page is many).
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.warning(
                "Telegram is unreachable at %s (%s); retrying in %.0f s",
                bot.session.api.base.split("/bot")[0], reason, delay,
            )  # fmt: skip
        await pause(delay)
        delay = min(delay * 2, RETRY_MAX_S)
    return False


async def run_roles(
    settings: Settings, *, role: str = "all", webhook: bool = False, stop: asyncio.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then stop claiming work, release leases, exit 0."""
    if role == "worker" and is_sqlite(settings.database_url):
        raise SystemExit(
            "Separate workers need PostgreSQL (DATABASE_URL=postgresql+asyncpg://...); "
            "on SQLite run everything in one process: python -m bot"
        )
    if webhook and not settings.webhook_url:
        raise SystemExit("WEBHOOK_URL is missing; example: https://bot.example.com/telegram")
    app = await build_context(settings)
    try:
        await require_vault_opens(app)
    except SystemExit:
        await close_context(app)
        raise
    bot = build_bot(settings)
    dp = build_dispatcher(app)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serves = role in {"all", "serve"}
    worker = Worker(app, bot) if role in {"all", "worker"} else None
    polling: asyncio.Task[None] | None = None
    runner: web.AppRunner | None = None
    try:
        runner = await start_web(
            build_web_app(app, bot, dp if serves and webhook else None), settings.web_host, settings.web_port
        )
        if worker is not None:
            worker.start()
        if serves and await connect_telegram(bot, lambda: _telegram_setup(app, bot, dp, webhook), stop):
            log.info("Telegram answered: bot @%s is %s", (await bot.me()).username,
                     "receiving by webhook" if webhook else "polling")  # fmt: skip
            if not webhook:
                polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        await stop.wait()
        log.info("shutting down")
        if polling is not None:
            await stop_polling(dp, polling)
        if worker is not None:
            await worker.stop()
    finally:
        if runner is not None:
            await runner.cleanup()
        await bot.session.close()
        await close_context(app)


async def _telegram_setup(app: AppContext, bot: Bot, dp: Dispatcher, webhook: bool) -> None:
    await bot.me()
    await register_commands(bot, app.i18n)
    if webhook:
        await bot.set_webhook(
            app.settings.webhook_url,
            secret_token=webhook_secret(app),
            allowed_updates=dp.resolve_used_update_types(),
        )
    else:
        await bot.delete_webhook()  # a webhook left from an earlier run would block getUpdates
