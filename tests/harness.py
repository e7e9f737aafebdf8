"""An end-to-end rig: the real Dispatcher and Bot, polling the local Telegram over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher, Router

from bot.app import build_bot, build_context, build_dispatcher, close_context, stop_polling
from bot.callbacks import ConnAction, ConnCb
from bot.context import AppContext
from bot.settings import Settings
from sandbox.telegram import ChatMessage, LocalTelegram
from services.core.clock import FakeClock
from services.core.transport import Transport
from services.core.vault import generate_key
from services.storage.button_tokens import connection_token
from services.storage.models import Connection
from tests.schema import with_schema

TOKEN = "123456:TEST-TOKEN"


@dataclass
class BotRig:
    tg: LocalTelegram
    app: AppContext
    bot: Bot
    dp: Dispatcher
    clock: FakeClock
    polling: asyncio.Task[None]

    async def say(self, user_id: int, text: str, **kwargs: Any) -> ChatMessage:
        """The user sends ``text``; returns the bot's next unread message in that chat."""
        self.tg.user_sends(user_id, text, **kwargs)
        return await self.tg.wait_for_bot_message(kwargs.get("chat_id") or user_id)

    async def press(self, user_id: int, message: ChatMessage, button: str) -> None:
        """The user taps the button whose text contains ``button`` and the bot answers the tap."""
        current = self.tg.message(message.chat_id, message.message_id)
        [data] = [b.callback_data for b in current.buttons if button in b.text][:1]
        query_id = self.tg.user_presses(user_id, current, data)
        await self.tg.wait_for(lambda: self.tg.callback_answer(query_id))

    async def connection_button(self, action: str, cid: int) -> str:
        """Connection ``cid``'s ``action`` button as the bot would draw it now, version token included
        (a removed connection's token is empty: any token is out of date for it)."""
        async with self.app.sessions() as session:
            connection = await session.get(Connection, cid)
        token = "" if connection is None else connection_token(connection)
        return ConnCb(action=ConnAction(action), cid=cid, v=token).pack()


@contextlib.asynccontextmanager
async def running_bot(
    database_url: str,
    clock: FakeClock | None = None,
    *,
    routers: Sequence[Router] = (),
    transport: Transport | None = None,
    **settings: Any,
) -> AsyncIterator[BotRig]:
    """Everything real except the far ends: Telegram (local server) and, where set, exchanges.

    ``transport`` (usually ``net.transport``, tests/production_net.py) routes the exchanges' and
    3Commas' real hostnames to the local fakes.
    """
    clock = clock or FakeClock()
    await with_schema(database_url)
    tg = LocalTelegram(token=TOKEN, rate_limits=False, wall_clock=lambda: clock.now().timestamp())
    url = await tg.start()
    config = Settings(
        _env_file=None,
        bot_token=TOKEN,
        telegram_api_url=url,
        database_url=database_url,
        vault_key=[generate_key()],
        **settings,
    )
    app = await build_context(config, clock=clock, transport=transport)
    bot = build_bot(config)
    dp = build_dispatcher(app, *routers)
    dp.shutdown.register(_close_at_once(bot))
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        await tg.wait_for(lambda: tg.waiting_polls > 0)  # the bot is listening
        yield BotRig(tg=tg, app=app, bot=bot, dp=dp, clock=clock, polling=task)
    finally:
        await stop_polling(dp, task)
        await bot.session.close()
        await close_context(app)
        await tg.close()


def _close_at_once(bot: Bot) -> Callable[[], Awaitable[None]]:
    """A shutdown hook closing the bot's HTTP session where polling would close it, without the
    250 ms aiogram's ``AiohttpSession.close`` then sleeps for TLS connections to wind down: the
    local Telegram is plain HTTP (a quarter of a second of every rig's teardown)."""

    async def close() -> None:
        await (await bot.session.create_session()).close()  # aiogram's close then finds it closed

    return close


class Tracker:
    """Records which updates the dispatcher has finished with, and anything that escaped it."""

    def __init__(self, dp: Dispatcher) -> None:
        self.done: set[int] = set()
        self.escaped: list[BaseException] = []
        self._changed = asyncio.Condition()
        feed = dp.feed_update

        async def feed_update(bot: Any, update: Any, **kwargs: Any) -> Any:
            try:
                return await feed(bot, update, **kwargs)
            except Exception as error:  # aiogram would only log it
                self.escaped.append(error)
                raise
            finally:
                self.done.add(update.update_id)
                async with self._changed:
                    self._changed.notify_all()

        dp.feed_update = feed_update  # type: ignore[method-assign]  # polling calls self.feed_update

    async def wait(self, update_ids: Iterable[int], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        wanted = set(update_ids)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: wanted <= self.done)
