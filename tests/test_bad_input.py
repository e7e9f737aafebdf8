"""Bad input end to end (issue 7.7): what real users and attackers send, through the real stack.

Every case gets a clear answer or none, never a traceback, never a Telegram error (the local
Telegram answers broken HTML with 400, so an unescaped label would show up as a failed request),
and never a change to a row it should not change. The real Dispatcher and Bot poll the local
Telegram; keys go to local exchanges through real ccxt; 3Commas is local too.

A :class:`Tracker` wraps the dispatcher's ``feed_update`` so a test can wait until an update was
*processed* even when the right outcome is silence (a forged button without an answer, a channel
post, an edited message), instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import pytest
from aiogram import Dispatcher
from sqlalchemy import text

from bot.callbacks import (
    ConnCb,
    ExchangeCb,
    ExchangePageCb,
    LanguageCb,
    LinkStepCb,
    MuteCb,
    OrdersCb,
    RecreateCb,
    StatusPageCb,
    TcMapCb,
)
from sandbox.exchanges.base import LocalExchange, LocalKey
from sandbox.exchanges.binance import LocalBinance
from sandbox.exchanges.okx import LocalOkx
from sandbox.telegram import CallbackAnswer, ChatMessage
from sandbox.threecommas import LocalThreeCommas
from services.clock import FakeClock
from services.connections import new_connection
from services.deal_checks import recreate_params
from services.deals_store import (
    ThreeCommasAccess,
    add_threecommas_connection,
    save_account_link,
    store_failed_deal,
)
from services.threecommas import Account
from services.vault import Credentials
from tests.harness import BotRig, running_bot

OWNER, OTHER = 801, 802
T0 = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
BIG = "x" * 10_240  # 10 KB in one message
# Whatever a handler says, the user never sees these: they are internals or the error handler's text.
LEAKS = ("Traceback", "Error:", "went wrong", "Exception", "sqlalchemy", "aiogram", 'File "')
TABLES = (
    "connections",
    "incidents",
    "order_lists",
    "listed_orders",
    "threecommas_accounts",
    "failed_deals",
)


# ----------------------------------------------------------------------------- the rig


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


@dataclass
class Env:
    rig: BotRig
    binance: LocalExchange
    okx: LocalExchange
    tc: LocalThreeCommas
    tracker: Tracker

    @property
    def tg(self):  # noqa: ANN201
        return self.rig.tg

    def send(self, user: int, message: str, **kwargs: Any) -> int:
        """The user sends ``message``; returns the update id (see :meth:`settle`)."""
        return int(self.tg.user_sends(user, message, **kwargs)["update_id"])

    def tap(self, user: int, message_id: int, data: str, *, chat_id: int | None = None) -> tuple[int, str]:
        """A callback with arbitrary data on ``message_id``; returns (update id, query id)."""
        query = self.tg.user_sends_callback(user, message_id, data, chat_id=chat_id)
        return int(self.tg.pending_updates()[-1]["update_id"]), query

    async def settle(self, *update_ids: int) -> None:
        await self.tracker.wait(update_ids)

    async def press(self, user: int, message: ChatMessage | int, data: str) -> CallbackAnswer | None:
        """Tap ``data`` and wait until the bot is done with it; its answer, or None if it gave none."""
        message_id = message if isinstance(message, int) else message.message_id
        update_id, query = self.tap(user, message_id, data)
        await self.settle(update_id)
        return self.tg.callback_answer(query)

    async def silent(self, user: int, message: str, **kwargs: Any) -> None:
        """Send and wait until processed, whatever (if anything) the bot says."""
        await self.settle(self.send(user, message, **kwargs))


@pytest.fixture
async def exchanges() -> AsyncIterator[tuple[LocalExchange, LocalExchange]]:
    binance, okx = LocalBinance(), LocalOkx()
    await binance.start()
    await okx.start()
    try:
        yield binance, okx
    finally:
        await binance.close()
        await okx.close()


@pytest.fixture
async def tc() -> AsyncIterator[LocalThreeCommas]:
    server = LocalThreeCommas(FakeClock(T0))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def env(tmp_path, exchanges, tc) -> AsyncIterator[Env]:
    binance, okx = exchanges
    async with running_bot(
        f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}",
        clock=FakeClock(T0 + timedelta(minutes=30)),
        exchange_url_overrides={"binance": str(binance.url), "okx": str(okx.url)},
        threecommas_api_url=tc.url,
    ) as rig:
        yield Env(rig, binance, okx, tc, Tracker(rig.dp))


def assert_clean(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """No failed Bot API request, no internals in any message or alert, nothing logged as an error."""
    tg = env.tg
    assert not tg.errors, tg.transcript()
    shown = [m.text for chat in list(tg._chats) for m in tg.bot_messages(chat)]
    shown += [a.text for a in tg.callback_answers]
    leaked = [s for s in shown if any(leak in s for leak in LEAKS)]
    assert not leaked, leaked
    assert not env.tracker.escaped, env.tracker.escaped
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def snapshot(env: Env) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a button could change, column by column."""
    async with env.rig.app.sessions() as session:
        return {
            table: [tuple(row) for row in (await session.execute(text(f"SELECT * FROM {table} ORDER BY id")))]
            for table in TABLES
        }


async def link_key(env: Env, user: int, label: str = "Main", key: LocalKey | None = None) -> int:
    """A verified connection, linked the way a user does it: the wizard."""
    key = key or env.binance.add_key(balances={"USDT": 500})
    tg = env.tg
    await env.rig.say(user, "/link binance")
    await env.rig.say(user, label)
    await env.rig.say(user, key.api_key)
    reply = await env.rig.say(user, key.secret)
    assert "linked" in reply.text, tg.transcript(user)
    async with env.rig.app.sessions() as session:
        return int(await session.scalar(text("SELECT max(id) FROM connections")))


# ----------------------------------------------------------------------------- 10 KB messages

LONG_CASES = {
    # name: (messages sent first, the 10 KB message, what the answer says)
    "link-exchange-arg": ([], "/link " + BIG, "do not know"),
    "link-key-args": ([], f"/link binance {BIG} {BIG}", "too long"),
    "help-arg": ([], "/help " + BIG, "Commands"),
    "cancel-arg": ([], "/cancel " + BIG, "Nothing to cancel"),
    "wizard-exchange": (["/link"], BIG, "do not know that exchange"),
    "wizard-label": (["/link binance"], BIG, "at most 64"),
    "wizard-key": (["/link binance", "Main"], BIG, "too long"),
    "wizard-secret": (["/link binance", "Main", "AAAAAAAAAAAAAAAA"], BIG, "too long"),
    "link3c-key": (["/link3c"], BIG, ""),
}


@pytest.mark.parametrize("case", list(LONG_CASES))
async def test_ten_kilobyte_message_gets_a_short_clear_answer(env, caplog, case):
    before, long_message, expected = LONG_CASES[case]
    for message in before:
        await env.rig.say(OWNER, message)
    requests = len(env.binance.requests)
    reply = await env.rig.say(OWNER, long_message)
    assert expected in reply.text and len(reply.text) < 1000, env.tg.transcript(OWNER)
    assert len(env.binance.requests) == requests  # nothing that long is ever sent to an exchange
    assert (await snapshot(env))["connections"] == []
    assert_clean(env, caplog)



# ----------------------------------------------------------------------------- garbage keys

GARBAGE = {
    "binary": "\x00\x01\x02\x03\x7f\x80\xfe\xff",
    "escape-codes": "\x1b[2J\x1b[31mAAAA\x07",
    "emoji": "🔑🚀💸" * 4,
    "rtl-marks": "\u202eAAAA\u200fBBBB\u200e",
    "zero-width": "AAAA\u200bBBBB\ufeff",
    "header-injection": "AAAA\r\nX-Injected: 1",
    "cyrillic": "ключключключ",
    "spaces": "AAAA BBBB",
}


@pytest.mark.parametrize("name", list(GARBAGE))
async def test_garbage_keys_and_secrets_are_refused_deleted_and_never_sent(env, caplog, name):
    garbage, tg = GARBAGE[name], env.tg
    real = env.binance.add_key()
    okx = env.okx.add_key()
    exchange_requests = len(env.binance.requests) + len(env.okx.requests)
    threecommas_requests = len(env.tc.requests)

    await env.rig.say(OWNER, "/link binance")
    await env.rig.say(OWNER, "Main")
    assert "again" in (await env.rig.say(OWNER, garbage)).text  # as the API key
    await env.rig.say(OWNER, real.api_key)
    assert "again" in (await env.rig.say(OWNER, garbage)).text  # as the secret
    await env.rig.say(OWNER, "/link okx")
    await env.rig.say(OWNER, "Main")
    await env.rig.say(OWNER, okx.api_key)
    await env.rig.say(OWNER, okx.secret)
    if " " not in garbage:  # passphrases may hold spaces
        assert "again" in (await env.rig.say(OWNER, garbage)).text  # as the passphrase
    assert "Cancelled" in (await env.rig.say(OWNER, "/cancel")).text
    one_liner = await env.rig.say(OWNER, f"/link binance {garbage} {garbage}")
    assert "Nothing was saved" in one_liner.text or "Usage" in one_liner.text
    await env.rig.say(OWNER, "/link3c")
    assert "again" in (await env.rig.say(OWNER, garbage)).text  # as a 3Commas key
    await env.rig.say(OWNER, "/link3c")
    await env.rig.say(OWNER, "A" * 64)
    assert "again" in (await env.rig.say(OWNER, garbage)).text  # as a 3Commas secret
    assert "Cancelled" in (await env.rig.say(OWNER, "/cancel")).text  # a command, not a secret

    carrying = [m for m in tg.user_messages(OWNER) if garbage in m.text]
    assert carrying and all(m.deleted for m in carrying), tg.transcript(OWNER)
    assert len(env.binance.requests) + len(env.okx.requests) == exchange_requests
    assert len(env.tc.requests) == threecommas_requests
    assert (await snapshot(env))["connections"] == []
    assert_clean(env, caplog)
