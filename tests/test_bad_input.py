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
    "link3c-key": (["/link3c"], BIG, "too long"),
    "link3c-secret": (["/link3c", "A" * 64], BIG, "too long"),
}


@pytest.mark.parametrize("case", list(LONG_CASES))
async def test_ten_kilobyte_message_gets_a_short_clear_answer(env, caplog, case):
    before, long_message, expected = LONG_CASES[case]
    for message in before:
        await env.rig.say(OWNER, message)
    requests = len(env.binance.requests), len(env.tc.requests)
    reply = await env.rig.say(OWNER, long_message)
    assert expected in reply.text and len(reply.text) < 1000, env.tg.transcript(OWNER)
    assert (len(env.binance.requests), len(env.tc.requests)) == requests  # nothing that long leaves
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


# ----------------------------------------------------------------------------- a populated account


@dataclass
class World:
    """OWNER's account with one of everything a button can name."""

    cid: int  # binance connection
    tc_cid: int  # 3Commas connection
    link_id: int  # 3Commas account → binance connection mapping
    list_id: int  # the /orders listing
    orphan_row: int  # listed order of a finished deal
    unknown_row: int  # listed order nobody claims
    orphan_order: str  # its exchange order id
    deal_row: int  # failed SmartTrade
    status: ChatMessage  # OWNER's /status page
    listing: ChatMessage  # OWNER's /orders listing

    def buttons(self) -> dict[str, str]:
        """Every valid button of OWNER's, packed."""
        return {
            **{f"conn-{a}": ConnCb(action=a, cid=self.cid).pack() for a in ("refresh", "update", "orders")},
            "conn-remove": ConnCb(action="remove", cid=self.cid).pack(),
            "conn-rm_yes": ConnCb(action="rm_yes", cid=self.cid).pack(),
            "conn-mute": ConnCb(action="mute", cid=self.cid).pack(),
            "mute": MuteCb(cid=self.cid, hours=24).pack(),
            "mute-3c": MuteCb(cid=self.tc_cid, hours=168).pack(),
            "refresh-3c": ConnCb(action="refresh", cid=self.tc_cid).pack(),
            **{
                f"orders-{a}": OrdersCb(action=a, id=self.list_id).pack()
                for a in ("pg", "rf", "all", "ally")
            },
            "orders-x": OrdersCb(action="x", id=self.orphan_row).pack(),
            "orders-u": OrdersCb(action="u", id=self.unknown_row).pack(),
            "orders-uy": OrdersCb(action="uy", id=self.unknown_row).pack(),
            "recreate-show": RecreateCb(action="show", id=self.deal_row).pack(),
            "recreate-go": RecreateCb(action="go", id=self.deal_row).pack(),
            "tcmap-skip": TcMapCb(link=self.link_id, cid=0).pack(),
            "tcmap": TcMapCb(link=self.link_id, cid=self.cid).pack(),
        }


@pytest.fixture
async def world(env: Env) -> World:
    rig, binance, tc = env.rig, env.binance, env.tc
    key = binance.add_key(balances={"USDT": 10_000, "ETH": 5, "SOL": 10})
    orphan_order = binance.add_order(key.api_key, "ETH/USDT", "sell", "3700", "0.5", created_at=T0)
    binance.add_order(key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    cid = await link_key(env, OWNER, "Main", key)

    tc_key = tc.add_key()
    account_id = tc.add_account(tc_key.api_key, "binance")
    finished = tc.add_deal(
        tc_key.api_key,
        account_id,
        pair="USDT_ETH",
        status="bought",
        orders=[{"side": "sell", "price": "3700", "amount": "0.5", "created_at": T0, "status": "active"}],
    )
    tc.finish_deal(finished)
    trade = tc.add_smart_trade(
        tc_key.api_key, account_id, pair="USDT_BTC", side="buy", units="0.01", price="60000"
    )
    tc.fail_smart_trade(trade)
    credentials = Credentials(tc_key.api_key, tc_key.secret)
    async with ThreeCommasAccess(tc.url).open(credentials) as client:
        item = await client.smart_trade(trade)
    now = rig.clock.now()
    async with rig.app.sessions.begin() as session:
        tc_connection = add_threecommas_connection(
            session, rig.app.vault, user_id=OWNER, credentials=credentials, label="3C", now=now
        )
        await session.flush()
        link = await save_account_link(
            session,
            user_id=OWNER,
            tc_connection_id=tc_connection.id,
            account=Account.from_json({"id": account_id, "name": "Main", "market_code": "binance"}),
            exchange_connection_id=cid,
            now=now,
        )
        deal_row = await store_failed_deal(
            session,
            user_id=OWNER,
            tc_connection_id=tc_connection.id,
            plan=recreate_params(item).to_dict(),
            error="Invalid API key",
            now=now,
        )
        tc_cid, link_id = tc_connection.id, link.id

    waiting = await env.rig.say(OWNER, "/orders")  # one exchange key: "Loading…", then the list
    listing = await env.tg.wait_for(lambda: "open orders:" in waiting.text and waiting)
    pressed = {b.text: OrdersCb.unpack(b.callback_data) for b in listing.buttons if b.callback_data}
    orphan, unknown = pressed["❌ Cancel 1"], pressed["⚠️ Cancel 2?"]
    status = await env.rig.say(OWNER, "/status")
    return World(
        cid=cid,
        tc_cid=tc_cid,
        link_id=link_id,
        list_id=pressed["🔄 Refresh"].id,
        orphan_row=orphan.id,
        unknown_row=unknown.id,
        orphan_order=orphan_order,
        deal_row=deal_row,
        status=status,
        listing=listing,
    )


def deletes(env: Env) -> int:
    return sum(1 for r in env.binance.requests if r.method == "DELETE")


def threecommas_posts(env: Env) -> int:
    return sum(1 for r in env.tc.requests if r.method == "POST")


# ----------------------------------------------------------------------------- forged callback data

HUGE = "9" * 40
FORGED = {
    "random": ["", ":", "::::", "\x00", "🙂" * 16, "A" * 64, "null", "undefined", "{}", "' OR 1=1 --"],
    "connection": [
        "c:refresh:-1",
        "c:refresh:0",
        f"c:refresh:{HUGE}",
        "c:refresh:" + "9" * 54,  # 64 bytes
        f"c:rm_yes:{2**31}",
        f"c:rm_yes:{2**63}",
        "c:update:-99",
        f"c:orders:{HUGE}",
        "c:remove:1e9",
        "c:refresh:0x10",
        "c:refresh:1:2",
        "c::",
        "sp:-5",
        f"sp:{HUGE}",
    ],
    "orders": [
        "o:x:-1:0",
        f"o:x:{HUGE}:0",
        f"o:uy:{2**31}:0",
        f"o:pg:1:{HUGE}",
        "o:pg:1:-7",
        f"o:rf:{HUGE}:0",
        f"o:ally:{2**63}:0",
        f"o:u:{HUGE}:0",
        "o:zz:1:0",
    ],
    "recreate": ["rc:go:-1", f"rc:go:{HUGE}", f"rc:show:{2**31}", "rc:show:0", "rc:boom:1"],
    "mute": [f"m:{HUGE}:24", "m:-1:24", "m:0:999999", "m:0:-24", f"m:0:{HUGE}", "m:1:1.5"],
    "tcmap": [f"tcm:{HUGE}:0", f"tcm:1:{HUGE}", "tcm:-1:-1", f"tcm:{2**31}:{2**31}"],
    "link-and-language": [
        "lx:" + "a" * 61,
        "lx:../../etc/passwd",
        "lxp:-1",
        f"lxp:{HUGE}",
        "lxs:boom",
        "golink:extra",
        "lang:xx",
        "lang:" + "a" * 59,
        "forget:maybe",
        "forget:",
    ],
}


@pytest.mark.parametrize("family", list(FORGED))
async def test_forged_callback_data_gets_a_clear_answer_or_none_and_changes_nothing(
    env, world, caplog, family
):
    before, dels, posts = await snapshot(env), deletes(env), threecommas_posts(env)
    for data in FORGED[family]:
        answer = await env.press(OWNER, world.status, data)
        if answer is not None:
            assert answer.text, data  # an answer says something
    assert await snapshot(env) == before
    assert (deletes(env), threecommas_posts(env)) == (dels, posts)
    assert "Nothing to cancel" in (await env.rig.say(OWNER, "/cancel")).text  # no wizard got started
    assert_clean(env, caplog)
