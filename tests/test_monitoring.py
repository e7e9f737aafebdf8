"""The monitoring engine end to end: real ccxt against local exchanges, real aiogram against the
local Telegram, time driven by the clock. One alert per incident, one recovery, nothing for blips."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from aiogram import Router
from sqlalchemy import func, select

from bot.middlewares import InFlight
from bot.worker import Worker
from sandbox.exchanges import LOCAL_EXCHANGES, LocalExchange
from sandbox.exchanges.base import random_token
from sandbox.telegram import ChatMessage
from sandbox.threecommas import LocalThreeCommas
from services.core.clock import FakeClock, utcnow
from services.core.vault import Credentials
from services.monitoring import outbox
from services.monitoring.mutes import mute
from services.storage.connections import new_connection
from services.storage.models import Connection, OutboxMessage, RecoveryChecklist
from services.storage.users import get_or_create_user
from services.threecommas.links import add_threecommas_connection
from tests.harness import BotRig, running_bot
from tests.production_net import ProductionNet

RoutersFor = Callable[[dict[str, LocalExchange], LocalThreeCommas | None], Sequence[Router]]


@dataclass(frozen=True)
class Due:
    """When each job of a tick next has something to do (None: nothing at all)."""

    polls: datetime | None
    """The earliest ``next_poll_at`` of any connection."""
    redraws: datetime | None
    """The earliest ``refresh_due_at`` of an open checklist on screen (NULL counts as now)."""
    sends: datetime | None
    """The earliest ``not_before`` of an unsent outbox row."""

    def soonest(self) -> datetime | None:
        return min((m for m in (self.polls, self.redraws, self.sends) if m is not None), default=None)


def reached(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now


@dataclass
class Monitor:
    rig: BotRig
    worker: Worker
    exchanges: dict[str, LocalExchange]
    tc: LocalThreeCommas | None = None
    net: ProductionNet | None = None
    """Routes the exchanges' real hostnames to the local ones (for another worker's app)."""

    async def link(self, user_id: int, exchange: str, label: str = "Main") -> tuple[int, str]:
        """A user with one healthy key on ``exchange``; returns (connection id, api key)."""
        key = self.exchanges[exchange].add_key()
        self.rig.tg.add_user(user_id)
        async with self.rig.app.sessions.begin() as session:
            await get_or_create_user(session, user_id, "en", self.rig.clock.now())
            connection = new_connection(
                self.rig.app.vault,
                user_id=user_id,
                exchange=exchange,
                label=label,
                credentials=Credentials(key.api_key, key.secret, key.passphrase),
                now=self.rig.clock.now(),
            )
            session.add(connection)
        return connection.id, key.api_key

    async def link_threecommas(
        self, user_id: int, tc: LocalThreeCommas, *, language: str = "en"
    ) -> tuple[int, str]:
        key = tc.add_key()
        self.rig.tg.add_user(user_id, language_code=language)
        async with self.rig.app.sessions.begin() as session:
            await get_or_create_user(session, user_id, language, self.rig.clock.now())
            connection = add_threecommas_connection(
                session,
                self.rig.app.vault,
                user_id=user_id,
                credentials=Credentials(key.api_key, key.secret),
                label="3C",
                now=self.rig.clock.now(),
            )
        return connection.id, key.api_key

    async def tick(self, seconds: float = 1) -> None:
        """Let ``seconds`` pass, then run what the scheduler would: poll, checklists, then send."""
        self.rig.clock.advance(seconds)
        await self.worker.poll()
        await self.worker.checklists.run_once()
        await self.worker.send()

    async def run_for(self, seconds: int, step: int = 5) -> None:
        """Tick every ``step`` seconds for ``seconds``, as the scheduler would, leaving out what
        would find nothing due (:meth:`skip`): the work that remains happens at the same moments,
        so every check, alert and recovery does too."""
        steps = -(-seconds // step)
        while steps:
            steps -= await self.skip(step, steps)

    async def skip(self, step: int, most: int) -> int:
        """Advance by whole ``step``s (at most ``most``) to the first at which something may be due
        and tick there, leaving out the poll, the checklist round or the send round when it has
        nothing due; returns the steps taken.

        A tick only acts on what is due at its moment (:class:`Due`): the poller on connections
        whose ``next_poll_at`` has come (the guard and the incident rules, mutes and reminders
        included, act only on checks), the checklist refresher on shown checklists whose
        ``refresh_due_at`` has, the sender on unsent outbox rows whose ``not_before`` has. Before
        that a round finds nothing, whatever else it looks at (leases, blocked or disallowed users,
        pacing): those only make a due row wait, and it is then still due at the next step, which
        is taken."""
        if not await self.settled():  # what the bot is still doing may make something due at once
            await self.tick(step)
            return 1
        due = await self.due()
        steps = most
        if (soonest := due.soonest()) is not None:  # the first whole step at or after it
            steps = min(max(1, -((self.rig.clock.now() - soonest) // timedelta(seconds=step))), most)
        self.rig.clock.advance(steps * step)
        if reached(due.polls, self.rig.clock.now()):
            await self.worker.poll()
            due = await self.due()  # with what the checks enqueued
        if reached(due.redraws, self.rig.clock.now()):
            await self.worker.checklists.run_once()
            due = await self.due()
        if reached(due.sends, self.rig.clock.now()):
            await self.worker.send()
        return steps

    async def send_due(self) -> None:
        """A send round if an outbox row is due (before that, a round finds nothing)."""
        due = await self.due()
        if reached(due.sends, self.rig.clock.now()):
            await self.worker.send()

    async def settled(self) -> bool:
        """Whether the bot has handled every update it was sent, so that what the handlers write
        (a checklist put on screen, a check pulled in) is in the database for :meth:`due`."""
        if self.rig.tg.pending_updates():
            return False
        in_flight: InFlight = self.rig.dp["in_flight"]
        return await in_flight.drained(0.05)

    async def due(self) -> Due:
        now = self.rig.clock.now()
        polls = select(func.min(Connection.next_poll_at)).scalar_subquery()
        shown = RecoveryChecklist.done_at.is_(None), RecoveryChecklist.message_id.is_not(None)
        redraws = (
            select(func.min(func.coalesce(RecoveryChecklist.refresh_due_at, now))).where(*shown)
        ).scalar_subquery()
        unsent = OutboxMessage.sent_at.is_(None), OutboxMessage.failed.is_(False)
        sends = select(func.min(OutboxMessage.not_before)).where(*unsent).scalar_subquery()
        async with self.rig.app.sessions() as session:
            row = (await session.execute(select(polls, redraws, sends))).one()
        return Due(*row)

    async def until_failing_seen(self, connection_id: int, limit_s: int = 90) -> None:
        """Advance second by second until a check of the connection has failed (the revocation was
        noticed); seconds at which no check can be due are skipped (:meth:`skip`)."""
        while limit_s > 0:
            async with self.rig.app.sessions() as session:
                if (await session.get(Connection, connection_id)).verdict != "ok":
                    return
            limit_s -= await self.skip(1, limit_s)
        raise AssertionError("the failure was not noticed within the poll interval")

    def messages(self, user_id: int) -> list[ChatMessage]:
        return self.rig.tg.bot_messages(user_id)


@contextlib.asynccontextmanager
async def monitor(
    tmp_path,
    *exchange_ids: str,
    threecommas: bool = False,
    routers: RoutersFor | None = None,
    **settings: object,
) -> AsyncIterator[Monitor]:
    """``routers``, given the local exchanges and 3Commas, returns extra routers for the bot (the
    sandbox's commands)."""
    clock = FakeClock(utcnow())  # the local exchanges date keys by the real clock
    net = ProductionNet()
    async with contextlib.AsyncExitStack() as stack:
        exchanges = {}
        for eid in exchange_ids:
            # Their rate-limit windows and bans on the test's clock: checks a minute apart must not
            # count as a burst because the test ran them a few milliseconds apart in real time.
            exchanges[eid] = await net.serve_exchange(LOCAL_EXCHANGES[eid](clock.monotonic))
            stack.push_async_callback(exchanges[eid].close)
        extra: dict[str, object] = dict(settings)
        tc = None
        if threecommas:
            tc = LocalThreeCommas(clock, monotonic=lambda: clock.now().timestamp())
            extra["threecommas_api_url"] = await tc.start()
            stack.push_async_callback(tc.close)
        rig = await stack.enter_async_context(
            running_bot(
                f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
                clock,
                routers=routers(exchanges, tc) if routers else (),
                transport=net.transport,
                **extra,
            )
        )
        worker = Worker(rig.app, rig.bot)
        worker.poller.random = random.Random(7)  # fixed jitter: durations in messages are exact
        yield Monitor(rig, worker, exchanges, tc, net)


async def test_revoked_key_one_alert_then_one_recovery(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        _, api_key = await m.link(1, "binance")
        await m.tick(0)
        assert m.messages(1) == []
        m.exchanges["binance"].set_key_state(api_key, "revoked")
        await m.until_failing_seen(1)  # the next scheduled check, at most one interval (+ jitter) away
        await m.run_for(60)  # one poll interval from the first failed check
        [alert] = m.messages(1)
        assert "revoked" in alert.text and "Binance · Main" in alert.text
        assert alert.buttons[0].text.startswith("⛔")
        assert {"⛔ Update API key", "🔄 Refresh", "🔕 Mute 24 h"} == {b.text for b in alert.buttons}
        await m.run_for(600)
        assert len(m.messages(1)) == 1  # still failing: no repeats before the first reminder
        m.exchanges["binance"].set_key_state(api_key, "valid")
        await m.run_for(120)
        assert len(m.messages(1)) == 2
        recovery = m.messages(1)[-1]
        failing_for = re.search(r"failing for (\d+) min", recovery.text)
        assert failing_for and 10 <= int(failing_for.group(1)) <= 12  # 600 s failing + check spacing


async def test_a_single_503_says_nothing(tmp_path):
    async with monitor(tmp_path, "okx") as m:
        await m.link(1, "okx")
        await m.tick(0)
        m.exchanges["okx"].inject("status_5xx", times=1)
        await m.run_for(600)
        assert m.messages(1) == []


async def test_bybit_outage_gives_each_user_one_notice_and_calls_no_key_revoked(tmp_path):
    async with monitor(tmp_path, "bybit") as m:
        for user in range(1, 21):
            await m.link(user, "bybit")
        await m.tick(0)
        m.exchanges["bybit"].inject("status_5xx")
        await m.run_for(900)
        for user in range(1, 21):
            [notice] = m.messages(user)
            assert "Bybit looks down" in notice.text
            assert "revoked" not in notice.text.lower()
        m.exchanges["bybit"].clear_faults()
        await m.run_for(300)
        assert all(len(m.messages(user)) == 2 for user in range(1, 21))
        assert all("works again" in m.messages(user)[-1].text for user in range(1, 21))


async def test_recovery_during_a_mute_is_summarised_once_after_it(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        connection_id, api_key = await m.link(1, "binance")
        await m.tick(0)
        m.exchanges["binance"].set_key_state(api_key, "revoked")
        await m.until_failing_seen(connection_id)
        await m.run_for(60)
        assert len(m.messages(1)) == 1
        async with m.rig.app.sessions.begin() as session:
            assert await mute(session, 1, connection_id, timedelta(hours=1), m.rig.clock.now())
        m.exchanges["binance"].set_key_state(api_key, "valid")
        await m.run_for(1800, step=30)
        assert len(m.messages(1)) == 1  # the recovery waits for the mute to end
        await m.run_for(1800 + 120, step=30)
        assert len(m.messages(1)) == 2
        assert "works again" in m.messages(1)[-1].text


async def test_the_mute_summary_reaches_the_user_when_the_mute_ends(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        connection_id, api_key = await m.link(1, "binance")
        await m.tick(0)
        async with m.rig.app.sessions.begin() as session:
            assert await mute(session, 1, connection_id, timedelta(minutes=10), m.rig.clock.now())
        m.exchanges["binance"].set_key_state(api_key, "revoked")
        await m.run_for(540, step=30)
        assert m.messages(1) == []  # revoked while muted: nothing yet
        await m.run_for(180, step=30)
        [summary] = m.messages(1)
        assert "Mute ended" in summary.text and "revoked" in summary.text
        assert "⛔ Update API key" in {b.text for b in summary.buttons}


async def test_the_flapping_summary_reaches_the_user_once_it_settles(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        connection_id, api_key = await m.link(1, "binance")
        await m.tick(0)
        for _ in range(3):  # alert, recovery, alert, recovery, then the 5th transition flaps
            m.exchanges["binance"].set_key_state(api_key, "revoked")
            await m.until_failing_seen(connection_id)
            await m.run_for(60)
            m.exchanges["binance"].set_key_state(api_key, "valid")
            await m.run_for(120)
        texts = [message.text for message in m.messages(1)]
        assert len(texts) == 5 and "keeps failing and recovering" in texts[-1]
        await m.run_for(3600 + 120, step=60)
        settled = m.messages(1)[-1].text
        assert len(m.messages(1)) == 6
        assert "stopped failing and recovering" in settled and "works again" in settled


async def test_blocked_user_stops_being_polled_until_start(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        _, api_key = await m.link(1, "binance")
        await m.tick(0)
        m.rig.tg.block_user(1)
        m.exchanges["binance"].set_key_state(api_key, "revoked")
        await m.run_for(120)
        requests_before = len(m.exchanges["binance"].requests)
        await m.run_for(600)
        assert len(m.exchanges["binance"].requests) == requests_before
        async with m.rig.app.sessions() as session:
            assert (await session.get(Connection, 1)).lease_owner is None


@pytest.mark.parametrize(
    ("exchange", "policy_days"),
    [
        ("binance", 30),  # spot trading lapses 30 days after creation without an IP whitelist
        ("bybit", 90),  # keys without a bound IP expire after 90 days
        ("okx", None),  # OKX deletes idle keys; a key we check every minute is never idle
    ],
)
async def test_expiry_reminders_seven_days_and_one_day_before(tmp_path, exchange, policy_days):
    async with monitor(tmp_path, exchange) as m:
        await m.link(1, exchange)
        await m.tick(0)
        sent_on: list[int] = []
        start = m.rig.clock.now()
        for day in range(100):  # the daily job, 6 hours into each day after linking
            m.rig.clock.set(start + timedelta(days=day, hours=6))
            await m.worker.daily()
            await m.send_due()
            if sum("⏰" in x.text for x in m.messages(1)) > len(sent_on):
                sent_on.append(day)
        if policy_days is None:
            assert sent_on == []
        else:
            assert sent_on == [policy_days - 7, policy_days - 1]


async def test_threecommas_symptoms_each_raise_one_alert_and_a_failed_deal_can_be_recreated(tmp_path):
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc = m.tc
        _, api_key = await m.link_threecommas(1, tc)
        account = tc.add_account(api_key, exchange="binance", name="Main")
        frozen = tc.add_deal(api_key, account, pair="USDT_BTC", current_price="65000", bought_amount="0.01")
        failing = tc.add_deal(api_key, account, pair="USDT_ETH", current_price="3000", bought_amount="0.5")
        await m.tick(0)  # the first look only records what exists
        assert m.messages(1) == []

        tc.freeze_upnl(frozen)
        m.exchanges["binance"].set_price("BTC/USDT", "67000")  # the market moves 3 %, the deal does not
        tc.fail_deal(failing, error_message="Invalid API key")
        await m.run_for(40 * 60, step=30)
        texts = [x.text for x in m.messages(1)]
        assert sum("UPNL stopped updating" in t for t in texts) == 1
        assert sum("it failed" in t for t in texts) == 1

        tc.set_account(account, api_key_invalid=True)
        await m.run_for(10 * 60, step=30)
        texts = [x.text for x in m.messages(1)]
        assert (
            sum(
                "3Commas account «Main» (Binance)" in t and "can no longer use the API key" in t
                for t in texts
            )
            == 1
        )

        tc.revoke_key(api_key)
        await m.run_for(10 * 60, step=30)
        lines = [line for x in m.messages(1) for line in x.text.splitlines()]
        key_alerts = [line for line in lines if line.startswith("🔴 3Commas · 3C: ")]
        assert len(key_alerts) == 1 and "revoked" in key_alerts[0]

        [failed] = [x for x in m.messages(1) if "it failed" in x.text]
        assert any("Recreate" in b.text for b in failed.buttons)


async def test_recreate_from_the_alert_sends_the_deal_to_threecommas(tmp_path):
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc = m.tc
        _, api_key = await m.link_threecommas(1, tc)
        account = tc.add_account(api_key, exchange="binance", name="Main")
        deal = tc.add_deal(api_key, account, pair="USDT_ETH", current_price="3000", bought_amount="0.5")
        await m.tick(0)
        tc.fail_deal(deal, error_message="Invalid API key")
        await m.run_for(120, step=30)
        [alert] = [x for x in m.messages(1) if "it failed" in x.text]
        await m.rig.press(1, alert, "Recreate")
        shown = await m.rig.tg.wait_for_bot_message(1, contains="exactly these parameters")
        assert "USDT_ETH" in shown.text or "ETH/USDT" in shown.text
        await m.rig.press(1, shown, "Recreate")
        await m.rig.tg.wait_for(lambda: any(r.path.endswith("/start_new_deal") for r in tc.requests))
        [started] = [r for r in tc.requests if r.path.endswith("/start_new_deal")]
        assert started.status < 300 and started.body == {"pair": "USDT_ETH"}


ADMIN = 9000


def assert_untouched(m: Monitor, users: range) -> None:
    assert all(m.messages(user) == [] for user in users), [m.rig.tg.transcript(u) for u in users]


async def hold_then_tell_without_blame(m: Monitor, users: range, service: str) -> None:
    """A wave of key errors on ``service`` is under way for ``users``: for ten minutes nobody hears
    (short rules do not apply) and the operator gets one notice; past the long (rate-limit) rule
    every user hears once, in words that never tell them to delete or replace a key."""
    await m.run_for(600)
    assert_untouched(m, users)
    [notice] = m.messages(ADMIN)
    assert re.search(rf"\d+ keys on {service}", notice.text) and "blocking our server's IP" in notice.text
    await m.run_for(1800)
    for user in users:
        [alert] = m.messages(user)
        text = alert.text.lower()
        assert "your key is not the problem" in text, text
        assert "delete" not in text and "revoked" not in text and "create a new" not in text
    assert len(m.messages(ADMIN)) == 1


def canary_keys() -> dict[str, dict[str, str]]:
    """CANARY_KEYS with one Binance key, shaped like Binance's (the local Binance learns it later)."""
    return {"binance": {"api_key": random_token(64), "secret": random_token(64)}}


async def twenty_binance_users(m: Monitor, canary: dict[str, dict[str, str]]) -> range:
    """Twenty users with a key each, plus the operator's canary key, all checked once and fine."""
    m.rig.tg.add_user(ADMIN)
    m.exchanges["binance"].add_key(canary["binance"]["api_key"], canary["binance"]["secret"])
    users = range(1, 21)
    for user in users:
        await m.link(user, "binance")
    await m.tick(0)
    assert_untouched(m, users)
    return users


async def test_a_2015_wave_across_twenty_keys_is_our_ip_not_their_keys(tmp_path):
    """Binance answers -2015 to valid keys while it bans our IP (tests/corpus
    binance/2015_during_ip_ban). Twenty users' keys turning to it at once, and the operator's
    canary key with them: nobody is told to delete a key, the operator hears once, users only
    after the long rate-limit rule."""
    canary = canary_keys()
    async with monitor(tmp_path, "binance", admin_chat_ids=frozenset({ADMIN}), canary_keys=canary) as m:
        users = await twenty_binance_users(m, canary)
        m.exchanges["binance"].inject("key_ban")  # -2015 for every valid key, the canary's too
        await hold_then_tell_without_blame(m, users, "Binance")
        assert "Canary key: key_invalid" in m.messages(ADMIN)[0].text
        assert "rate-limiting" in m.messages(1)[0].text


async def test_a_wave_the_canary_key_survives_is_real_revocation_and_users_hear_at_once(tmp_path):
    """Twenty keys revoked at once (an exchange-wide reset) look like a ban at first; the canary
    key still works from the same IP, so it is not our IP: the wave is released and every user
    is told promptly, by the key rule, that the key was revoked. The good canary is believed for
    a while, so the keys that go on failing start no second wave and no second notice."""
    canary = canary_keys()
    async with monitor(tmp_path, "binance", admin_chat_ids=frozenset({ADMIN}), canary_keys=canary) as m:
        users = await twenty_binance_users(m, canary)
        binance = m.exchanges["binance"]
        for key in list(binance.keys):
            if key != canary["binance"]["api_key"]:
                binance.set_key_state(key, "revoked")
        await m.run_for(120)  # one poll interval, then the key rule's two probes in 10 s
        for user in users:
            [alert] = m.messages(user)
            assert "revoked" in alert.text and "Update API key" in alert.text
        [notice] = m.messages(ADMIN)
        assert "Canary key: ok" in notice.text
        await m.run_for(600)
        assert len(m.messages(ADMIN)) == 1


async def test_a_threecommas_401_wave_is_our_ip_off_their_whitelists_not_their_keys(tmp_path):
    """3Commas answers 401 to a key used from an IP its whitelist does not hold (docs
    quick-start/8_errors; tests/corpus threecommas/401_ip_not_whitelisted), in the same words as
    for a dead key. Twenty users' 3Commas keys all refusing our new address at once is our IP;
    the operator's 3Commas canary key refuses it too."""
    canary = {"api_key": random_token(64), "secret": random_token(64)}
    settings = {"admin_chat_ids": frozenset({ADMIN}), "canary_keys": {"threecommas": canary}}
    async with monitor(tmp_path, threecommas=True, **settings) as m:
        assert m.tc is not None
        m.rig.tg.add_user(ADMIN)
        m.tc.add_key(canary["api_key"], canary["secret"])
        users = range(1, 21)
        for user in users:
            _, api_key = await m.link_threecommas(user, m.tc)
            m.tc.add_account(api_key, exchange="binance", name="Main")
        await m.tick(0)  # every key passes once
        assert_untouched(m, users)
        m.tc.whitelist_elsewhere()  # our server's IP changed: no key's whitelist holds it
        await hold_then_tell_without_blame(m, users, "3Commas")
        assert "Canary key: key_invalid" in m.messages(ADMIN)[0].text
        refused = {r.api_key for r in m.tc.requests if r.status == 401}
        assert len(refused) == 21 and canary["api_key"] in refused


async def test_a_threecommas_ip_ban_pauses_every_key_and_tells_the_operator_once(tmp_path):
    """A 418 is 3Commas banning our IP (docs quick-start/9_limits; tests/corpus
    threecommas/418_ip_banned): one answer is enough to tell the operator and space the checks;
    users hear only after the long rule, that their keys are not the problem."""
    async with monitor(tmp_path, threecommas=True, admin_chat_ids=frozenset({ADMIN})) as m:
        assert m.tc is not None
        m.rig.tg.add_user(ADMIN)
        users = range(1, 6)
        for user in users:
            await m.link_threecommas(user, m.tc)
        await m.tick(0)
        m.tc.ban(3600)
        await m.run_for(600)
        assert_untouched(m, users)
        [notice] = m.messages(ADMIN)
        assert "3Commas banned our server's IP" in notice.text
        sent = len(m.tc.requests)
        await m.run_for(600)
        # The shared IP gate holds every key for its ten minutes (a 418 names no length); then
        # one request finds the ban still on and closes it again.
        assert len(m.tc.requests) - sent <= 1
        await m.run_for(1200)
        for user in users:
            [alert] = m.messages(user)
            assert "your key is not the problem" in alert.text.lower()
        assert len(m.messages(ADMIN)) == 1


async def test_a_threecommas_app_in_paper_mode_still_has_its_real_accounts_watched(tmp_path):
    """Without ``Forced-Mode`` 3Commas answers in the mode the user last chose in its app (old docs
    README, "API modes"). keysentry sends ``Forced-Mode: real``, so a user who switches the app
    to paper trading keeps being watched: no "account gone", and a real account that breaks
    later is still alerted."""
    async with monitor(tmp_path, threecommas=True) as m:
        assert m.tc is not None
        _, api_key = await m.link_threecommas(1, m.tc)
        m.tc.add_account(api_key, exchange="binance", name="Main")
        m.tc.add_account(api_key, exchange="binance", name="Practice", paper=True)
        await m.tick(0)
        m.tc.set_app_mode(api_key, "paper")
        await m.run_for(300, step=30)
        assert m.messages(1) == [], m.rig.tg.transcript(1)
        m.tc.reset_exchange_keys(api_key)
        await m.run_for(300, step=30)
        [alert] = m.messages(1)
        assert "3Commas account «Main»" in alert.text and "Practice" not in alert.text
        assert "can no longer use the API key" in alert.text


async def test_a_mass_revocation_with_a_working_canary_is_alerted_at_once_after_one_wave(tmp_path):
    """Every key on Binance revoked at once looks like a ban of our IP until the operator's canary
    key (CANARY_KEYS) answers OK. Batches the other lanes record meanwhile wait for that answer
    instead of being held (and spaced out by minutes), and later batches of the same event do not
    start a wave of their own: each user hears "revoked" within an interval and the confirmation,
    and the operator hears once."""
    api_key, secret, _ = LOCAL_EXCHANGES["binance"]().new_credentials()
    async with monitor(
        tmp_path,
        "binance",
        admin_chat_ids=frozenset({ADMIN}),
        canary_keys={"binance": {"api_key": api_key, "secret": secret}},
    ) as m:
        m.exchanges["binance"].add_key(api_key, secret)
        m.worker.poller.config.batch_size = 4  # several batches in flight on both lanes
        m.rig.tg.add_user(ADMIN)
        users = range(1, 25)
        keys = [(await m.link(user, "binance"))[1] for user in users]
        await m.tick(0)  # every key passes once
        for key in keys:
            m.exchanges["binance"].set_key_state(key, "revoked")
        await m.run_for(60 + 10 + 5, step=1)
        for user in users:
            [alert] = m.messages(user)
            assert "revoked" in alert.text.lower(), alert.text
        [notice] = m.messages(ADMIN)
        assert "Canary key: ok" in notice.text


@pytest.mark.attack("a user removed from ALLOWED_USER_IDS keeps getting checks and alerts")
async def test_a_user_removed_from_the_allow_list_is_not_polled_nor_alerted(tmp_path):
    async with monitor(tmp_path, "binance", allowed_user_ids=frozenset({1})) as m:
        await m.link(1, "binance")
        _, removed_key = await m.link(2, "binance")  # linked while user 2 was still allowed
        async with m.rig.app.sessions.begin() as session:  # and an alert queued back then
            outbox.enqueue(
                session,
                user_id=2,
                kind="alert",
                payload={
                    "type": "alert",
                    "connection_id": 2,
                    "exchange": "binance",
                    "label": "Main",
                    "verdict": "key_invalid",
                    "detail": "",
                    "since": m.rig.clock.now().isoformat(),
                },
                now=m.rig.clock.now(),
            )
        m.exchanges["binance"].set_key_state(removed_key, "revoked")
        await m.run_for(120)
        binance = m.exchanges["binance"]
        assert [r for r in binance.requests if r.api_key != removed_key]  # user 1 is checked
        assert not [r for r in binance.requests if r.api_key == removed_key]
        assert m.messages(2) == [], m.rig.tg.transcript(2)
        async with m.rig.app.sessions() as session:
            [row] = (await session.scalars(select(OutboxMessage).where(OutboxMessage.user_id == 2))).all()
        assert row.failed and row.sent_at is None
