"""Durable delivery through the local Telegram: pacing, 429, 403, outages, restarts.

Each backend's database is created and migrated once for the module and emptied before every
test (:func:`engine`): a new PostgreSQL database and its migrations took longer than most tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties

from bot.app import make_context
from bot.callbacks import ConnCb
from bot.context import AppContext
from bot.sender import Sender
from bot.settings import Settings
from sandbox.processes import drop_pg_database
from sandbox.telegram import LocalTelegram, RateLimits
from services.core.clock import FakeClock
from services.core.verdicts import Verdict
from services.monitoring import outbox
from services.monitoring.events import Alert, Notice, Recovery, Target, to_payload
from services.storage.db import create_engine, is_sqlite
from services.storage.models import Base, User
from services.storage.users import get_or_create_user
from tests.conftest import postgres_unreachable_reason
from tests.schema import migrated_pg_database, with_schema


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory) -> AsyncIterator[str]:
    """One migrated database per backend for the module (PostgreSQL skipped, visibly, only when
    unreachable); it holds only a URL, so tests run in loops of their own."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('delivery') / 'keysentry.db'}"
        await with_schema(url)
        yield url
        return
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    url = await migrated_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def engine(database_url: str):
    """The module's database as a new one is: every table empty, ids counting from 1 again."""
    engine = create_engine(database_url)
    tables = [table.name for table in Base.metadata.sorted_tables]
    async with engine.begin() as connection:
        for table in reversed(tables):  # children first: foreign keys are on
            await connection.exec_driver_sql(f"DELETE FROM {table}")
        if is_sqlite(database_url):
            await connection.exec_driver_sql("DELETE FROM sqlite_sequence")
        else:  # (TRUNCATE … RESTART IDENTITY takes ~0.3 s: new files for every table)
            sequences = await connection.exec_driver_sql(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            )
            for (sequence,) in sequences.all():
                await connection.exec_driver_sql(f"ALTER SEQUENCE {sequence} RESTART")
    try:
        yield engine
    finally:
        await engine.dispose()


@dataclass
class Rig:
    app: AppContext
    tg: LocalTelegram
    bot: Bot
    clock: FakeClock

    def sender(self, name: str = "w1", per_second: int = 25, paid_per_second: int = 0) -> Sender:
        return Sender(self.app, self.bot, name, per_second=per_second, paid_per_second=paid_per_second)

    async def alert(self, user_id: int, label: str, *, verdict: str = "key_invalid") -> None:
        await self.alerts([(user_id, label)], verdict=verdict)

    async def alerts(self, alerts: Sequence[tuple[int, str]], *, verdict: str = "key_invalid") -> None:
        """An alert for each (user, label), all in one transaction (a burst costs one commit)."""
        async with self.app.sessions.begin() as session:
            for user_id, label in alerts:
                await get_or_create_user(session, user_id, "en", self.clock.now())
                outbox.enqueue(
                    session,
                    user_id=user_id,
                    kind="alert",
                    payload={
                        "type": "alert",
                        "connection_id": 1,
                        "exchange": "binance",
                        "label": label,
                        "verdict": verdict,
                        "detail": "",
                        "since": self.clock.now().isoformat(),
                    },
                    now=self.clock.now(),
                )
        for user_id, _ in alerts:
            self.tg.add_user(user_id)

    async def pending(self) -> int:
        async with self.app.sessions() as session:
            return await outbox.depth(session)

    async def drain(self, *senders: Sender, max_seconds: int = 600, step: float = 1.0) -> float:
        """Run the senders ``step`` by ``step`` (clock-driven) until the outbox is empty; returns
        the clock seconds it took."""
        for tick in range(int(max_seconds / step)):
            for sender in senders:
                await sender.run_once()
            if not await self.pending():
                return tick * step
            self.clock.advance(step)
        raise AssertionError("outbox did not drain")


@contextlib.asynccontextmanager
async def delivery_rig(sessions, engine, vault, clock: FakeClock, limits: RateLimits) -> AsyncIterator[Rig]:
    tg = LocalTelegram(clock=lambda: clock.now().timestamp(), rate_limits=limits)
    await tg.start()
    bot = tg.make_bot(default=DefaultBotProperties(parse_mode="HTML"))
    settings = Settings(_env_file=None, bot_token=tg.token, telegram_api_url=tg.url)
    app = make_context(settings, engine, clock=clock, vault=vault)
    try:
        yield Rig(app, tg, bot, clock)
    finally:
        await bot.session.close()
        await tg.close()


@pytest.fixture
async def rig(sessions, engine, vault, clock):
    async with delivery_rig(sessions, engine, vault, clock, RateLimits(bot_per_second=20)) as r:
        yield r


def _sends(tg: LocalTelegram) -> list:
    return [r for r in tg.requests if r.method == "sendMessage"]


async def _alerts(rig: Rig, users: range) -> None:
    await rig.alerts([(uid, f"key-{uid}") for uid in users])


@pytest.mark.slow
async def test_burst_of_400_alerts_survives_429s_without_loss_or_tight_loop(rig):
    users = range(1, 401)
    await _alerts(rig, users)
    sender = rig.sender(per_second=25)  # faster than this local Telegram allows: it must answer 429
    seconds = await rig.drain(sender, step=0.2)  # the sender sends its rate spread over the second
    delivered = {m.chat_id for uid in users for m in rig.tg.bot_messages(uid)}
    assert delivered == set(users)
    assert all(len(rig.tg.bot_messages(uid)) == 1 for uid in users)  # no duplicates
    rejected = [r for r in _sends(rig.tg) if r.status == 429]
    assert rejected, "the burst should have met Telegram's flood control"
    assert len(_sends(rig.tg)) - 400 == len(rejected)  # every extra request is one obeyed 429
    # No tight loop: after a 429 the sender waits retry_after, so each second only the round that
    # met the limit was refused — at most what it sent over Telegram's 20/s.
    assert len(rejected) <= (25 - 20) * (seconds + 1)
    assert sender.stats.sent == 400


async def test_alerts_of_one_user_within_the_window_arrive_as_one_message(rig):
    for label in ("Main", "Sub", "Futures"):
        await rig.alert(7, label)
    await rig.drain(rig.sender())
    [message] = rig.tg.bot_messages(7)
    for label in ("Main", "Sub", "Futures"):
        assert label in message.text
    assert "Update API key" in " ".join(b.text for b in message.buttons)


async def test_user_who_blocked_the_bot_is_marked_and_not_retried(rig):
    await rig.alert(5, "Main")
    rig.tg.block_user(5)
    await rig.drain(rig.sender())
    async with rig.app.sessions() as session:
        assert (await session.get(User, 5)).blocked
    assert len([r for r in _sends(rig.tg) if r.status == 403]) == 1


async def test_telegram_outage_backlog_is_delivered_in_order_after_it(rig):
    rig.tg.set_down(True)
    await rig.alert(3, "first")
    sender = rig.sender()
    await sender.run_once()
    assert not rig.tg.bot_messages(3)
    rig.clock.advance(31)
    await rig.alert(3, "second")
    rig.tg.set_down(False)
    await rig.drain(sender)
    texts = [m.text for m in rig.tg.bot_messages(3)]
    joined = "\n".join(texts)
    assert joined.index("first") < joined.index("second")
    assert joined.count("first") == 1


async def test_alert_committed_before_a_crash_is_delivered_once_after_restart(rig):
    await rig.alert(9, "Main")
    # A sender claims the row and dies before sending: its lease expires, a new process delivers.
    await outbox.claim(rig.app.sessions, "crashed-worker", rig.clock.now())
    restarted = rig.sender("restarted")
    await restarted.run_once()
    assert not rig.tg.bot_messages(9)  # the dead sender's lease still holds
    rig.clock.advance(61)
    await rig.drain(restarted)
    assert len(rig.tg.bot_messages(9)) == 1
    await rig.drain(restarted)
    assert len(rig.tg.bot_messages(9)) == 1


async def _confirmed(rig, user_id: int, label: str, cid: int = 1, *, recovered: bool = False) -> None:
    """What the poller does when it confirms an alert (or a recovery) for ``user_id`` now."""
    now = rig.clock.now()
    event = Recovery(Verdict.KEY_INVALID, now, timedelta(seconds=20)) if recovered else None
    notice = Notice(Target(cid, "binance", label), event or Alert(Verdict.KEY_INVALID, "", now))
    async with rig.app.sessions.begin() as session:
        await get_or_create_user(session, user_id, "en", now)
        await outbox.enqueue_grouped(session, [(user_id, to_payload(notice))], kind="alert", now=now)
    rig.tg.add_user(user_id)


def _edits(tg: LocalTelegram) -> list:
    return [r for r in tg.requests if r.method == "editMessageText"]


def _cids(message) -> set[int]:
    return {ConnCb.unpack(b.callback_data).cid for b in message.buttons if b.callback_data}


async def test_alerts_confirmed_within_the_window_are_folded_into_the_first_message(rig):
    sender = rig.sender()
    await _confirmed(rig, 7, "Main", cid=1)
    await sender.run_once()
    [first] = rig.tg.bot_messages(7)  # no grouping wait before the first word
    assert "Main" in first.text and not _edits(rig.tg)
    rig.clock.advance(10)
    await _confirmed(rig, 7, "Sub", cid=2)
    await sender.run_once()
    [message] = rig.tg.bot_messages(7)  # still one message in the chat, edited in place
    assert message.message_id == first.message_id and message.edits == 1
    assert [r.status for r in _edits(rig.tg)] == [200] and len(_sends(rig.tg)) == 1
    assert "Main" in message.text and "Sub" in message.text
    assert _cids(message) == {1, 2}  # both connections' buttons, re-rendered with the text
    rig.clock.advance(5)
    await _confirmed(rig, 7, "Main", cid=1, recovered=True)  # recovery likewise
    await sender.run_once()
    [message] = rig.tg.bot_messages(7)
    assert message.edits == 2 and "works again" in message.text and "Sub" in message.text
    rig.clock.advance(40)
    await _confirmed(rig, 7, "Spot", cid=3)  # the window is over: a new first word, at once
    await sender.run_once()
    assert "Spot" in rig.tg.bot_messages(7)[-1].text and len(rig.tg.bot_messages(7)) == 2
    assert await rig.pending() == 0


async def test_a_fold_whose_message_the_user_deleted_goes_out_as_a_new_message(rig):
    sender = rig.sender()
    await _confirmed(rig, 7, "Main", cid=1)
    await sender.run_once()
    [first] = rig.tg.bot_messages(7)
    rig.tg.user_deletes(7, first.message_id)
    rig.clock.advance(10)
    await _confirmed(rig, 7, "Sub", cid=2)
    await rig.drain(sender)
    [message] = rig.tg.bot_messages(7)
    assert message.message_id != first.message_id and "Sub" in message.text and "Main" not in message.text
    assert [r.status for r in _edits(rig.tg)] == [400]


async def test_a_fold_waits_for_its_first_message_held_by_a_telegram_outage(rig):
    sender = rig.sender()
    rig.tg.set_down(True)
    await _confirmed(rig, 7, "Main", cid=1)
    await sender.run_once()  # the first message meets an outage: retried with back-off
    rig.tg.set_down(False)
    rig.clock.advance(1)
    await _confirmed(rig, 7, "Sub", cid=2)
    await sender.run_once()
    assert not rig.tg.bot_messages(7)  # the follow-up never shows before the first word
    await rig.drain(sender)
    [message] = rig.tg.bot_messages(7)
    assert "Main" in message.text and "Sub" in message.text and not _edits(rig.tg)


async def test_another_users_window_never_delays_a_user(rig):
    sender = rig.sender()
    await _confirmed(rig, 7, "Main")
    rig.clock.advance(3)
    await _confirmed(rig, 7, "Sub")
    await _confirmed(rig, 8, "Main")
    await sender.run_once()
    assert len(rig.tg.bot_messages(7)) == 1 and len(rig.tg.bot_messages(8)) == 1


async def test_sliding_window_never_exceeds_the_rate_in_any_second(sessions, engine, vault, clock):
    """Pacing over the moments sends happened: at exactly Telegram's rate, not one 429 — a window
    that restarts every second would let a burst at its end and one at the next start through."""
    async with delivery_rig(sessions, engine, vault, clock, RateLimits(bot_per_second=10)) as rig:
        await _alerts(rig, range(1, 101))
        seconds = await rig.drain(rig.sender(per_second=10), step=0.1)
        assert {r.status for r in _sends(rig.tg)} == {200}
        assert 9 <= seconds <= 11  # 100 messages at 10/s: the whole budget is used


async def test_senders_share_the_rate_and_a_429_pause_through_the_database(sessions, engine, vault, clock):
    async with delivery_rig(sessions, engine, vault, clock, RateLimits(bot_per_second=10)) as rig:
        await _alerts(rig, range(1, 101))
        a, b = rig.sender("a", per_second=10), rig.sender("b", per_second=10)
        await a.run_once()  # a alone so far: it takes the whole second's budget
        rig.clock.advance(1)
        seconds = await rig.drain(a, b, step=0.1)
        assert {r.status for r in _sends(rig.tg)} == {200}  # 5/s each once both are known
        assert 8 <= seconds <= 10  # the other 90 at 10/s in all
        assert a.stats.sent > 30 and b.stats.sent > 30

        # A 429 told to one sender pauses the other too.
        await _alerts(rig, range(101, 111))
        rig.clock.advance(1)
        rig.tg.set_rate_limits(RateLimits(bot_per_second=1))
        await a.run_once()
        rig.clock.advance(0.2)  # a's next round, still within Telegram's second
        await a.run_once()
        assert a.stats.rate_limited
        rig.tg.set_rate_limits(RateLimits(bot_per_second=10))
        rig.clock.advance(0.5)  # within the 1 s retry_after
        before = len(_sends(rig.tg))
        await b.run_once()  # b's refresh reads a's pause from the database
        await a.run_once()
        assert len(_sends(rig.tg)) == before


async def test_riskiest_users_are_told_first_when_a_backlog_forms(sessions, engine, vault, clock):
    """Users with funds locked by open orders come last in row order, yet are sent first."""
    from services.core.vault import Credentials
    from services.storage.connections import new_connection

    async with delivery_rig(sessions, engine, vault, clock, RateLimits(bot_per_second=10)) as rig:
        await _alerts(rig, range(1, 101))
        risky = set(range(91, 101))
        async with rig.app.sessions.begin() as session:
            for uid in risky:
                connection = new_connection(
                    vault, user_id=uid, exchange="binance", label="Main",
                    credentials=Credentials("k" * 64, "s" * 64), now=clock.now(),
                )  # fmt: skip
                connection.balances = {"USDT": {"free": 100.0, "total": 900.0}}
                session.add(connection)
        sender = rig.sender(per_second=10)
        for _ in range(3):  # rounds as the window allows: 4, 4, then the 2 left of the second's 10
            await sender.run_once()
            rig.clock.advance(0.4)
        assert {int(r.params["chat_id"]) for r in _sends(rig.tg)} == risky


async def test_paid_broadcasts_carry_the_backlog_beyond_the_free_rate(sessions, engine, vault, clock):
    async with delivery_rig(sessions, engine, vault, clock, RateLimits(bot_per_second=10)) as rig:
        await _alerts(rig, range(1, 101))
        sender = rig.sender(per_second=10, paid_per_second=40)
        seconds = await rig.drain(sender, step=0.1)
        assert {r.status for r in _sends(rig.tg)} == {200}
        assert seconds <= 2.5  # 50 a second instead of 10
        paid = [r for r in _sends(rig.tg) if r.params.get("allow_paid_broadcast") == "true"]
        assert len(paid) == sender.stats.paid == rig.tg.paid_broadcasts >= 70
