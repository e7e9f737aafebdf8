"""An end-to-end rig: the real Dispatcher and Bot, polling the local Telegram over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher

from bot.app import build_bot, build_context, build_dispatcher, close_context
from bot.context import AppContext
from bot.settings import Settings
from sandbox.telegram import LocalTelegram
from services.clock import FakeClock
from services.vault import generate_key

TOKEN = "123456:TEST-TOKEN"


@dataclass
class BotRig:
    tg: LocalTelegram
    app: AppContext
    bot: Bot
    dp: Dispatcher
    clock: FakeClock

    async def say(self, user_id: int, text: str, **kwargs: Any):
        """The user sends ``text``; returns the bot's next new message in that chat."""
        waiter = asyncio.create_task(self.tg.wait_for_bot_message(kwargs.get("chat_id") or user_id))
        await asyncio.sleep(0)
        self.tg.user_sends(user_id, text, **kwargs)
        return await waiter


@contextlib.asynccontextmanager
async def running_bot(database_url: str, clock: FakeClock | None = None, **settings: Any) -> AsyncIterator[BotRig]:
    clock = clock or FakeClock()
    tg = LocalTelegram(token=TOKEN, rate_limits=False)
    url = await tg.start()
    config = Settings(
        _env_file=None,
        bot_token=TOKEN,
        telegram_api_url=url,
        database_url=database_url,
        vault_key=[generate_key()],
        **settings,
    )
    app = await build_context(config, clock=clock)
    bot = build_bot(config)
    dp = build_dispatcher(app)
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        yield BotRig(tg=tg, app=app, bot=bot, dp=dp, clock=clock)
    finally:
        await dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bot.session.close()
        await close_context(app)
        await tg.close()
