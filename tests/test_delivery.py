"""Durable delivery through the local Telegram: pacing, 429, 403, outages, restarts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties

from bot.app import make_context
from bot.context import AppContext
from bot.sender import Sender
from bot.settings import Settings
from sandbox.telegram import LocalTelegram, RateLimits
from services.core.clock import FakeClock
from services.core.verdicts import Verdict
from services.monitoring import outbox
from services.monitoring.events import Alert, Notice, Target, to_payload
from services.storage.models import User
from services.storage.users import get_or_create_user


@dataclass
class Rig:
    app: AppContext
    tg: LocalTelegram
    bot: Bot
    clock: FakeClock

    def sender(self, name: str = "w1", per_second: int = 25) -> Sender:
        return Sender(self.app, self.bot, name, per_second=per_second)

    async def alert(self, user_id: int, label: str, *, verdict: str = "key_invalid") -> None:
        async with self.app.sessions.begin() as session:
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
        self.tg.add_user(user_id)

    async def pending(self) -> int:
        async with self.app.sessions() as session:
            return await outbox.depth(session)

    async def drain(self, *senders: Sender, max_seconds: int = 600) -> int:
        """Run the senders second by second (clock-driven) until the outbox is empty."""
        for second in range(max_seconds):
            for sender in senders:
                await sender.run_once()
            if not await self.pending():
                return second
            self.clock.advance(1)
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


@pytest.mark.slow
async def test_burst_of_1000_alerts_survives_429s_without_loss_or_tight_loop(rig):
    users = range(1, 1001)
    for uid in users:
        await rig.alert(uid, f"key-{uid}")
    sender = rig.sender(per_second=25)  # faster than this local Telegram allows: it must answer 429
    seconds = await rig.drain(sender)
    delivered = {m.chat_id for uid in users for m in rig.tg.bot_messages(uid)}
    assert delivered == set(users)
    assert all(len(rig.tg.bot_messages(uid)) == 1 for uid in users)  # no duplicates
    rejected = [r for r in _sends(rig.tg) if r.status == 429]
    assert rejected, "the burst should have met Telegram's flood control"
    assert len(_sends(rig.tg)) - 1000 == len(rejected)  # every extra request is one obeyed 429
    assert len(rejected) <= seconds  # at most one 429 per second: the sender pauses, no tight loop
    assert sender.stats.sent == 1000


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


async def _confirmed(rig, user_id: int, label: str) -> None:
    """What the poller does when it confirms an alert for ``user_id`` now."""
    notice = Notice(Target(1, "binance", label), Alert(Verdict.KEY_INVALID, "", rig.clock.now()))
    async with rig.app.sessions.begin() as session:
        await get_or_create_user(session, user_id, "en", rig.clock.now())
        await outbox.enqueue_grouped(
            session, [(user_id, to_payload(notice))], kind="alert", now=rig.clock.now()
        )
    rig.tg.add_user(user_id)


async def test_the_first_alert_goes_out_at_once_and_later_ones_gather_in_one_follow_up(rig):
    sender = rig.sender()
    await _confirmed(rig, 7, "Main")
    await sender.run_once()
    [first] = rig.tg.bot_messages(7)  # no grouping wait before the first word
    assert "Main" in first.text
    for label, gap in (("Sub", 5), ("Futures", 10)):
        rig.clock.advance(gap)
        await _confirmed(rig, 7, label)
        await sender.run_once()
    for _ in range(14):  # up to the end of the first alert's window (30 s)
        rig.clock.advance(1)
        await sender.run_once()
        assert len(rig.tg.bot_messages(7)) == 1
    rig.clock.advance(1)
    await sender.run_once()
    first, follow_up = rig.tg.bot_messages(7)
    assert "Sub" in follow_up.text and "Futures" in follow_up.text
    rig.clock.advance(40)
    await _confirmed(rig, 7, "Spot")  # the window is over: a new first word, at once
    await sender.run_once()
    assert "Spot" in rig.tg.bot_messages(7)[-1].text and len(rig.tg.bot_messages(7)) == 3


async def test_another_users_window_never_delays_a_user(rig):
    sender = rig.sender()
    await _confirmed(rig, 7, "Main")
    rig.clock.advance(3)
    await _confirmed(rig, 7, "Sub")
    await _confirmed(rig, 8, "Main")
    await sender.run_once()
    assert len(rig.tg.bot_messages(7)) == 1 and len(rig.tg.bot_messages(8)) == 1
