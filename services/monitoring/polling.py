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
from services.core.verdicts import Verdict
from services.monitoring import outbox
from services.monitoring.incidents import (
    DEFAULT_POLICY,
    KEY_CHECK,
    Alert,
    AlertPolicy,
    Event,
    FlappingNotice,
    IncidentState,
    IncidentStatus,
    Observation,
    Recovery,
    Reminder,
    VerdictChanged,
    confirm_after,
    due_reminder,
    inhibited,
    mute_snapshot,
    step,
    unmute_summary,
)
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
class Symptom:
    """A further check behind one connection (a 3Commas account, a deal's UPNL, a failed deal).

    Each ``check_kind`` has an incident of its own; ``is_event`` marks one-off happenings (a deal
    that failed) that are announced once instead of stepping an incident. ``reason`` is the
    precise cause shown to the user; ``verdict`` is what the incident machine confirms on.
    """

    check_kind: str
    ok: bool
    verdict: Verdict
    reason: str
    detail: str = ""
    subject: dict[str, Any] = field(default_factory=dict)
    is_event: bool = False


@dataclass(frozen=True)
class CheckResult:
    """A checker's conclusion about one connection: the key itself, plus any symptoms."""

    verdict: Verdict
    detail: str = ""
    key_info: dict[str, Any] | None = None
    balances: dict[str, Any] | None = None
    weight: float = 1
    symptoms: tuple[Symptom, ...] = ()
    check_state: dict[str, Any] | None = None


Checker = Callable[[Claimed], Awaitable[CheckResult]]
EventPayload = Callable[[AsyncSession, Connection, Symptom, datetime], Awaitable[dict[str, Any]]]
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
    # Turns a one-off symptom (a failed deal) into outbox data, per connection kind.
    event_payloads: dict[str, EventPayload] = field(default_factory=dict)
    observe: Callable[[Claimed, CheckResult, float], None] | None = None
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
        self.checked += len(batch)
        return len(batch)

    async def record(self, outcomes: Sequence[tuple[Claimed, CheckResult]]) -> None:
        """Write results, step incidents, enqueue alerts and release leases, in one transaction."""
        now = self.clock.now()
        ids = [c.id for c, _ in outcomes]
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
            for claimed, result in outcomes:
                connection = connections.get(claimed.id)
                if connection is None:  # lease lost to another worker, or the user removed it
                    continue
                user = users[connection.user_id]

                def incident_for(kind: str, cid: int = claimed.id) -> Incident:
                    found = incidents.get((cid, kind))
                    if found is None:
                        found = self._new_incident(session, cid, kind, now)
                        incidents[(cid, kind)] = found
                    return found

                key_status = self._record_one(
                    session, connection, incident_for(KEY_CHECK), user, claimed, result, now
                )
                for symptom in result.symptoms:
                    if symptom.is_event:
                        await self._announce(session, connection, user, symptom, now)
                    elif not inhibited(symptom.check_kind, key_status):
                        self._step_symptom(
                            session, connection, incident_for(symptom.check_kind), user, symptom, now
                        )

    @staticmethod
    def _new_incident(session: AsyncSession, connection_id: int, kind: str, now: datetime) -> Incident:
        incident = Incident(connection_id=connection_id, check_kind=kind, updated_at=now)
        IncidentState().apply_to(incident)
        session.add(incident)
        return incident

    def _step_incident(
        self, incident: Incident, observation: Observation, muted: bool, now: datetime
    ) -> tuple[IncidentState, list[Event]]:
        """One step of an incident, with reminders and mutes applied; returns the events to send."""
        before = IncidentState.from_row(incident)
        if muted and before.muted_state is None:
            before = _with_mute(before)  # what the user knew when the mute began
        state, events = step(before, observation, now, self.policy)
        state, reminder = due_reminder(state, now, self.policy)
        if reminder is not None:
            events.append(reminder)
        if muted:
            events = []
        elif state.muted_state is not None:  # the mute has ended: one summary if anything changed
            summary = unmute_summary(state, now, self.policy)
            events = [summary] if summary is not None else []
            state = _without_mute(state)
        state.apply_to(incident)
        incident.updated_at = now
        return state, events

    def _enqueue(
        self, session: AsyncSession, connection: Connection, payload: dict[str, Any], now: datetime
    ) -> None:
        base = {"connection_id": connection.id, "exchange": connection.exchange, "label": connection.label}
        outbox.enqueue(
            session,
            user_id=connection.user_id,
            kind="alert",
            payload={**base, **payload},
            now=now,
            event_at=now,
            delay=self.config.group_window,
        )

    def _step_symptom(
        self,
        session: AsyncSession,
        connection: Connection,
        incident: Incident,
        user: User,
        symptom: Symptom,
        now: datetime,
    ) -> None:
        verdict = Verdict.OK if symptom.ok else symptom.verdict
        observation = Observation(symptom.ok, verdict, symptom.detail[:300])
        _, events = self._step_incident(incident, observation, _muted(connection, user, now), now)
        extra = {"check": symptom.check_kind, "reason": symptom.reason, "subject": _small(symptom.subject)}
        for event in events:
            self._enqueue(session, connection, {**event_payload(event), **extra}, now)

    async def _announce(
        self, session: AsyncSession, connection: Connection, user: User, symptom: Symptom, now: datetime
    ) -> None:
        """A one-off event: announced once (unless muted), with whatever the kind's hook adds."""
        if _muted(connection, user, now):
            return
        hook = self.event_payloads.get(connection.kind)
        extra = await hook(session, connection, symptom, now) if hook is not None else {}
        payload = {
            "type": "event",
            "check": symptom.check_kind,
            "reason": symptom.reason,
            "detail": symptom.detail,
            "subject": _small(symptom.subject),
            **extra,
        }
        self._enqueue(session, connection, payload, now)

    def _record_one(
        self,
        session: AsyncSession,
        connection: Connection,
        incident: Incident,
        user: User,
        claimed: Claimed,
        result: CheckResult,
        now: datetime,
    ) -> IncidentStatus:
        """Record the key check; returns the key incident's status (it may silence symptoms)."""
        observation = Observation(result.verdict is Verdict.OK, result.verdict, result.detail[:300])
        state, events = self._step_incident(incident, observation, _muted(connection, user, now), now)

        connection.last_check_at = now
        connection.verdict = result.verdict.value
        connection.verdict_detail = result.detail[:300]
        connection.state = state.status.value
        if result.verdict is Verdict.OK:
            connection.last_ok_at = now
        if result.key_info is not None:
            connection.key_info = result.key_info
        if result.balances is not None:
            connection.balances = result.balances
            connection.balances_at = now
        if result.check_state is not None:
            connection.check_state = result.check_state
        connection.next_poll_at = self._next_poll(claimed, state, now)
        connection.lease_owner = None
        connection.lease_until = None
        connection.updated_at = now
        for event in events:
            self._enqueue(session, connection, event_payload(event), now)
        return state.status

    def _next_poll(self, claimed: Claimed, state: IncidentState, now: datetime) -> datetime:
        interval = claimed.interval
        if self.stretch is not None:
            interval = self.stretch(claimed.exchange, interval, self.population.get(claimed.exchange, 1))
        pending = state.status is IncidentStatus.PENDING
        if pending:
            interval = min(interval, confirm_after(state.verdict, self.policy))
        spread = interval.total_seconds() * self.config.jitter
        # Confirmation probes jitter only later: one landing before the rule's T cannot confirm,
        # and the extra probe it forces doubles the alert delay (~20 s instead of ~10 s).
        return now + interval + timedelta(seconds=self.random.uniform(0 if pending else -spread, spread))

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


def _small(subject: dict[str, Any]) -> dict[str, Any]:
    """Keep outbox rows small: scalar fields only (recreate plans live in their own table)."""
    return {k: v for k, v in subject.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _with_mute(state: IncidentState) -> IncidentState:
    return replace(state, muted_state=mute_snapshot(state))


def _without_mute(state: IncidentState) -> IncidentState:
    return replace(state, muted_state=None)


def event_payload(event: Event) -> dict[str, Any]:
    """An incident event as outbox data; the bot renders it in the user's language."""
    if isinstance(event, (Alert, VerdictChanged)):  # a changed reason is announced like a new alert
        return {
            "type": "alert",
            "verdict": event.verdict.value,
            "detail": event.detail,
            "since": event.since.isoformat(),
        }
    if isinstance(event, Reminder):
        return {
            "type": "reminder",
            "verdict": event.verdict.value,
            "detail": event.detail,
            "since": event.since.isoformat(),
            "number": event.number,
        }
    if isinstance(event, Recovery):
        return {
            "type": "recovery",
            "verdict": event.verdict.value,
            "since": event.since.isoformat(),
            "duration_s": event.duration.total_seconds(),
        }
    if isinstance(event, FlappingNotice):
        return {"type": "flapping", "transitions": event.transitions}
    raise TypeError(f"unknown incident event {event!r}")
