"""The poller: claim due connections from the database, check them, record what changed.

Due work lives in the ``connections`` table (``next_poll_at``) and is claimed with a lease
(``lease_owner``/``lease_until``), so any number of workers share it and a crashed worker's
rows come back when its leases expire. Claiming is one UPDATE: on PostgreSQL the candidate
rows are picked ``FOR UPDATE SKIP LOCKED`` so workers never wait on each other; on SQLite the
single statement is atomic under SQLite's one-writer lock.

Results are recorded a batch at a time, and the alert each state change causes is written
to the outbox in that same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.clock import Clock
from services.core.verdicts import DETAIL_MAX, Verdict
from services.exchanges.probes import ProbeResult
from services.monitoring import outbox
from services.monitoring.events import Check, DealFailed, Notice, Target, to_payload
from services.monitoring.guard import BlockGuard, KeyOutcome, Wave, service_of, with_guard
from services.monitoring.incidents import (
    DEFAULT_POLICY,
    KEY_CHECK,
    AlertPolicy,
    IncidentState,
    IncidentStatus,
    Observation,
    confirm_after,
    key_check,
)
from services.monitoring.pipeline import STAGES, Situation, decide
from services.storage.models import Connection, Incident, User

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    """What a checker needs about one leased connection."""

    id: int
    user_id: int
    kind: str
    exchange: str
    label: str
    credentials: bytes
    interval: timedelta
    balances_at: datetime | None
    key_info: dict[str, Any]
    check_state: dict[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """A checker's conclusion about one connection: the key itself, plus what the key shows
    (``symptoms``: further checks behind it, e.g. a 3Commas account's deals)."""

    verdict: Verdict
    detail: str = ""
    key_info: dict[str, Any] | None = None
    balances: dict[str, Any] | None = None
    weight: float = 1
    symptoms: tuple[Observation, ...] = ()
    check_state: dict[str, Any] | None = None

    @classmethod
    def from_probe(cls, result: ProbeResult) -> CheckResult:
        return cls(
            verdict=result.verdict,
            detail=result.detail,
            key_info=result.key_info.to_json() if result.key_info is not None else None,
            balances=result.balances,
            weight=result.weight,
        )


def check_columns(result: CheckResult, now: datetime) -> dict[str, Any]:
    """The ``connections`` columns a key check result sets, for the poller and a user's Refresh alike.

    Incident state, scheduling and leases are not here: only the poller owns those.
    """
    columns: dict[str, Any] = {
        "last_check_at": now,
        "verdict": result.verdict.value,
        "verdict_detail": result.detail[:DETAIL_MAX],
        "updated_at": now,
    }
    if result.verdict is Verdict.OK:
        columns["last_ok_at"] = now
    if result.key_info is not None:
        columns["key_info"] = result.key_info
    if result.balances is not None:
        columns["balances"] = result.balances
        columns["balances_at"] = now
    if result.check_state is not None:
        columns["check_state"] = result.check_state
    return columns


Checker = Callable[[Claimed], Awaitable[CheckResult]]
# Stores what a one-off event's button needs (a failed deal's recreate plan); returns its row id.
RecreatePlanStore = Callable[[AsyncSession, Connection, Observation, datetime], Awaitable[int | None]]
IntervalStretch = Callable[[str, timedelta, int], timedelta]


@dataclass
class PollerConfig:
    default_interval: timedelta = timedelta(seconds=60)
    batch_size: int = 200
    concurrency: int = 64
    lease: timedelta = timedelta(seconds=120)
    jitter: float = 0.1
    balances_every: timedelta = timedelta(minutes=30)
    group_window: timedelta = outbox.DEFAULT_GROUP_WINDOW


@dataclass
class Poller:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    worker_id: str
    checkers: dict[str, Checker]
    config: PollerConfig = field(default_factory=PollerConfig)
    policy: AlertPolicy = DEFAULT_POLICY
    stretch: IntervalStretch | None = None
    # Per connection kind: keeps a failed deal's recreate plan so its alert's button can name it.
    recreate_plans: dict[str, RecreatePlanStore] = field(default_factory=dict)
    observe: Callable[[Claimed, CheckResult, float], None] | None = None
    # "Our IP blocked is not your key revoked" (services/monitoring/guard.py): sees every batch
    # before it is decided and holds key verdicts that arrive as a wave.
    guard: BlockGuard | None = None
    # Told once per wave the guard starts (the worker tells the operator and backs off).
    on_wave: Callable[[Wave], Awaitable[None]] | None = None
    random: random.Random = field(default_factory=random.Random)
    checked: int = 0
    population: dict[str, int] = field(default_factory=dict)
    _population_at: datetime | None = None
    _gate: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    async def claim(self, limit: int | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due connections of users who have not blocked the bot."""
        now = self.clock.now()
        limit = limit or self.config.batch_size
        dialect = self.sessions.kw["bind"].dialect.name
        candidates = (
            select(Connection.id)
            .join(User, User.id == Connection.user_id)
            .where(
                Connection.next_poll_at <= now,
                or_(Connection.lease_until.is_(None), Connection.lease_until < now),
                User.blocked.is_(False),
            )
            .order_by(Connection.next_poll_at)
            .limit(limit)
        )
        if dialect == "postgresql":
            candidates = candidates.with_for_update(of=Connection, skip_locked=True)
        until = now + self.config.lease
        async with self.sessions.begin() as session:
            ids = list(
                await session.scalars(
                    update(Connection)
                    .where(
                        Connection.id.in_(candidates.scalar_subquery()),
                        or_(Connection.lease_until.is_(None), Connection.lease_until < now),
                    )
                    .values(lease_owner=self.worker_id, lease_until=until)
                    .returning(Connection.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not ids:
                return []
            rows = (
                await session.execute(
                    select(Connection, User.poll_interval_seconds)
                    .join(User, User.id == Connection.user_id)
                    .where(Connection.id.in_(ids))
                )
            ).all()
        default = self.config.default_interval
        return [
            Claimed(
                id=c.id,
                user_id=c.user_id,
                kind=c.kind,
                exchange=c.exchange,
                label=c.label,
                credentials=c.credentials,
                interval=timedelta(seconds=interval) if interval else default,
                balances_at=c.balances_at,
                key_info=dict(c.key_info or {}),
                check_state=dict(c.check_state or {}),
            )
            for c, interval in rows
        ]

    async def _check(self, claimed: Claimed, gate: asyncio.Semaphore) -> CheckResult:
        async with gate:
            checker = self.checkers.get(claimed.kind)
            if checker is None:
                return CheckResult(Verdict.UNKNOWN, f"no checker for {claimed.kind}")
            started = time.perf_counter()
            try:
                result = await checker(claimed)
            except Exception as error:  # a checker bug must not stall the whole batch
                log.exception("checker failed for connection %s", claimed.id)
                result = CheckResult(Verdict.UNKNOWN, type(error).__name__)
            if self.observe is not None:
                self.observe(claimed, result, time.perf_counter() - started)
            return result

    async def refresh_population(self) -> None:
        """Connections per exchange, refreshed once a minute, for fair interval stretching."""
        now = self.clock.now()
        if self._population_at is not None and now - self._population_at < timedelta(minutes=1):
            return
        async with self.sessions() as session:
            rows = await session.execute(
                select(Connection.exchange, func.count()).group_by(Connection.exchange)
            )
            self.population = {exchange: int(count) for exchange, count in rows.all()}
        self._population_at = now

    async def run_once(self) -> int:
        """Claim one batch, check it with bounded concurrency, record it; returns how many."""
        if self.stretch is not None:
            await self.refresh_population()
        batch = await self.claim()
        if not batch:
            return 0
        # One gate for every batch in flight: ``concurrency`` bounds this worker's probes however
        # many batches run at once (Worker.poll overlaps them), so requests never queue for the
        # hub's per-host connections and time out there.
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.config.concurrency)
        results = await asyncio.gather(*(self._check(c, self._gate) for c in batch))
        await self.record(list(zip(batch, results, strict=True)))
        if self.guard is not None and self.on_wave is not None:
            for wave in self.guard.waves_started():
                await self.on_wave(wave)
        self.checked += len(batch)
        return len(batch)

    async def record(self, outcomes: Sequence[tuple[Claimed, CheckResult]]) -> None:
        """Write results, decide every check, enqueue its events and release leases, in one transaction."""
        now = self.clock.now()
        ids = [c.id for c, _ in outcomes]
        if self.guard is not None:
            self.guard.observe_batch(
                (KeyOutcome(service_of(c.kind, c.exchange), c.id, r.verdict) for c, r in outcomes), now
            )
        async with self.sessions.begin() as session:
            connections = {
                c.id: c
                for c in await session.scalars(
                    select(Connection).where(Connection.id.in_(ids), Connection.lease_owner == self.worker_id)
                )
            }
            incidents = {
                (i.connection_id, i.check_kind): i
                for i in await session.scalars(select(Incident).where(Incident.connection_id.in_(ids)))
            }
            users = {
                u.id: u
                for u in await session.scalars(
                    select(User).where(User.id.in_({c.user_id for c, _ in outcomes}))
                )
            }
            notices: list[tuple[int, dict[str, Any]]] = []
            for claimed, result in outcomes:
                connection = connections.get(claimed.id)
                if connection is None:  # lease lost to another worker, or the user removed it
                    continue
                muted = _muted(connection, users[connection.user_id], now)
                key = key_check(result.verdict is Verdict.OK, result.verdict, result.detail)
                key_state = await self._decide(
                    session, connection, incidents, key, Situation(muted), now, notices
                )
                self._write_check(connection, claimed, result, key_state, now)
                for observation in result.symptoms:
                    situation = Situation(muted, key_state.status)
                    await self._decide(session, connection, incidents, observation, situation, now, notices)
            await outbox.enqueue_grouped(
                session, notices, kind="alert", now=now, window=self.config.group_window
            )

    async def _decide(
        self,
        session: AsyncSession,
        connection: Connection,
        incidents: dict[tuple[int, str], Incident],
        observation: Observation,
        situation: Situation,
        now: datetime,
        notices: list[tuple[int, dict[str, Any]]],
    ) -> IncidentState:
        """Runs one observation through the pipeline, stores its incident, collects its notices."""
        row = None if observation.is_event else incidents.get((connection.id, observation.check_kind))
        before = IncidentState() if row is None else IncidentState.from_row(row)
        stages = STAGES
        if self.guard is not None:
            stages = with_guard(STAGES, self.guard, service_of(connection.kind, connection.exchange))
        state, events = decide(before, observation, self.policy, now, situation, stages=stages)
        if not observation.is_event and state != before:
            if row is None:
                row = Incident(connection_id=connection.id, check_kind=observation.check_kind)
                session.add(row)
                incidents[(connection.id, observation.check_kind)] = row
            state.apply_to(row)
            row.updated_at = now
        target = Target(connection.id, connection.exchange, connection.label)
        check = None
        if observation.check_kind != KEY_CHECK:
            check = Check(observation.check_kind, observation.verdict_or_reason, observation.subject)
        for event in events:
            if isinstance(event, DealFailed):
                event = replace(
                    event, failed_deal_id=await self._store_plan(session, connection, observation, now)
                )
            notices.append((connection.user_id, to_payload(Notice(target, event, check))))
        return state

    async def _store_plan(
        self, session: AsyncSession, connection: Connection, observation: Observation, now: datetime
    ) -> int | None:
        store = self.recreate_plans.get(connection.kind)
        return None if store is None else await store(session, connection, observation, now)

    def _write_check(
        self, connection: Connection, claimed: Claimed, result: CheckResult, key: IncidentState, now: datetime
    ) -> None:
        for column, value in check_columns(result, now).items():
            setattr(connection, column, value)
        connection.state = key.status.value
        connection.next_poll_at = self._next_poll(claimed, key, now)
        connection.lease_owner = None
        connection.lease_until = None

    def _next_poll(self, claimed: Claimed, state: IncidentState, now: datetime) -> datetime:
        interval = claimed.interval
        if self.stretch is not None:
            interval = self.stretch(claimed.exchange, interval, self.population.get(claimed.exchange, 1))
        pending = state.status is IncidentStatus.PENDING
        if pending:
            interval = min(interval, confirm_after(state.verdict, self.policy))
        if self.guard is not None and self.guard.backing_off(service_of(claimed.kind, claimed.exchange)):
            interval = max(interval, self.guard.config.backoff)
        spread = interval.total_seconds() * self.config.jitter
        # Jitter spreads the load, each way in the direction that costs no alert time. A regular
        # check is only ever earlier than the interval, so a key revoked just after a check is seen
        # within one interval. A confirmation probe is only ever later: one landing before the
        # rule's T cannot confirm, and the extra probe it forces doubles the alert delay.
        low, high = (0.0, spread) if pending else (-spread, 0.0)
        return now + interval + timedelta(seconds=self.random.uniform(low, high))

    async def release(self) -> None:
        """Give back every lease this worker holds (graceful shutdown)."""
        async with self.sessions.begin() as session:
            await session.execute(
                update(Connection)
                .where(Connection.lease_owner == self.worker_id)
                .values(lease_owner=None, lease_until=None)
            )


def _muted(connection: Connection, user: User, now: datetime) -> bool:
    return any(until is not None and until > now for until in (connection.muted_until, user.muted_until))
