"""The worker side: APScheduler ticks the poller and runs daily jobs; the outbox sender runs its
own rounds (bot/sender.py).

APScheduler is only the in-process ticker: what is due lives in the database, so several
workers can tick side by side and share the work through leases.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from aiogram import Bot
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.checklists import ChecklistRefresher
from bot.context import AppContext
from bot.fsm_storage import prune_abandoned
from bot.metrics import METRICS, observe_check
from bot.operator import OperatorAlerts, VaultAlarm
from bot.sender import Sender
from services.monitoring import outbox
from services.monitoring.checkers import ExchangeChecker, ThreeCommasChecker
from services.monitoring.expiry import enqueue_expiry_reminders
from services.monitoring.guard import BlockGuard
from services.monitoring.polling import Claimed, Poller, PollerConfig
from services.threecommas.links import THREECOMMAS

log = logging.getLogger(__name__)

# Batches a worker checks at once. While one batch's results are written to the database, the
# other's probes wait on the exchange: the worker keeps its core busy instead of idling through
# every database round trip (bench/mass_revocation.py). Probes in flight stay bounded by
# PollerConfig.concurrency, which is one gate shared by all batches.
POLL_LANES = 2
# How often an idle worker looks for due connections. A check is late by up to one tick, and a
# key alert waits for two checks (the failure, then its confirmation 10 s later), so the tick
# adds up to twice itself to revocation → alert (bench/alert_latency.py); a look that finds
# nothing due is one indexed query.
POLL_TICK_S = 0.5


def worker_id() -> str:
    """Unique per process, readable in the database: host:pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


@dataclass
class Worker:
    app: AppContext
    bot: Bot
    ident: str = field(default_factory=worker_id)
    poller: Poller = field(init=False)
    sender: Sender = field(init=False)
    checklists: ChecklistRefresher = field(init=False)
    scheduler: AsyncIOScheduler = field(init=False)
    vault_alarm: VaultAlarm = field(init=False)
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    _sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopping: bool = False
    _sender_task: asyncio.Task[None] | None = None
    lanes: int = POLL_LANES

    def __post_init__(self) -> None:
        app = self.app
        threecommas = ThreeCommasChecker(app.threecommas, app.hub, app.vault, app.clock)
        self.poller = Poller(
            sessions=app.sessions,
            clock=app.clock,
            worker_id=self.ident,
            checkers={"exchange": ExchangeChecker(app.hub, app.vault, app.clock), THREECOMMAS: threecommas},
            recreate_plans={THREECOMMAS: threecommas.store_recreate_plan},
            config=PollerConfig(
                default_interval=timedelta(seconds=app.settings.poll_interval_seconds),
                lease=timedelta(seconds=app.settings.lease_seconds),
            ),
            stretch=self.stretch,
            observe=observe_check,
            guard=BlockGuard(app.sessions),
            allowed_users=app.settings.allowed_user_ids,
        )
        assert self.poller.guard is not None
        self.poller.on_wave = OperatorAlerts(app, self.bot, self.poller.guard).on_wave
        self.vault_alarm = VaultAlarm(app)
        self.poller.on_vault_failure = self.credentials_unopened
        self.sender = Sender(
            self.app,
            self.bot,
            self.ident,
            per_second=app.settings.send_rate_per_second,
            paid_per_second=app.settings.paid_per_second,
            lease=timedelta(seconds=app.settings.lease_seconds),
        )
        self.checklists = ChecklistRefresher(
            app, self.bot, every=timedelta(seconds=app.settings.poll_interval_seconds)
        )
        self.scheduler = AsyncIOScheduler(timezone="UTC")

    async def credentials_unopened(self, claimed: Sequence[Claimed]) -> None:
        await self.vault_alarm.raised(self.bot, "check", [c.id for c in claimed])

    def stretch(self, exchange: str, interval: timedelta, connections: int) -> timedelta:
        """The interval the exchange's IP budget allows; logged and exported when it is longer."""
        if exchange == THREECOMMAS:
            return interval  # 3Commas limits each key, not our IP
        fair = self.app.hub.stretch_interval(exchange, interval, connections)
        ratio = fair / interval
        if ratio > 1 and METRICS.interval_stretch.labels(exchange)._value.get() < ratio:
            log.warning(
                "%s budget cannot check %d connections every %s; stretching to %s",
                exchange, connections, interval, fair,
            )  # fmt: skip
        METRICS.interval_stretch.labels(exchange).set(ratio)
        return fair

    async def poll(self) -> None:
        # Keep claiming while whole batches come back: a backlog drains within one tick, with
        # ``lanes`` batches in flight. A failing lane does not stop the others mid-batch; the
        # first error is raised once all are done.
        async with self._busy:
            results = await asyncio.gather(
                *(self._drain() for _ in range(self.lanes)), return_exceptions=True
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _drain(self) -> None:
        while not self._stopping and await self.poller.run_once() >= self.poller.config.batch_size:
            pass

    async def send(self) -> None:
        """One sender round (tests drive it with a fake clock)."""
        async with self._sending:
            if not self._stopping:
                await self.sender.run_once()

    async def _send_loop(self) -> None:
        # Not an APScheduler job: a round takes as long as Telegram answers, and the next one
        # starts when the window has room, so rounds never overrun a fixed tick.
        async with self._sending:
            await self.sender.run(lambda: self._stopping)

    async def daily(self) -> None:
        now = self.app.clock.now()
        await enqueue_expiry_reminders(self.app.sessions, now)
        await outbox.prune_sent(self.app.sessions, now)
        await prune_abandoned(self.app.sessions, now)

    def start(self) -> None:
        # Everything alive now (the imported modules: ccxt and aiogram alone are ~230 MiB of
        # objects; the app context) lives as long as the process. Freezing it takes it out of the
        # cyclic collector's full passes, which otherwise walk all of it again and again
        # (bench/mass_revocation.py: ~0.1 ms less CPU per check).
        gc.collect()
        gc.freeze()
        common = {"max_instances": 1, "coalesce": True}
        self.scheduler.add_job(self.poll, "interval", seconds=POLL_TICK_S, id="poll", **common)
        # Its own job, off the poll tick: a round reads 3Commas for each open checklist it claims,
        # and a poll tick it held would delay the next checks. Every worker runs it; a checklist is
        # due once per poll interval and claimed by one of them (the refresher's docstring).
        self.scheduler.add_job(self.checklists.run_once, "interval", seconds=5, id="checklists", **common)
        self.scheduler.add_job(self.daily, "interval", hours=6, id="daily", **common)
        self.scheduler.start()
        self._sender_task = asyncio.get_running_loop().create_task(self._send_loop())
        log.info("worker %s started", self.ident)

    async def stop(self, deadline_s: float = 20.0) -> None:
        """Stop claiming, let in-flight probes and sends finish (within the deadline), then give
        every lease back so another worker continues at once."""
        self._stopping = True
        # Pause, not shutdown: AsyncIOScheduler.shutdown cancels the running job tasks, which would
        # cut off in-flight probes and sends (a message Telegram got but we never marked sent is
        # sent again by the next worker). Shut down only once they are done or the deadline passed.
        self.scheduler.pause()
        try:
            async with asyncio.timeout(deadline_s), self._busy, self._sending:
                pass
        except TimeoutError:
            log.warning("worker %s: in-flight work did not finish within %.0f s", self.ident, deadline_s)
        self.scheduler.shutdown(wait=False)
        if self._sender_task is not None and not self._sender_task.done():
            self._sender_task.cancel()
        await self.poller.release()
        await self.sender.leave()
        log.info("worker %s stopped and released its leases", self.ident)
