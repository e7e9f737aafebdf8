"""The outbox sender: claims due rows, renders them in the user's language, paces, retries.

Pacing is counted on the application clock (messages per clock-second, overall and per chat),
so tests drive it by moving a fake clock, and production simply calls :meth:`run_once` a few
times a second. Telegram's own verdicts decide what happens to a row:

* 429 ``retry_after`` → the rows wait that long and the whole sender pauses;
* 5xx / network → retry with exponential back-off;
* 403 blocked → the user is marked blocked (their connections stop being polled) until /start;
* 400 / 404 → parked as failed with the reason logged (a rendering bug, not worth a loop);
* anything else (401, a non-JSON error page) → retried like a 5xx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
from bot.notifications import render_batch
from services.monitoring import outbox
from services.storage.users import mark_blocked

log = logging.getLogger(__name__)


@dataclass
class SenderStats:
    sent: int = 0
    retried: int = 0
    rate_limited: int = 0
    blocked: int = 0
    failed: int = 0


@dataclass
class Sender:
    app: AppContext
    bot: Bot
    worker_id: str
    per_second: int = 25
    lease: timedelta = timedelta(seconds=60)
    stats: SenderStats = field(default_factory=SenderStats)
    _paused_until: datetime | None = None
    _window_start: datetime | None = None
    _window_count: int = 0

    def _budget_left(self, now: datetime) -> int:
        if self._window_start is None or now - self._window_start >= timedelta(seconds=1):
            self._window_start, self._window_count = now, 0
        return self.per_second - self._window_count

    async def run_once(self) -> int:
        """Send what is due now, within this clock-second's budget; returns messages sent."""
        now = self.app.clock.now()
        if self._paused_until is not None:
            if now < self._paused_until:
                return 0
            self._paused_until = None
        budget = self._budget_left(now)
        if budget <= 0:
            return 0
        batches = await outbox.claim(self.app.sessions, self.worker_id, now, users=budget, lease=self.lease)
        sent = 0
        for index, batch in enumerate(batches):
            if self._budget_left(self.app.clock.now()) <= 0 or self._paused_until is not None:
                await self._hand_back(batches[index:])
                break
            sent += await self._deliver(batch)
        return sent

    async def _hand_back(self, batches: list[outbox.ClaimedBatch]) -> None:
        ids = [m.id for b in batches for m in b.messages]
        if ids:
            await outbox.release_ids(self.app.sessions, ids)

    async def _deliver(self, batch: outbox.ClaimedBatch) -> int:
        """Send one user's rows as few messages as possible; each part is marked sent on its own."""
        with self.app.i18n.context(), self.app.i18n.use_locale(batch.language):
            parts = render_batch(batch.messages)
        event_at = {m.id: m.event_at for m in batch.messages}
        attempts = max(m.attempts for m in batch.messages) + 1
        for index, part in enumerate(parts):
            remaining = [row_id for later in parts[index:] for row_id in later.ids]
            try:
                await self.bot.send_message(batch.user_id, part.text, reply_markup=part.markup)
            except TelegramRetryAfter as error:
                self.stats.rate_limited += 1
                METRICS.telegram_429.inc()
                self._paused_until = self.app.clock.now() + timedelta(seconds=error.retry_after)
                await outbox.retry_later(self.app.sessions, remaining, self._paused_until, "429", count=False)
                return index
            except TelegramForbiddenError as error:
                self.stats.blocked += 1
                async with self.app.sessions.begin() as session:
                    await mark_blocked(session, batch.user_id, True)
                await outbox.give_up(self.app.sessions, remaining, f"403 {error.message}")
                return index
            except (TelegramBadRequest, TelegramNotFound) as error:
                self.stats.failed += 1
                log.error("outbox rows %s rejected by Telegram: %s", part.ids, error.message)
                await outbox.give_up(self.app.sessions, part.ids, f"400 {error.message}")
                continue
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
                await outbox.retry_later(
                    self.app.sessions, remaining, self.app.clock.now() + delay, repr(error)
                )
                return index
            now = self.app.clock.now()
            self._window_count += 1
            self.stats.sent += 1
            METRICS.messages_sent.inc()
            await outbox.mark_sent(self.app.sessions, part.ids, now)
            for row_id in part.ids:
                METRICS.alert_delay.observe(max(0.0, (now - event_at[row_id]).total_seconds()))
        return len(parts)
