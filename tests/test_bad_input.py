"""Bad input end to end (issue 7.7): what real users and attackers send, through the real stack.

Every case gets a clear answer or none, never a traceback, never a Telegram error (the local
Telegram answers broken HTML with 400, so an unescaped label would show up as a failed request),
and never a change to a row it should not change. The real Dispatcher and Bot poll the local
Telegram; keys go to local exchanges through real ccxt; 3Commas is local too.

A :class:`Tracker` wraps the dispatcher's ``feed_update`` so a test can wait until an update was
*processed* even when the right outcome is silence (a forged button without an answer, a channel
post, an edited message), instead of sleeping.

The cases of this module share one running bot (and its database, local Telegram, exchanges and
3Commas): starting and stopping one costs ~0.3 s, more than most cases. Each case still meets what a
bot of its own would show it: users, chats and keys of its own (nothing an earlier case did is
theirs), the request logs and the escaped errors emptied, the clock moved past every rate window,
and "rows in the database" meaning the rows this case added (:func:`new_rows`). A case ends only
when the bot has handled every update it caused, so none reaches into the next.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from bot.callbacks import (
    ChecklistAction,
    ChecklistCb,
    ConnAction,
    ConnCb,
    MuteCb,
    OrdersCb,
    RecreateCb,
    TcMapCb,
    TcRepairAction,
    TcRepairCb,
)
from bot.middlewares import InFlight
from sandbox.exchanges import LOCAL_EXCHANGES
from sandbox.exchanges.base import LocalExchange, LocalKey
from sandbox.telegram import CallbackAnswer, ChatMessage, LocalTelegram
from sandbox.threecommas import LocalThreeCommas
from services.core.clock import FakeClock
from services.core.vault import Credentials
from services.orders.listing import owned_listing
from services.storage import button_tokens as tokens
from services.storage.connections import replace_credentials
from services.storage.models import Connection, FailedDeal, ListedOrder, RecoveryChecklist
from services.threecommas.checklist import failed_since, open_checklist
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.entities import Account
from services.threecommas.links import add_threecommas_connection, save_account_link
from services.threecommas.recreate import recreate_params, store_failed_deal
from tests.conftest import T0
from tests.harness import BotRig, Tracker, running_bot
from tests.production_net import ProductionNet

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the loop the shared bot runs in

FIRST_USER = 801  # each case's owner, and another user (``env.owner``, ``env.other``), from here on
BETWEEN_CASES = timedelta(minutes=10)  # longer than any exchange or 3Commas rate window or block
OUT_OF_DATE = "This button is out of date — send {} again."
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
    "recovery_checklists",
    "money_actions",
)


# ----------------------------------------------------------------------------- the rig


@dataclass
class Shared:
    """What the module's cases share: one bot and the far ends it talks to."""

    rig: BotRig
    exchanges: dict[str, LocalExchange]
    tc: LocalThreeCommas
    tracker: Tracker
    users: Iterator[int]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    net = ProductionNet()
    clock = FakeClock(T0 + timedelta(minutes=30))
    # The exchanges count their weight windows on the bot's clock: moved on between cases, each case
    # meets empty windows (their used-weight headers feed the bot's budgets), as new servers had.
    exchanges = {name: cls(clock.monotonic) for name, cls in LOCAL_EXCHANGES.items()}
    async with contextlib.AsyncExitStack() as stack:
        for server in exchanges.values():
            stack.push_async_callback(server.close)
            await net.serve_exchange(server)
        tc = LocalThreeCommas(FakeClock(T0))
        stack.push_async_callback(tc.close)
        await tc.start()
        rig = await stack.enter_async_context(
            running_bot(
                f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('bad') / 'bad.db'}",
                clock=clock,
                transport=net.transport,
                threecommas_api_url=tc.url,
            )
        )
        yield Shared(rig, exchanges, tc, Tracker(rig.dp), itertools.count(FIRST_USER, 2))


@dataclass
class Env:
    rig: BotRig
    binance: LocalExchange
    okx: LocalExchange
    tc: LocalThreeCommas
    tracker: Tracker
    owner: int  # this case's users: nobody else's messages, rows or chats are theirs
    other: int
    start: dict[str, list[tuple[Any, ...]]]  # the database when the case began (see new_rows)
    first_audit: int  # the first audit_log id this case can write

    @property
    def tg(self) -> LocalTelegram:
        return self.rig.tg

    def group(self, number: int) -> int:
        """A group or channel chat of this case's own (``number`` tells a case's chats apart)."""
        return -(self.owner * 1000 + number)

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

    async def say(self, user: int, message: str) -> ChatMessage:
        """The bot's first message after this one (whatever earlier taps made it say is skipped)."""
        self.tg.mark_read(user)
        return await self.rig.say(user, message)


@pytest_asyncio.fixture(loop_scope="module")
async def env(shared: Shared) -> AsyncIterator[Env]:
    rig, exchanges, tc = shared.rig, shared.exchanges, shared.tc
    # Rate windows and blocks of earlier cases are over, as they would be for a new bot.
    rig.clock.advance(BETWEEN_CASES.total_seconds())
    for log in (
        rig.tg.requests,
        tc.requests,
        shared.tracker.escaped,
        *(e.requests for e in exchanges.values()),
    ):
        log.clear()
    owner = next(shared.users)
    async with rig.app.sessions() as session:
        first_audit = int(await session.scalar(text("SELECT coalesce(max(id), 0) + 1 FROM audit_log")))
    env = Env(
        rig,
        exchanges["binance"],
        exchanges["okx"],
        tc,
        shared.tracker,
        owner=owner,
        other=owner + 1,
        start={},
        first_audit=first_audit,
    )
    env.start = await snapshot(env)
    try:
        yield env
    finally:
        for exchange in exchanges.values():  # a case that failed half-way may have left a fault
            exchange.clear_faults()
            exchange.release_hung()
        # Every update sent so far fetched (the bot polls again past it) and handled.
        await rig.tg.wait_for(lambda: rig.tg.waiting_polls > 0 and not rig.tg.pending_updates(), timeout=10)
        in_flight: InFlight = rig.dp["in_flight"]
        assert await in_flight.drained(10), "updates of this case still being handled"


def assert_clean(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """No failed Bot API request, no internals in any message or alert, nothing logged as an error.

    The one tolerated failure is Telegram's "message is not modified": redrawing a page that did not
    change is how the handlers find out, and they expect it.
    """
    tg = env.tg
    failed = [r for r in tg.errors if "message is not modified" not in (r.description or "")]
    assert not failed, tg.transcript()
    # Every text the bot ever tried to show (messages, edits, alerts), not only what is left on screen.
    shown = [r.params.get("text", "") + r.params.get("caption", "") for r in tg.requests]
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


def new_rows(env: Env, now: dict[str, list[tuple[Any, ...]]], table: str) -> list[tuple[Any, ...]]:
    """The rows of ``table`` in snapshot ``now`` that this case added or changed: what a database of
    its own would hold. Earlier cases' rows must all still be there, untouched."""
    before = env.start[table]
    assert [row for row in before if row not in now[table]] == [], f"{table}: an earlier case's row changed"
    return [row for row in now[table] if row not in before]


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
SECRET_STEPS = {"link-key-args", "wizard-key", "wizard-secret", "link3c-key", "link3c-secret"}


@pytest.mark.parametrize("case", list(LONG_CASES))
async def test_ten_kilobyte_message_gets_a_short_clear_answer(env, caplog, case):
    before, long_message, expected = LONG_CASES[case]
    for message in before:
        await env.rig.say(env.owner, message)
    requests = len(env.binance.requests), len(env.tc.requests)
    reply = await env.rig.say(env.owner, long_message)
    assert expected in reply.text and len(reply.text) < 1000, env.tg.transcript(env.owner)
    assert (len(env.binance.requests), len(env.tc.requests)) == requests  # nothing that long leaves
    assert env.tg.user_messages(env.owner)[-1].deleted == (case in SECRET_STEPS)  # it may hold a secret
    assert new_rows(env, await snapshot(env), "connections") == []
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

    await env.rig.say(env.owner, "/link binance")
    await env.rig.say(env.owner, "Main")
    assert "again" in (await env.rig.say(env.owner, garbage)).text  # as the API key
    await env.rig.say(env.owner, real.api_key)
    assert "again" in (await env.rig.say(env.owner, garbage)).text  # as the secret
    await env.rig.say(env.owner, "/link okx")
    await env.rig.say(env.owner, "Main")
    await env.rig.say(env.owner, okx.api_key)
    await env.rig.say(env.owner, okx.secret)
    if " " not in garbage:  # passphrases may hold spaces
        assert "again" in (await env.rig.say(env.owner, garbage)).text  # as the passphrase
    assert "Cancelled" in (await env.rig.say(env.owner, "/cancel")).text
    one_liner = await env.rig.say(env.owner, f"/link binance {garbage} {garbage}")
    assert "Nothing was saved" in one_liner.text or "Usage" in one_liner.text
    await env.rig.say(env.owner, "/link3c")
    assert "again" in (await env.rig.say(env.owner, garbage)).text  # as a 3Commas key
    await env.rig.say(env.owner, "/link3c")
    await env.rig.say(env.owner, "A" * 64)
    assert "again" in (await env.rig.say(env.owner, garbage)).text  # as a 3Commas secret
    assert "Cancelled" in (await env.rig.say(env.owner, "/cancel")).text  # a command, not a secret

    carrying = [m for m in tg.user_messages(env.owner) if garbage in m.text]
    assert carrying and all(m.deleted for m in carrying), tg.transcript(env.owner)
    assert len(env.binance.requests) + len(env.okx.requests) == exchange_requests
    assert len(env.tc.requests) == threecommas_requests
    assert new_rows(env, await snapshot(env), "connections") == []
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- a populated account


@dataclass
class World:
    """The owner's account with one of everything a button can name."""

    owner: int
    cid: int  # binance connection
    tc_cid: int  # 3Commas connection
    account_id: int  # its 3Commas account
    link_id: int  # 3Commas account → binance connection mapping
    list_id: int  # the /orders listing
    orphan_row: int  # listed order of a finished deal
    unknown_row: int  # listed order nobody claims
    orphan_order: str  # its exchange order id
    deal_row: int  # failed SmartTrade
    checklist_id: int  # the 3Commas account's recovery checklist
    status: ChatMessage  # the owner's /status page
    listing: ChatMessage  # the owner's /orders listing
    v: dict[str, str]  # each object's version token, as its buttons carry it

    def buttons(self) -> dict[str, str]:
        """Every valid button of the owner's, packed."""
        conn, tc_conn, listing = self.v["conn"], self.v["tc_conn"], self.v["listing"]
        repair = {
            a: TcRepairCb(action=a, cid=self.tc_cid, acc=self.account_id, v=tc_conn) for a in TcRepairAction
        }
        steps = {
            a: ChecklistCb(action=a, id=self.checklist_id, v=self.v["checklist"])
            for a in (ChecklistAction.REFRESH, ChecklistAction.ASK_RECREATE, ChecklistAction.OLD_KEY_DELETED)
        }
        return {
            **{f"conn-{a}": ConnCb(action=a, cid=self.cid, v=conn).pack() for a in ConnAction},
            "mute": MuteCb(cid=self.cid, hours=24, v=conn).pack(),
            "unmute": MuteCb(cid=self.cid, hours=0, v=conn).pack(),
            "mute-3c": MuteCb(cid=self.tc_cid, hours=168, v=tc_conn).pack(),
            "refresh-3c": ConnCb(action="refresh", cid=self.tc_cid, v=tc_conn).pack(),
            **{
                f"orders-{a}": OrdersCb(action=a, id=self.list_id, page=0, v=listing).pack()
                for a in ("pg", "rf", "all", "ally")
            },
            "orders-x": OrdersCb(action="x", id=self.orphan_row, page=0, v=self.v["orphan"]).pack(),
            "orders-u": OrdersCb(action="u", id=self.unknown_row, page=0, v=self.v["unknown"]).pack(),
            "orders-uy": OrdersCb(action="uy", id=self.unknown_row, page=0, v=self.v["unknown"]).pack(),
            "recreate-show": RecreateCb(action="show", id=self.deal_row, v=self.v["deal"]).pack(),
            "recreate-go": RecreateCb(action="go", id=self.deal_row, v=self.v["deal"]).pack(),
            "tcmap-skip": TcMapCb(link=self.link_id, cid=0, v=self.v["map-skip"]).pack(),
            "tcmap": TcMapCb(link=self.link_id, cid=self.cid, v=self.v["map"]).pack(),
            **{f"repair-{a}-3c": data.pack() for a, data in repair.items()},
            **{f"checklist-{a}-3c": data.pack() for a, data in steps.items()},
            "checklist-ray-3c": ChecklistCb(
                action=ChecklistAction.RECREATE, id=self.checklist_id, v=self.v["checklist-deals"]
            ).pack(),
            "checklist-coy": ChecklistCb(
                action=ChecklistAction.CANCEL, id=self.checklist_id, list=self.list_id, v=listing
            ).pack(),
        }


async def versions(env: Env, world: World) -> dict[str, str]:
    """The version token of each of the owner's objects, as the bot computes it now."""
    async with env.rig.app.sessions() as session:
        conn, tc_conn = (
            await session.get(Connection, world.cid),
            await session.get(Connection, world.tc_cid),
        )
        checklist = await session.get(RecoveryChecklist, world.checklist_id)
        listing = await owned_listing(session, world.owner, world.list_id)
        return {
            "conn": tokens.connection_token(conn),
            "tc_conn": tokens.connection_token(tc_conn),
            "listing": listing.version,
            "orphan": tokens.listed_order_token(await session.get(ListedOrder, world.orphan_row)),
            "unknown": tokens.listed_order_token(await session.get(ListedOrder, world.unknown_row)),
            "deal": tokens.failed_deal_token(await session.get(FailedDeal, world.deal_row)),
            "map": tokens.mapping_token(world.link_id, world.account_id, conn),
            "map-skip": tokens.mapping_token(world.link_id, world.account_id, None),
            "checklist": tokens.checklist_token(checklist),
            "checklist-deals": tokens.failed_deals_token(await failed_since(session, checklist)),
        }


@pytest_asyncio.fixture(loop_scope="module")
async def world(env: Env) -> World:
    rig, binance, tc = env.rig, env.binance, env.tc
    key = binance.add_key(balances={"USDT": 10_000, "ETH": 5, "SOL": 10})
    orphan_order = binance.add_order(key.api_key, "ETH/USDT", "sell", "3700", "0.5", created_at=T0)
    binance.add_order(key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    cid = await link_key(env, env.owner, "Main", key)

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
            session, rig.app.vault, user_id=env.owner, credentials=credentials, label="3C", now=now
        )
        await session.flush()
        link = await save_account_link(
            session,
            user_id=env.owner,
            tc_connection_id=tc_connection.id,
            account=Account.from_json({"id": account_id, "name": "Main", "market_code": "binance"}),
            exchange_connection_id=cid,
            now=now,
        )
        deal_row = await store_failed_deal(
            session,
            user_id=env.owner,
            tc_connection_id=tc_connection.id,
            plan=recreate_params(item).to_dict(),
            error="Invalid API key",
            now=now,
        )
        account = {"tc_connection_id": tc_connection.id, "account_id": account_id}
        checklist = await open_checklist(session, user_id=env.owner, since=T0, now=now, **account)
        tc_cid, link_id, checklist_id = tc_connection.id, link.id, checklist.id

    listing = await env.rig.say(env.owner, "/orders")  # one exchange key: "Loading…", edited into the list
    await env.tg.wait_for(lambda: "📋" in listing.text)
    pressed = {b.text: OrdersCb.unpack(b.callback_data) for b in listing.buttons if b.callback_data}
    orphan, unknown = pressed["❌ Cancel 1"], pressed["⚠️ Cancel 2?"]
    status = await env.rig.say(env.owner, "/status")
    world = World(
        owner=env.owner,
        cid=cid,
        tc_cid=tc_cid,
        account_id=account_id,
        link_id=link_id,
        list_id=pressed["🔄 Refresh"].id,
        orphan_row=orphan.id,
        unknown_row=unknown.id,
        orphan_order=orphan_order,
        deal_row=deal_row,
        checklist_id=checklist_id,
        status=status,
        listing=listing,
        v={},
    )
    world.v = await versions(env, world)
    return world


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
        await env.press(env.owner, world.status, data)  # answered (maybe with a word) or ignored
    assert await snapshot(env) == before
    assert (deletes(env), threecommas_posts(env)) == (dels, posts)
    assert "Nothing to cancel" in (await env.say(env.owner, "/cancel")).text  # no wizard got started
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- other users' objects

SUCCESS_WORDS = (
    "Muted",
    "Removed",
    "Removing",
    "Checking",
    "Loading",
    "Sending",
    "Asking",
    "on again",
    "Cancelled",
    "Checked",
    "freed",
    "created",
    "→",
    "skipped",
    "New key for",
)


async def test_another_users_buttons_are_refused_and_change_nothing(env, world, caplog):
    stranger_cid = await link_key(env, env.other, "Theirs")
    page = await env.rig.say(env.other, "/status")
    env.rig.clock.advance(60)  # any write would now show in an updated_at
    before, dels, posts = await snapshot(env), deletes(env), threecommas_posts(env)
    answers = {}
    for name, data in world.buttons().items():
        answers[name] = await env.press(env.other, page, data)
    # The owner tries to map their 3Commas account onto the stranger's key.
    answers["tcmap-foreign"] = await env.press(
        env.owner, world.status, TcMapCb(link=world.link_id, cid=stranger_cid, v=world.v["map"]).pack()
    )
    assert await snapshot(env) == before
    assert (deletes(env), threecommas_posts(env)) == (dels, posts)
    assert world.orphan_order in env.binance.orders
    said = [a.text for a in answers.values() if a is not None] + [
        m.text for m in env.tg.bot_messages(env.other)
    ]
    assert not [s for s in said if any(word in s for word in SUCCESS_WORDS) and "Theirs" not in s], said
    assert not [m.text for m in env.tg.bot_messages(env.other) if "ETH/USDT" in m.text or "· Main" in m.text]
    assert "Nothing to cancel" in (await env.say(env.other, "/cancel")).text  # no Update wizard for them
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- deleted objects, replays


async def test_buttons_of_deleted_objects_and_replays_change_nothing(env, world, caplog):
    tg = env.tg
    # Refresh on a message deleted meanwhile: a fresh page instead of an edit.
    await env.rig.bot.delete_message(env.owner, world.status.message_id)
    tg.mark_read(env.owner)
    await env.press(env.owner, world.status, world.buttons()["conn-refresh"])
    assert "Your connections" in (await tg.wait_for_bot_message(env.owner)).text

    page = await env.say(env.owner, "/status")
    await env.press(env.owner, page, world.buttons()["conn-remove"])
    confirm = world.buttons()["conn-rm_yes"]
    assert (await env.press(env.owner, page, confirm)).text == "Removing…"
    assert (await env.press(env.owner, page, confirm)).text == OUT_OF_DATE.format("/status")

    env.rig.clock.advance(60)
    before, dels, posts = await snapshot(env), deletes(env), threecommas_posts(env)
    # Every button naming the removed key, its listing or its orders; the 3Commas key and its
    # failed deal are still there, so their buttons would rightly act.
    removed = {k: v for k, v in world.buttons().items() if not k.endswith("3c") and k != "tcmap-skip"}
    for name, data in removed.items():
        if not name.startswith("recreate"):
            await env.press(env.owner, world.listing, data)
    assert await snapshot(env) == before
    assert (deletes(env), threecommas_posts(env)) == (dels, posts)
    assert world.orphan_order in env.binance.orders
    async with env.rig.app.sessions() as session:
        removals = await session.scalar(
            text("SELECT count(*) FROM audit_log WHERE action = 'connection_removed' AND id >= :first"),
            {"first": env.first_audit},
        )
    assert removals == 1

    confirm_forget = await env.say(env.owner, "/forget")
    await env.rig.press(env.owner, confirm_forget, "Delete everything")
    await tg.wait_for(lambda: "deleted" in confirm_forget.text)
    gone = await snapshot(env)
    assert new_rows(env, gone, "connections") == [] and new_rows(env, gone, "failed_deals") == []
    for data in world.buttons().values():
        await env.press(env.owner, world.listing, data)
    await env.press(env.owner, confirm_forget, "forget:1")  # "Delete everything" once more
    assert await snapshot(env) == gone
    assert (deletes(env), threecommas_posts(env)) == (dels, posts)
    assert_clean(env, caplog)


@pytest.mark.parametrize(
    "button", ["orders-x", "conn-rm_yes", "recreate-go", "orders-ally"], ids=lambda b: b.replace("-", " ")
)
async def test_a_double_tap_acts_once(env, world, caplog, button):
    """Two taps of the same button in flight together: one action, two clean answers."""
    data = world.buttons()[button]
    target = world.status if button.startswith("conn") else world.listing
    if button == "conn-rm_yes":
        await env.press(env.owner, target, world.buttons()["conn-remove"])
    if button.startswith("orders"):
        env.binance.inject("latency", latency_ms=300, times=2)  # both taps are mid-verification together
    dels, posts = deletes(env), threecommas_posts(env)
    taps = [env.tap(env.owner, target.message_id, data) for _ in range(2)]
    await env.settle(*(update for update, _ in taps))
    answers = [env.tg.callback_answer(query) for _, query in taps]
    assert all(a is not None for a in answers), env.tg.transcript(env.owner)
    async with env.rig.app.sessions() as session:
        actions = list(
            await session.scalars(
                text("SELECT action FROM audit_log WHERE id >= :first ORDER BY id"),
                {"first": env.first_audit},
            )
        )
    if button in ("orders-x", "orders-ally"):
        assert world.orphan_order not in env.binance.orders
        assert deletes(env) - dels == 1, actions
        assert actions.count("order_cancel") == 1, actions
    elif button == "conn-rm_yes":
        assert actions.count("connection_removed") == 1
        assert answers[0].text == "Removing…"  # the second is answered too, and removes nothing
    else:
        assert threecommas_posts(env) - posts == 1
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- groups, channels, edits


async def test_groups_get_one_notice_each_and_channels_nothing(env, caplog):
    tg = env.tg
    sent = []
    group, supergroup, channel = env.group(100), env.group(200), env.group(300)
    for chat_id, kind in ((group, "group"), (supergroup, "supergroup")):
        sent.append(env.send(env.other, "hello", chat_type=kind, chat_id=chat_id))
        tg.make_bot_admin(chat_id)  # /link messages are removed: only an administrator may
        # A key pasted in a group is its own case (below): its sender is told to revoke it.
        for message in ("/start", "/status", "/link", "/link binance", "hello"):
            sent.append(env.send(env.owner, message, chat_type=kind, chat_id=chat_id))
            sent.append(env.send(env.other, message, chat_type=kind, chat_id=chat_id))
    await env.settle(*sent)
    for chat_id in (group, supergroup):
        [notice] = tg.bot_messages(chat_id)
        assert "private" in notice.text
    # A button pressed in a group (forged onto the notice) is answered, and does nothing.
    notice = tg.bot_messages(group)[0]
    forged = ConnCb(action="refresh", cid=1, v="").pack()
    update, query = env.tap(env.owner, notice.message_id, forged, chat_id=group)
    await env.settle(update)
    assert "private" in tg.callback_answer(query).text

    # Channel posts are not even requested from Telegram (allowed_updates), so the local server
    # drops them; a later private message shows the bot is past them. Fed to the dispatcher
    # directly, as a webhook with a wider allowed_updates would, they still get no answer.
    post = tg.user_sends(env.owner, "/start", chat_type="channel", chat_id=channel)
    await env.rig.say(env.owner, "/help")
    await env.rig.dp.feed_raw_update(env.rig.bot, post)
    assert tg.bot_messages(channel) == []
    assert len(env.binance.requests) == 0
    assert [m for m in tg.chat(group) if m.text.startswith("/link") and not m.deleted] == []
    assert new_rows(env, await snapshot(env), "connections") == []
    assert_clean(env, caplog)


@pytest.mark.attack("a key pasted in a group stays there and its owner is never told to revoke it")
@pytest.mark.parametrize("admin", [True, False], ids=["delete-allowed", "delete-refused"])
@pytest.mark.parametrize("reachable", [True, False], ids=["told-privately", "told-in-group"])
@pytest.mark.parametrize("how", ["message", "edit"])
async def test_a_key_pasted_in_a_group_is_deleted_if_allowed_and_its_owner_told_to_revoke_it(
    env, caplog, admin, reachable, how
):
    tg, key, group = env.tg, env.binance.add_key(), env.group(700)
    if reachable:
        tg.add_user(env.owner)  # started the bot privately before
    name = "a&b<i> <B"  # shown as typed in the group, never parsed
    await env.settle(env.send(env.owner, "hello all", chat_type="supergroup", chat_id=group, first_name=name))
    if admin:
        tg.make_bot_admin(group)
    carrying = f"my binance key {key.api_key} and secret {key.secret}"
    if how == "edit":
        hello = tg.user_messages(group)[-1]
        await env.settle(
            int(tg.user_edits(env.owner, hello.message_id, carrying, chat_id=group)["update_id"])
        )
    else:
        await env.settle(env.send(env.owner, carrying, chat_type="supergroup", chat_id=group))
    [pasted] = [m for m in tg.chat(group) if key.api_key in m.text]
    assert pasted.deleted is admin
    [warning] = [m for m in tg.bot_messages(env.owner if reachable else group) if "exposed" in m.text]
    assert "delete it on the exchange" in warning.text and ("I deleted it" in warning.text) is admin
    assert (name in warning.text) is not reachable
    assert (f"Supergroup {group}" in warning.text) is reachable
    shown = [r.params.get("text", "") for r in tg.requests]
    assert not [s for s in shown if key.api_key[:12] in s or key.secret[:12] in s]
    assert len(env.binance.requests) == 0
    expected = {"Bad Request: message can't be deleted"} if not admin else set()
    expected |= set() if reachable else {"Forbidden: bot can't initiate conversation with a user"}
    assert {r.description for r in tg.errors} == expected, tg.transcript(group)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_edited_message_is_never_taken_as_a_wizard_answer(env, caplog):
    """Decision: an edit is never input. The bot receives edits only so the secret guard can delete
    one that adds a key; it never advances the wizard or reaches an exchange, and the wizard goes
    on waiting for a new message."""
    tg, key = env.tg, env.binance.add_key()
    await env.rig.say(env.owner, "/link binance")
    await env.rig.say(env.owner, "Main")
    label = tg.user_messages(env.owner)[-1]
    edited = tg.user_edits(env.owner, label.message_id, key.api_key)
    command = tg.user_messages(env.owner)[0]
    edited_command = tg.user_edits(env.owner, command.message_id, f"/link binance {key.api_key} {key.secret}")
    await env.settle(int(edited["update_id"]), int(edited_command["update_id"]))
    assert label.deleted and command.deleted  # both now carry a key
    assert len(env.binance.requests) == 0
    # The wizard still waits for the key, as a new message.
    assert "Got the key" in (await env.rig.say(env.owner, key.api_key)).text
    assert "linked" in (await env.rig.say(env.owner, key.secret)).text
    [row] = new_rows(env, await snapshot(env), "connections")
    assert "Main" in row
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- labels with markup

LABELS = [
    "<b>bold</b>",
    "<script>alert(1)</script>",
    "Tom & Jerry",
    "*bold* _it_ `code`",
    "[x](https://example.com)",
    '</code></b><a href="x">',
    "&amp; &lt;b&gt; &#60;",
    "🚀 Main",
]


async def test_markup_in_labels_is_shown_exactly_as_typed(env, caplog):
    tg = env.tg
    for label in LABELS:
        await link_key(env, env.owner, label)
    replies = [m for m in tg.bot_messages(env.owner) if "linked" in m.text]
    assert [label in m.text for label, m in zip(LABELS, replies, strict=True)] == [True] * len(LABELS)
    page = await env.rig.say(env.owner, "/status")
    for label in LABELS:
        assert label in page.text, label
    texts = [page.text]
    for number in range(1, len(LABELS) + 1):  # the Remove question names each one
        await env.rig.press(env.owner, page, f"{number} Remove")
        await tg.wait_for(lambda n=number: LABELS[n - 1] in page.text and "Remove" in page.text)
        texts.append(page.text)
        await env.rig.press(env.owner, page, "Keep it")
        await tg.wait_for(lambda: "Your connections" in page.text)
    buttons = [b.text for b in (await env.rig.say(env.owner, "/mute")).buttons]
    buttons += [b.text for b in (await env.rig.say(env.owner, "/orders")).buttons]
    for label in LABELS:  # buttons are plain text: shown as typed, not as HTML escapes
        assert sum(label in b for b in buttons) == 2, (label, buttons)
    assert_clean(env, caplog)


async def test_labels_that_are_not_one_line_of_text_are_refused(env, caplog):
    await env.rig.say(env.owner, "/link binance")
    for label in ("\u200fRTL mark", "line\nbreak", "bell\x07", "nul\x00", "\u202eevil"):
        assert "ordinary text" in (await env.rig.say(env.owner, label)).text, label
    assert "Fast Connect" in (await env.rig.say(env.owner, "ok label")).text
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- 50 taps at once


async def test_fifty_concurrent_refresh_taps_stay_bounded_and_consistent(env, caplog):
    cid = await link_key(env, env.owner)
    page = await env.rig.say(env.owner, "/status")
    env.rig.clock.advance(120)
    before = len(env.binance.requests)
    data = await env.rig.connection_button("refresh", cid)
    taps = [env.tap(env.owner, page.message_id, data) for _ in range(50)]  # one getUpdates batch
    await env.settle(*(update for update, _ in taps))
    answers = [env.tg.callback_answer(query) for _, query in taps]
    assert all(a is not None for a in answers), env.tg.transcript(env.owner)
    probes = env.binance.requests[before:]
    print(f"\n50 taps -> {len(probes)} exchange requests")
    assert len(probes) <= 6, [r.path for r in probes]  # one probe is two requests; taps share it
    async with env.rig.app.sessions() as session:
        row = await session.get(Connection, cid)
    assert (row.verdict, row.last_check_at) == ("ok", env.rig.clock.now())  # what the one probe wrote
    assert "🟢" in page.text and "last OK: 0 s ago" in page.text and "checking" not in page.text
    assert_clean(env, caplog)


async def test_a_new_users_first_messages_arriving_together_are_all_answered(env, caplog):
    """Someone taps Start and types /start at once: both arrive before their user row exists."""
    sent = [env.send(env.other, message) for message in ("/start", "/start", "/help", "/status", "/cancel")]
    await env.settle(*sent)
    assert len(env.tg.bot_messages(env.other)) == 5, env.tg.transcript(env.other)
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- ids never reused


def _button(message: ChatMessage, text_part: str) -> str:
    [data] = [b.callback_data for b in message.buttons if text_part in b.text and b.callback_data][:1]
    return data


async def _confirm_cancel_of_first(env: Env, listing: ChatMessage) -> str:
    """Open the "cancel it anyway?" question of order 1; returns its "Yes, cancel this order" data."""
    await env.press(env.owner, listing, _button(env.tg.message(env.owner, listing.message_id), "Cancel 1?"))
    return _button(env.tg.message(env.owner, listing.message_id), "Yes, cancel this order")


@pytest.mark.attack("old 'Yes, remove' after remove + re-link removes the new connection")
async def test_an_old_remove_confirmation_never_removes_a_newer_connection(env, caplog):
    first = await link_key(env, env.owner, "Old")
    page = await env.say(env.owner, "/status")
    await env.press(env.owner, page, await env.rig.connection_button("remove", first))
    confirm = _button(env.tg.message(env.owner, page.message_id), "Yes, remove")
    assert (await env.press(env.owner, page, confirm)).text == "Removing…"
    second = await link_key(env, env.owner, "New")
    assert second != first  # SQLite AUTOINCREMENT: a deleted row's id is never handed out again
    answer = await env.press(env.owner, page, confirm)  # the old button, on the old message
    assert answer is not None and "Removed." not in answer.text
    [row] = new_rows(env, await snapshot(env), "connections")
    assert "New" in row
    assert_clean(env, caplog)


@pytest.mark.attack("old 'Yes, cancel this order' after re-link cancels another order")
async def test_an_old_cancel_confirmation_never_cancels_an_order_of_a_newer_listing(env, caplog):
    old_key = env.binance.add_key(balances={"USDT": 1000})
    env.binance.add_order(old_key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    cid = await link_key(env, env.owner, "Old", old_key)
    listing = await env.say(env.owner, "/orders")
    await env.tg.wait_for(lambda: "📋" in listing.text)
    stale = await _confirm_cancel_of_first(env, listing)
    assert "SOL/USDT" in env.tg.message(env.owner, listing.message_id).text

    page = await env.say(env.owner, "/status")
    await env.press(env.owner, page, await env.rig.connection_button("remove", cid))
    await env.press(env.owner, page, _button(env.tg.message(env.owner, page.message_id), "Yes, remove"))
    new_key = env.binance.add_key(balances={"BTC": 1})
    btc = env.binance.add_order(new_key.api_key, "BTC/USDT", "sell", "70000", "0.5", created_at=T0)
    await link_key(env, env.owner, "New", new_key)
    fresh = await env.say(env.owner, "/orders")
    await env.tg.wait_for(lambda: "BTC/USDT" in fresh.text)

    dels = deletes(env)
    answer = await env.press(env.owner, listing, stale)
    assert answer is not None and "Cancelled" not in answer.text
    assert deletes(env) == dels and btc in env.binance.orders  # no DELETE for the BTC sell
    assert_clean(env, caplog)


@pytest.mark.attack("old 'Yes, cancel this order' after a re-listing a day later")
async def test_relisting_after_a_day_never_reuses_row_ids(env, caplog):
    key = env.binance.add_key(balances={"USDT": 1000, "BTC": 1})
    sol = env.binance.add_order(key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    await link_key(env, env.owner, "Main", key)
    listing = await env.say(env.owner, "/orders")
    await env.tg.wait_for(lambda: "📋" in listing.text)
    stale = await _confirm_cancel_of_first(env, listing)

    env.binance.cancel_order(key.api_key, sol)  # the user cancelled it on the exchange
    btc = env.binance.add_order(key.api_key, "BTC/USDT", "sell", "70000", "0.5", created_at=T0)
    env.rig.clock.advance(25 * 3600)  # the next listing prunes the old one
    fresh = await env.say(env.owner, "/orders")
    await env.tg.wait_for(lambda: "BTC/USDT" in fresh.text)

    dels = deletes(env)
    answer = await env.press(env.owner, listing, stale)
    assert answer is not None and "Cancelled" not in answer.text
    assert deletes(env) == dels and btc in env.binance.orders
    assert_clean(env, caplog)


# ----------------------------------------------------------------------- objects changed under the same id


async def _new_key(env: Env, cid: int) -> None:
    """The user put another key into the connection (Update API key): same id, new version."""
    async with env.rig.app.sessions.begin() as session:
        connection = await session.get(Connection, cid)
        fresh = Credentials("N" * 24 + str(cid), "S" * 32)
        await replace_credentials(session, env.rig.app.vault, connection, fresh, env.rig.clock.now())


async def _changed(env: Env, model: type[ListedOrder] | type[FailedDeal], row_id: int, **values: Any) -> None:
    """The row now holds something else (as a reused id would have): same id, other content."""
    async with env.rig.app.sessions.begin() as session:
        row = await session.get(model, row_id)
        for column, value in values.items():
            setattr(row, column, value)


CHANGES = {
    "new key": lambda env, w: _new_key(env, w.cid),
    "new 3Commas key": lambda env, w: _new_key(env, w.tc_cid),
    "other order": lambda env, w: _changed(env, ListedOrder, w.orphan_row, symbol="BTC/USDT", amount="0.5"),
    "other unknown order": lambda env, w: _changed(env, ListedOrder, w.unknown_row, price="1"),
    "other parameters": lambda env, w: _changed(env, FailedDeal, w.deal_row, params={"source_ref": "deal:1"}),
}
OUT_OF_DATE_BUTTONS = {
    # button: (what changed since it was drawn, the command the answer points to)
    "conn-refresh": ("new key", "/status"),
    "conn-update": ("new key", "/status"),
    "conn-rm_yes": ("new key", "/status"),
    "conn-orders": ("new key", "/status"),
    "conn-mute": ("new key", "/status"),
    "unmute": ("new key", "/mute"),
    "tcmap": ("new key", "/link3c"),
    "refresh-3c": ("new 3Commas key", "/status"),
    "repair-go-3c": ("new 3Commas key", "/status"),
    "repair-check-3c": ("new 3Commas key", "/status"),
    "repair-list-3c": ("new 3Commas key", "/status"),
    "orders-x": ("other order", "/orders"),
    "orders-ally": ("other order", "/orders"),
    "orders-rf": ("other order", "/orders"),
    "orders-uy": ("other unknown order", "/orders"),
    "recreate-show": ("other parameters", "/status"),
    "recreate-go": ("other parameters", "/status"),
    "checklist-ray-3c": ("other parameters", "/status"),
    "checklist-coy": ("other order", "/status"),
}


@pytest.mark.attack("an old button whose object changed under the same id acts on the new one")
@pytest.mark.parametrize("button", list(OUT_OF_DATE_BUTTONS))
async def test_an_old_button_whose_object_changed_is_out_of_date_and_does_nothing(env, world, caplog, button):
    change, command = OUT_OF_DATE_BUTTONS[button]
    old = world.buttons()[button]
    await CHANGES[change](env, world)
    env.rig.clock.advance(60)  # any write would now show in an updated_at
    before, sent = await snapshot(env), (len(env.binance.requests), len(env.tc.requests))
    answer = await env.press(env.owner, world.listing, old)
    assert answer is not None and answer.text == OUT_OF_DATE.format(command)
    assert await snapshot(env) == before
    assert (len(env.binance.requests), len(env.tc.requests)) == sent  # no DELETE, no create, nothing
    assert "Nothing to cancel" in (await env.say(env.owner, "/cancel")).text  # no wizard was started
    assert_clean(env, caplog)


SLOW_BUTTONS = ["conn-refresh", "conn-orders", "orders-rf", "orders-ally", "checklist-ra-3c"]


@pytest.mark.attack("a slow exchange lets Telegram's callback query expire unanswered")
@pytest.mark.parametrize("button", SLOW_BUTTONS)
async def test_a_tap_is_answered_before_its_work_waits_for_the_exchange(env, world, caplog, button):
    env.binance.inject("timeout")  # every private request hangs until released
    update, query = env.tap(env.owner, world.listing.message_id, world.buttons()[button])
    await env.tg.wait_for(lambda: env.tg.callback_answer(query))
    assert update not in env.tracker.done  # answered while its work still waits for Binance
    env.binance.clear_faults()
    env.binance.release_hung()
    await env.settle(update)
    assert_clean(env, caplog)


# ----------------------------------------------------------------------------- secrets never stay in chat

SECRET_MESSAGES = {
    # name: (messages first, the message carrying a key; {key} and {secret} are filled in)
    "link3c-one-line": ([], "/link3c {key} {secret}"),
    "Link-capitalised": ([], "/Link binance {key} {secret}"),
    "link-without-exchange": ([], "/link {key}"),
    "pasted-without-wizard": ([], "{key} {secret}"),
    "after-another-command": ([], "/status {key}"),
    "label-step": (["/link binance"], "{key}"),
}


@pytest.mark.attack("a message carrying a key stays in the chat or is echoed")
@pytest.mark.parametrize("case", list(SECRET_MESSAGES))
async def test_a_message_that_carries_a_key_is_deleted_and_never_echoed(env, caplog, case):
    before, carrying = SECRET_MESSAGES[case]
    key = env.binance.add_key()
    for message in before:
        await env.say(env.owner, message)
    await env.settle(env.send(env.owner, carrying.format(key=key.api_key, secret=key.secret)))
    [sent] = [m for m in env.tg.user_messages(env.owner) if key.api_key in m.text]
    assert sent.deleted, env.tg.transcript(env.owner)
    shown = [r.params.get("text", "") for r in env.tg.requests]
    assert not [s for s in shown if key.api_key[:16] in s or key.secret[:16] in s]
    assert_clean(env, caplog)


@pytest.mark.attack("a key added to the chat by editing an old message")
async def test_an_edit_that_adds_a_key_is_deleted(env, caplog):
    key = env.binance.add_key()
    await env.say(env.owner, "hello")
    hello = env.tg.user_messages(env.owner)[-1]
    edit = env.tg.user_edits(env.owner, hello.message_id, f"my key {key.api_key}")
    await env.settle(int(edit["update_id"]))
    assert env.tg.message(env.owner, hello.message_id).deleted
    assert len(env.binance.requests) == 0  # an edit is never input
    assert_clean(env, caplog)


@pytest.mark.attack("a secret starting with '/' is never taken and the wizard hangs")
async def test_wizards_take_secrets_that_start_with_a_slash(env, caplog):
    key = env.binance.add_key(secret="/" + "Qx7pL2vN9aR4tY6u" * 4, balances={"USDT": 500})
    await env.say(env.owner, "/link binance")
    await env.say(env.owner, "Main")
    await env.say(env.owner, key.api_key)
    assert "linked" in (await env.say(env.owner, key.secret)).text, env.tg.transcript(env.owner)
    tc_key = env.tc.add_key(secret="/" + "b3" * 32)
    await env.say(env.owner, "/link3c")
    await env.say(env.owner, tc_key.api_key)
    reply = await env.say(env.owner, tc_key.secret)
    assert "linked" in reply.text.lower() or "account" in reply.text.lower(), env.tg.transcript(env.owner)
    assert any(r.path.endswith("/accounts") for r in env.tc.requests), env.tc.requests
    carrying = [m for m in env.tg.user_messages(env.owner) if m.text in (key.secret, tc_key.secret)]
    assert len(carrying) == 2 and all(m.deleted for m in carrying), env.tg.transcript(env.owner)
    assert_clean(env, caplog)
