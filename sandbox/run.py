"""`make run` without BOT_TOKEN: the real bot against a local Telegram and local exchanges.

Everything runs in this process on loopback ports; the terminal is the chat window. The
database is a fresh file per run, removed on exit, because the local exchanges forget their
keys on exit too. Files the bot sends (``/export``) are saved under ``data/sandbox/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from bot.app import build_bot, build_context, build_dispatcher, close_context, stop_polling
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
    "/orders, /sandbox_fail, /sandbox_reset. Quit with /quit or Ctrl-C. "
    "Go live: put BOT_TOKEN and VAULT_KEY in .env."
)
DOWNLOADS = Path("data") / "sandbox"


async def run_sandbox(settings: Settings, *, downloads: Path = DOWNLOADS) -> None:
    """Until /quit, end of input or Ctrl-C; everything started here is stopped and the temporary
    directory (database) removed on the way out, however the chat ended."""
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keysentry-sandbox-")))
        tg = LocalTelegram(token=SANDBOX_TOKEN)
        telegram_url = await tg.start()
        stack.push_async_callback(tg.close)
        exchanges = {eid: cls() for eid, cls in LOCAL_EXCHANGES.items()}
        overrides = {}
        for eid, server in exchanges.items():
            overrides[eid] = await server.start()
            stack.push_async_callback(server.close)
        threecommas = LocalThreeCommas()
        threecommas_url = await threecommas.start()
        stack.push_async_callback(threecommas.close)
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
        stack.push_async_callback(close_context, app)
        bot = build_bot(config)
        stack.push_async_callback(bot.session.close)
        dp = build_dispatcher(app, sandbox_router(exchanges, threecommas))
        await register_commands(bot, app.i18n)
        worker = Worker(app, bot)
        worker.start()
        stack.push_async_callback(worker.stop)
        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        try:
            await run_terminal_chat(tg, SANDBOX_USER, banner=BANNER, downloads=downloads)
        finally:
            await stop_polling(dp, polling)
