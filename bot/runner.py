"""Process roles: everything in one process, the Telegram side only, or a worker only."""

from __future__ import annotations

import asyncio
import logging
import signal

from bot.app import build_bot, build_context, build_dispatcher, close_context
from bot.commands import register_commands
from bot.settings import Settings
from services.connections import reseal_all
from bot.worker import Worker
from services.db import create_engine, is_sqlite, run_migrations, session_factory
from services.vault import Vault

log = logging.getLogger(__name__)


async def rotate_vault(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        await run_migrations(engine)
        async with session_factory(engine).begin() as session:
            return await reseal_all(session, Vault(settings.vault_key))
    finally:
        await engine.dispose()


async def run_roles(settings: Settings, *, role: str = "all", webhook: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then stop claiming work and exit cleanly."""
    if role == "worker" and is_sqlite(settings.database_url):
        raise SystemExit(
            "Separate workers need PostgreSQL (DATABASE_URL=postgresql+asyncpg://...); "
            "on SQLite run everything in one process: python -m bot"
        )
    app = await build_context(settings)
    bot = build_bot(settings)
    dp = build_dispatcher(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        tasks = []
        worker = Worker(app, bot) if role in {"all", "worker"} else None
        if worker is not None:
            worker.start()
        if role in {"all", "serve"}:
            await register_commands(bot, app.i18n)
            tasks.append(asyncio.create_task(dp.start_polling(bot, handle_signals=False)))
        await stop.wait()
        log.info("shutting down")
        if role in {"all", "serve"}:
            await dp.stop_polling()
        await asyncio.gather(*tasks, return_exceptions=True)
        if worker is not None:
            await worker.stop()
    finally:
        await bot.session.close()
        await close_context(app)
