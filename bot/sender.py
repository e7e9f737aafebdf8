"""The outbox sender: claims due rows, renders them in the user's language, paces, retries.

Pacing uses Telegram's whole budget and never more (:mod:`bot.pacing`):

* a sliding window over the moments messages actually went out, at this sender's share of
  ``SEND_RATE_PER_SECOND`` — the rate is split between all live senders through the database
  (:mod:`services.monitoring.send_fleet`) — and spread evenly within the second
  (:class:`bot.pacing.EvenRate`), so requests arrive at Telegram as evenly as they left; and,
  however late they arrive, never more than Telegram's 30 a second counted from leaving until
  answered (:class:`bot.pacing.AnsweredWindow`);
* up to ``in_flight`` chats in flight at once: a round claims the chats the window has room
  for and starts their sends, and the next round starts when the window has room again, not
  when Telegram has answered the last one; each chat's messages in order (one in flight per
  chat) and at most one a second to a private chat, 20 a minute to a group; a chat not ready
  yet is handed back and picked up by a later round;
* a user's rows that fold into a message already sent (:func:`services.monitoring.outbox.enqueue_grouped`)
  edit that message in place, re-rendered whole with its buttons; if the user deleted it, the
  rows go out as a message of their own;
* with ``ALLOW_PAID_BROADCAST`` on, messages beyond the free rate go out as paid broadcasts
  (``allow_paid_broadcast``, 0.1 Telegram Stars each) up to ``PAID_BROADCAST_RATE_PER_SECOND``;
* when the outbox holds more than ``backlog_s`` seconds of work, due rows are ranked by what
  their user has at stake (:mod:`services.monitoring.stakes`) and the riskiest go first.

Counting is on the application clock, so tests drive a round with :meth:`run_once` and a fake
clock; the worker runs :meth:`run`, which sleeps only until the window has room. Telegram's own
verdicts decide what happens to a row:

* 429 ``retry_after`` → the rows wait that long and every sender pauses (the pause is shared);
* 5xx / network → retry with exponential back-off;
* 403 blocked → the user is marked blocked (their connections stop being polled) until /start;
* 400 / 404 → parked as failed with the reason logged (a rendering bug, not worth a loop);
* a user no longer in ``ALLOWED_USER_IDS`` → their rows are parked as failed, never sent;
* anything else (401, a non-JSON error page) → retried like a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import aiohttp
from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)

from bot.context import AppContext
from bot.metrics import METRICS
from bot.notifications import Rendered, render_batch
from bot.pacing import TELEGRAM_PER_SECOND, AnsweredWindow, ChatPacer, EvenRate
from services.monitoring import outbox, send_fleet
from services.monitoring.stakes import user_stakes
from services.storage.users import mark_blocked

log = logging.getLogger(__name__)

FLEET_REFRESH = timedelta(seconds=1)
IDLE_WAIT_S = 0.2  # how soon an idle sender looks for new rows


@dataclass
class SenderStats:
    sent: int = 0
    paid: int = 0
    retried: int = 0
    rate_limited: int = 0
    blocked: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Post:
    """One Telegram call: ``part`` as a new message, or as the new text of message ``edit``."""

    part: Rendered
    edit: int | None


@dataclass
class Sender:
    app: AppContext
    bot: Bot
    worker_id: str
    per_second: int = 25
    paid_per_second: int = 0
    """Paid broadcasts on top of ``per_second`` (0: off)."""
    lease: timedelta = timedelta(seconds=60)
    in_flight: int = 32
    backlog_s: float = 3.0
    stats: SenderStats = field(default_factory=SenderStats)
    _free: EvenRate = field(init=False)
    _paid: EvenRate = field(init=False)
    _answered: AnsweredWindow = field(default_factory=lambda: AnsweredWindow(TELEGRAM_PER_SECOND))
    _in_flight: set[int] = field(default_factory=set)
    """Chats with a send in flight (the next round leaves them alone: order per chat)."""
    _chats: ChatPacer = field(default_factory=ChatPacer)
    _paused_until: datetime | None = None
    _fleet_at: datetime | None = None

    def __post_init__(self) -> None:
        self._free = EvenRate(self.per_second)
        self._paid = EvenRate(self.paid_per_second)

    # ---- one round ------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One round: claim what the window allows now, send to those chats at once; returns
        messages sent."""
        sends = await self._start_round()
        return sum(await asyncio.gather(*sends))

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Rounds until ``stopping()``, each started when the window has room (or a short while
        after the outbox was empty) without waiting for the sends of the rounds before it, so
        Telegram's round trip does not limit the rate; in-flight sends finish before it returns."""
        rounds: set[asyncio.Future[list[int]]] = set()
        while not stopping():
            sends = await self._start_round()
            if sends:
                running = asyncio.gather(*sends)
                rounds.add(running)
                running.add_done_callback(self._round_done(rounds))
            # Nothing started: the outbox had nothing due (look again shortly) or the window was
            # full (wait exactly until it has room).
            full = not sends and self._room(self.app.clock.now()) <= 0
            await asyncio.sleep(self._wait_s() if sends or full else IDLE_WAIT_S)
        await asyncio.gather(*rounds, return_exceptions=True)

    @staticmethod
    def _round_done(rounds: set[asyncio.Future[list[int]]]) -> Callable[[asyncio.Future[list[int]]], None]:
        def done(running: asyncio.Future[list[int]]) -> None:
            rounds.discard(running)
            if not running.cancelled() and running.exception() is not None:
                log.error("outbox round failed", exc_info=running.exception())

        return done

    async def _start_round(self) -> list[Awaitable[int]]:
        """Claim the chats the windows have room for now and take their send slots; the sends
        themselves are returned, not awaited. A chat not ready yet (its own pace, or a message
        to it still in flight) is handed back."""
        now = self.app.clock.now()
        await self._refresh(now)
        room = self._room(now)
        if room <= 0:
            return []
        batches = await outbox.claim(self.app.sessions, self.worker_id, now, users=room, lease=self.lease)
        # Slots are taken as of the round's start: the room was measured then, and a slow claim
        # must not push every later round back by its own duration.
        t = now.timestamp()
        sends: list[Awaitable[int]] = []
        back: list[int] = []
        for batch in batches:
            ready = batch.user_id not in self._in_flight and self._chats.ready_at(batch.user_id, t) <= t
            paid = self._slot(batch.user_id, t) if ready else None
            if paid is None:
                back += batch.ids
                continue
            self._in_flight.add(batch.user_id)
            sends.append(self._deliver(batch, paid))
        await self._hand_back(back)
        return sends

    def _room(self, now: datetime) -> int:
        """Chats a round may start now: what the windows allow, within the in-flight cap."""
        if self._paused(now):
            return 0
        t = now.timestamp()
        return min(self._free_room(t) + self._paid.room(t), self.in_flight - len(self._in_flight))

    def _free_room(self, t: float) -> int:
        return min(self._free.room(t), self._answered.room(t))

    def _wait_s(self) -> float:
        now = self.app.clock.now()
        if self._paused(now):
            assert self._paused_until is not None
            return min((self._paused_until - now).total_seconds(), IDLE_WAIT_S)
        t = now.timestamp()
        free_at = self._free.next_free(t) if self._answered.room(t) > 0 else t  # answers come any moment
        free_at = min(free_at, self._paid.next_free(t) if self._paid.limit >= 1 else t + 1)
        return min(max(free_at - t, 0.005), IDLE_WAIT_S)

    async def leave(self) -> None:
        """Graceful stop: give the claims and this sender's share of the rate back."""
        await outbox.release(self.app.sessions, self.worker_id)
        await send_fleet.leave(self.app.sessions, self.worker_id)

    # ---- fleet, pause, ranking ----------------------------------------------------------------

    async def _refresh(self, now: datetime) -> None:
        """About once a second: heartbeat, this sender's share of the rate, a pause any sender
        was told, and ranking of a backlog."""
        if self._fleet_at is not None and now - self._fleet_at < FLEET_REFRESH:
            return
        joining = self._fleet_at is None
        self._fleet_at = now
        fleet = await send_fleet.heartbeat(self.app.sessions, self.worker_id, now)
        if joining and fleet.live > 1:
            # Others still send at their old share until their next refresh: join quietly.
            self._pause(now + FLEET_REFRESH)
        self._free.limit = self.per_second / fleet.live
        self._answered.limit = TELEGRAM_PER_SECOND / fleet.live
        self._paid.limit = self.paid_per_second / fleet.live
        if fleet.paused_until is not None:
            self._pause(fleet.paused_until)
        async with self.app.sessions() as session:
            backlog = await outbox.depth(session)
        if backlog > (self.per_second + self.paid_per_second) * self.backlog_s:
            await outbox.rank(self.app.sessions, now, user_stakes)

    def _pause(self, until: datetime) -> None:
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until

    def _paused(self, now: datetime) -> bool:
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
        return self._paused_until is not None

    async def _hand_back(self, ids: list[int]) -> None:
        if ids:
            await outbox.release_ids(self.app.sessions, ids)

    # ---- one chat -------------------------------------------------------------------------------

    def _slot(self, chat_id: int, t: float) -> bool | None:
        """Take a send slot at ``t``: False (free), True (paid broadcast), None (no room left)."""
        if self._free_room(t) > 0:
            window, paid = self._free, False
            self._answered.left()
        elif self._paid.room(t) > 0:
            window, paid = self._paid, True
        else:
            return None
        window.record(t)
        self._chats.record(chat_id, t)
        return paid

    async def _deliver(self, batch: outbox.ClaimedBatch, paid: bool) -> int:
        try:
            return await self._deliver_rows(batch, paid)
        finally:
            self._in_flight.discard(batch.user_id)
            if not paid:
                self._answered.answered(self.app.clock.now().timestamp())

    async def _deliver_rows(self, batch: outbox.ClaimedBatch, paid: bool) -> int:
        """One Telegram call for one user's rows: fold the oldest ones into the message they
        belong to (edit in place), or else send the first new message; the rest wait for the
        chat's next second.

        Each part is marked sent on its own, so a crash repeats at most the one in flight.
        """
        allowed = self.app.settings.allowed_user_ids
        if allowed and batch.user_id not in allowed:
            await outbox.give_up(self.app.sessions, batch.ids, "not in ALLOWED_USER_IDS")
            return 0
        with self.app.i18n.context(), self.app.i18n.use_locale(batch.language):
            post = self._plan(batch)
        if post is None:
            return 0
        await self._hand_back([row_id for row_id in batch.ids if row_id not in post.part.ids])
        if self._paused(self.app.clock.now()):
            await self._hand_back(post.part.ids)
            return 0
        rows = [
            m
            for m in [*batch.messages, *(r for fold in batch.folds for r in fold.rows)]
            if m.id in post.part.ids
        ]
        attempts = max(m.attempts for m in rows) + 1
        event_at = {m.id: m.event_at for m in rows}
        return await self._send(batch.user_id, post, paid, attempts, event_at)

    def _plan(self, batch: outbox.ClaimedBatch) -> _Post | None:
        """What this round sends for ``batch``: the oldest fold when there is one, as an edit of
        its message re-rendered whole (a fold too long for one message goes out as a new one)."""
        ips = self.app.settings.egress_ips
        if batch.folds:
            fold = batch.folds[0]
            whole = render_batch([*fold.shown, *fold.rows], ips)
            if len(whole) == 1:
                ids = [row.id for row in fold.rows]
                return _Post(replace(whole[0], ids=ids), fold.message_id)
            return _Post(render_batch(fold.rows, ips)[0], None)
        parts = render_batch(batch.messages, ips)
        return _Post(parts[0], None) if parts else None

    async def _send(
        self, chat_id: int, post: _Post, paid: bool, attempts: int, event_at: dict[int, datetime]
    ) -> int:
        sessions = self.app.sessions
        part = post.part
        try:
            message_id = await self._post(chat_id, post, paid)
        except TelegramRetryAfter as error:
            self.stats.rate_limited += 1
            METRICS.telegram_429.inc()
            until = self.app.clock.now() + timedelta(seconds=error.retry_after)
            self._pause(until)
            await send_fleet.pause(sessions, self.worker_id, until)
            await outbox.retry_later(sessions, part.ids, until, "429", count=False)
            return 0
        except TelegramForbiddenError as error:
            self.stats.blocked += 1
            async with sessions.begin() as session:
                await mark_blocked(session, chat_id, True)
            await outbox.give_up(sessions, part.ids, f"403 {error.message}")
            return 0
        except (TelegramBadRequest, TelegramNotFound) as error:
            self.stats.failed += 1
            log.error("outbox rows %s rejected by Telegram: %s", part.ids, error.message)
            await outbox.give_up(sessions, part.ids, f"400 {error.message}")
            return 0
        except (
            TelegramServerError,
            TelegramNetworkError,
            TelegramAPIError,
            ClientDecodeError,  # a non-JSON 5xx page from Telegram's front end
            aiohttp.ClientError,
            TimeoutError,
        ) as error:
            self.stats.retried += 1
            delay = timedelta(seconds=min(600, 2**attempts))
            await outbox.retry_later(sessions, part.ids, self.app.clock.now() + delay, repr(error))
            return 0
        if message_id is None:
            await outbox.unfold(sessions, part.ids)
            return 0
        now = self.app.clock.now()
        self.stats.sent += 1
        self.stats.paid += paid
        METRICS.messages_sent.inc()
        await outbox.mark_sent(sessions, part.ids, now, message_id)
        for row_id in part.ids:
            METRICS.alert_delay.observe(max(0.0, (now - event_at[row_id]).total_seconds()))
        return 1

    async def _post(self, chat_id: int, post: _Post, paid: bool) -> int | None:
        """Send a new message or edit the one the rows fold into; the message's id, or None when
        the message to edit is gone (the user deleted it) and the rows need one of their own."""
        part = post.part
        if post.edit is None:
            sent = await self.bot.send_message(
                chat_id, part.text, reply_markup=part.markup, allow_paid_broadcast=True if paid else None
            )
            return sent.message_id
        try:
            await self.bot.edit_message_text(
                part.text, chat_id=chat_id, message_id=post.edit, reply_markup=part.markup
            )
        except TelegramBadRequest as error:
            if "not modified" in error.message:  # an earlier try landed though its answer was lost
                return post.edit
            log.info("message %s of chat %s not edited (%s): sending anew", post.edit, chat_id, error.message)
            return None
        return post.edit
