"""`make run` without BOT_TOKEN: the real bot against a local Telegram and local exchanges.

Everything runs in this process on loopback ports; the terminal is the chat window. The
database is a fresh file per run because the local exchanges forget their keys on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from bot.app import attach, build_bot, build_context, build_dispatcher, close_context
from bot.commands import register_commands
from bot.settings import Settings
from bot.worker import Worker
from sandbox.commands import sandbox_router
from sandbox.exchanges import LOCAL_EXCHANGES
from sandbox.telegram import LocalTelegram
from sandbox.terminal import run_terminal_chat
from sandbox.threecommas import LocalThreeCommas
from services.core.vault import generate_key

SANDBOX_TOKEN = "100000:SANDBOX"
SANDBOX_USER = 1001
BANNER = (
    "keysentry SANDBOX — local Telegram and local exchanges, nothing leaves this machine. "
    "Try /start, /sandbox_key binance, /link, /status, /sandbox_revoke binance; then /sandbox_3c, "
    "/orders, /sandbox_fail. Go live: put BOT_TOKEN and VAULT_KEY in .env."
)


async def run_sandbox(settings: Settings) -> None:
    tg = LocalTelegram(token=SANDBOX_TOKEN)
    telegram_url = await tg.start()
    exchanges = {eid: cls() for eid, cls in LOCAL_EXCHANGES.items()}
    overrides = {eid: await srv.start() for eid, srv in exchanges.items()}
    threecommas = LocalThreeCommas()
    threecommas_url = await threecommas.start()
    workdir = Path(tempfile.mkdtemp(prefix="keysentry-sandbox-"))
    config = settings.model_copy(
        update={
            "bot_token": SANDBOX_TOKEN,
            "telegram_api_url": telegram_url,
            "database_url": f"sqlite+aiosqlite:///{workdir / 'sandbox.db'}",
            "vault_key": [generate_key()],
            "exchange_url_overrides": overrides,
            "threecommas_api_url": threecommas_url,
            "poll_interval_seconds": 10,
            "allowed_user_ids": frozenset(),
        }
    )
    app = await build_context(config)
    bot = build_bot(config)
    dp = build_dispatcher(app)
    attach(dp, sandbox_router(exchanges, threecommas))
    await register_commands(bot, app.i18n)
    worker = Worker(app, bot)
    worker.start()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
    try:
        await run_terminal_chat(tg, SANDBOX_USER, banner=BANNER)
    finally:
        await dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await worker.stop()
        await bot.session.close()
        await close_context(app)
        for server in exchanges.values():
            await server.close()
        await threecommas.close()
        await tg.close()
