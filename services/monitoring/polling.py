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
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.clock import Clock
from services.core.vault import VaultError
from services.core.verdicts import Verdict, clip_detail
from services.exchanges.egress import DIRECT
from services.exchanges.probes import ProbeResult
from services.monitoring import outbox
from services.monitoring.events import Check, DealFailed, Notice, Target, to_payload
from services.monitoring.guard import BlockGuard, KeyOutcome, Wave, service_of, with_guard
from services.monitoring.incidents import (
    DEFAULT_POLICY,
    KEY_CHECK,
    STATE_COLUMNS,
    AlertPolicy,
    IncidentState,
    IncidentStatus,
    Observation,
    confirm_after,
    key_check,
)
from services.monitoring.pipeline import STAGES, Situation, Stage, decide
from services.storage.button_tokens import connection_token, failed_deal_token
from services.storage.models import Connection, FailedDeal, Incident, User

log = logging.getLogger(__name__)

_CONNECTIONS = cast(Table, Connection.__table__)
_INCIDENTS = cast(Table, Incident.__table__)


@dataclass(frozen=True)
class Claimed:
    """What a checker needs about one leased connection."""

    id: int
    user_id: int
    kind: str
    exchange: str
    label: str
    key_hint: str
    credentials: bytes
    interval: timedelta
    balances_at: datetime | None
    key_info: dict[str, Any]
    check_state: dict[str, Any]
    # When the key last passed: the guard's evidence that a key failing now was fine minutes ago.
    last_ok_at: datetime | None = None


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
    vault_failed: bool = False
    """The stored credentials could not be opened (VAULT_KEY changed without rotating): the
    operator's error, not the key's. Nothing about the key was learnt, so nothing is decided."""
    # The egress route the check left from (services/exchanges/egress.py): the guard's waves are per route.
    egress: str = DIRECT
    # The answer itself says the service blocks our IP (a 3Commas 418), whatever the key.
    blocks_our_ip: bool = False
    deferred_s: float | None = None
    """The route's budget had no room for this check (services/exchanges/budget.py ``Deferred``):
    nothing was sent, nothing is decided, and the check comes back after this many seconds."""

    @classmethod
    def from_probe(cls, result: ProbeResult, egress: str = DIRECT) -> CheckResult:
        return cls(
            verdict=result.verdict,
            detail=result.detail,
            key_info=result.key_info.to_json() if result.key_info is not None else None,
            balances=result.balances,
            weight=result.weight,
            egress=egress,
        )


def check_columns(result: CheckResult, now: datetime) -> dict[str, Any]:
    """The ``connections`` columns a key check result sets, for the poller and a user's Refresh alike.

    Incident state, scheduling and leases are not here: only the poller owns those.
    """
    columns: dict[str, Any] = {
        "last_check_at": now,
        "verdict": result.verdict.value,
        "verdict_detail": clip_detail(result.detail),
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
# Stores what a one-off event's button needs (a failed deal's recreate plan) for (user id,
# connection id); returns the stored row's id.
RecreatePlanStore = Callable[[AsyncSession, int, int, Observation, datetime], Awaitable[int | None]]
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
    # Told of a batch's connections whose stored credentials would not open (the operator's error).
    on_vault_failure: Callable[[Sequence[Claimed]], Awaitable[None]] | None = None
    random: random.Random = field(default_factory=random.Random)
    # ALLOWED_USER_IDS: connections of anyone else are not polled (empty: everyone is allowed).
    allowed_users: frozenset[int] = frozenset()
    checked: int = 0
    population: dict[str, int] = field(default_factory=dict)
    _population_at: datetime | None = None
    _gate: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _guarding: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def claim(self, limit: int | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due connections of allowed users who have not blocked the bot."""
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
        if self.allowed_users:
            candidates = candidates.where(User.id.in_(self.allowed_users))
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
                    select(  # plain columns, no ORM objects: this runs for every check
                        Connection.id,
                        Connection.user_id,
                        Connection.kind,
                        Connection.exchange,
                        Connection.label,
                        Connection.key_hint,
                        Connection.credentials,
                        Connection.balances_at,
                        Connection.key_info,
                        Connection.check_state,
                        Connection.last_ok_at,
                        User.poll_interval_seconds,
                    )
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
                key_hint=c.key_hint,
                credentials=c.credentials,
                interval=timedelta(seconds=c.poll_interval_seconds) if c.poll_interval_seconds else default,
                balances_at=c.balances_at,
                key_info=dict(c.key_info or {}),
                check_state=dict(c.check_state or {}),
                last_ok_at=c.last_ok_at,
            )
            for c in rows
        ]

    async def _check(self, claimed: Claimed, gate: asyncio.Semaphore) -> CheckResult:
        async with gate:
            checker = self.checkers.get(claimed.kind)
            if checker is None:
                return CheckResult(Verdict.UNKNOWN, f"no checker for {claimed.kind}")
            started = time.perf_counter()
            try:
                result = await checker(claimed)
            except VaultError as error:  # every kind opens its credentials the same way: one place
                result = CheckResult(Verdict.UNKNOWN, str(error), vault_failed=True)
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
        self.checked += sum(1 for r in results if r.deferred_s is None)
        return len(batch)

    async def record(self, outcomes: Sequence[tuple[Claimed, CheckResult]]) -> None:
        """Decide every check, write what changed, enqueue the events, release the leases.

        One transaction and a fixed handful of statements per batch, whatever its size: one read
        (the leased connections joined with their users' mutes and their incidents), then bulk
        Core writes: one UPDATE of the connections per set of changed columns (one set in steady
        state), the incidents whose state changed (none in steady state), the outbox rows if
        there is anything to say. No ORM objects: at hundreds of checks a second their
        bookkeeping cost more CPU than the checks (bench/mass_revocation.py, CPU per check).
        """
        now = self.clock.now()
        unopened = [c for c, r in outcomes if r.vault_failed]
        if unopened and self.on_vault_failure is not None:
            await self.on_vault_failure(unopened)
        claimed = {c.id: (c, r) for c, r in outcomes}
        if self.guard is not None:
            # A wave is announced (and the operator's canary probed) before this batch is decided:
            # a canary that works releases it at once, so a real mass revocation is alerted on
            # the leading edge instead of being held and spaced out by the back-off first. Batches
            # of the other lanes wait for that answer here rather than being held by the wave.
            async with self._guarding:
                await self.guard.observe_batch(
                    (_key_outcome(c, r) for c, r in outcomes if not r.vault_failed and r.deferred_s is None),
                    now,
                )
                if self.on_wave is not None:
                    for wave in await self.guard.claim_new_waves(now):
                        await self.on_wave(wave)
        async with self.sessions.begin() as session:
            rows = (
                await session.execute(
                    select(
                        Connection.id,
                        Connection.verdict,
                        Connection.verdict_detail,
                        Connection.state,
                        Connection.muted_until,
                        User.muted_until.label("user_muted_until"),
                        Incident.id.label("incident_id"),
                        Incident.check_kind,
                        *(getattr(Incident, name).label(f"i_{name}") for name in STATE_COLUMNS),
                    )
                    .join(User, User.id == Connection.user_id)
                    .outerjoin(Incident, Incident.connection_id == Connection.id)
                    .where(Connection.id.in_(claimed), Connection.lease_owner == self.worker_id)
                )
            ).all()
            held: dict[int, Any] = {}
            incidents: dict[tuple[int, str], tuple[int, IncidentState]] = {}
            for row in rows:
                held.setdefault(row.id, row)
                if row.incident_id is not None:
                    columns = {name: row._mapping[f"i_{name}"] for name in STATE_COLUMNS}
                    incidents[(row.id, row.check_kind)] = (
                        row.incident_id,
                        IncidentState.from_columns(columns),
                    )
            writes = _Writes()
            # A connection missing from ``held`` lost its lease to another worker, or was removed.
            for connection_id, row in held.items():
                check, result = claimed[connection_id]
                if result.deferred_s is not None:  # not checked at all: only its new turn
                    writes.connection(check.id, {"next_poll_at": now + timedelta(seconds=result.deferred_s)})
                    continue
                if result.vault_failed:  # no verdict, no incident, no notice: only the next check
                    next_poll = self._next_poll(check, IncidentState(), now, result.egress)
                    writes.connection(check.id, {"next_poll_at": next_poll})
                    continue
                muted = any(
                    until is not None and until > now for until in (row.muted_until, row.user_muted_until)
                )
                key = key_check(result.verdict is Verdict.OK, result.verdict, result.detail)
                stages = self._stages(check, result)
                key_state = self._decide(check, incidents, key, Situation(muted), now, writes, stages)
                writes.connection(check.id, self._connection_columns(check, row, result, key_state, now))
                for observation in result.symptoms:
                    situation = Situation(muted, key_state.status)
                    self._decide(check, incidents, observation, situation, now, writes, stages)
            await self._flush(session, writes, now)

    def _stages(self, check: Claimed, result: CheckResult) -> Sequence[tuple[str, Stage]]:
        """The pipeline for one connection: with the guard stage for its service and route."""
        if self.guard is None:
            return STAGES
        return with_guard(STAGES, self.guard, service_of(check.kind, check.exchange), result.egress)

    def _decide(
        self,
        check: Claimed,
        incidents: dict[tuple[int, str], tuple[int, IncidentState]],
        observation: Observation,
        situation: Situation,
        now: datetime,
        writes: _Writes,
        stages: Sequence[tuple[str, Stage]],
    ) -> IncidentState:
        """Runs one observation through the pipeline; notes its incident's change and its notices."""
        known = None if observation.is_event else incidents.get((check.id, observation.check_kind))
        before = IncidentState() if known is None else known[1]
        state, events = decide(before, observation, self.policy, now, situation, stages=stages)
        if not observation.is_event and state != before:
            writes.incident(check.id, observation.check_kind, None if known is None else known[0], state)
        if events:  # most observations change nothing to say: no token to draw then
            target = Target(check.id, check.exchange, check.label, check.key_hint, connection_token(check))
            ref = None
            if observation.check_kind != KEY_CHECK:
                ref = Check(observation.check_kind, observation.verdict_or_reason, observation.subject)
            writes.notices.extend((check, observation, Notice(target, event, ref)) for event in events)
        return state

    def _connection_columns(
        self, check: Claimed, row: Any, result: CheckResult, key: IncidentState, now: datetime
    ) -> dict[str, Any]:
        """The columns this check sets: schedule always, the rest only where they differ."""
        columns = check_columns(result, now)
        stored = {
            "verdict": row.verdict,
            "verdict_detail": row.verdict_detail,
            "key_info": check.key_info,
            "check_state": check.check_state,
        }
        for name, value in stored.items():
            if name in columns and columns[name] == value:
                del columns[name]
        if key.status.value != row.state:
            columns["state"] = key.status.value
        columns["next_poll_at"] = self._next_poll(check, key, now, result.egress)
        return columns

    async def _flush(self, session: AsyncSession, writes: _Writes, now: datetime) -> None:
        """Each kind of write as one bulk statement (executemany), leases released with the update."""
        connections = _CONNECTIONS
        for names, params in writes.connections.items():
            values: dict[str, Any] = {name: bindparam(f"b_{name}") for name in names}
            statement = (
                update(connections)
                .where(connections.c.id == bindparam("b_id"), connections.c.lease_owner == self.worker_id)
                .values({**values, "lease_owner": None, "lease_until": None})
            )
            await session.execute(statement, params)
        incidents = _INCIDENTS
        if writes.changed_incidents:
            names = (*STATE_COLUMNS, "updated_at")
            statement = (
                update(incidents)
                .where(incidents.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in names})
            )
            params = [
                {
                    "b_id": incident_id,
                    "b_updated_at": now,
                    **{f"b_{k}": v for k, v in state.to_columns().items()},
                }
                for incident_id, state in writes.changed_incidents
            ]
            await session.execute(statement, params)
        if writes.new_incidents:
            rows = [
                {"connection_id": cid, "check_kind": kind, "updated_at": now, **state.to_columns()}
                for cid, kind, state in writes.new_incidents
            ]
            await session.execute(insert(incidents), rows)
        if writes.notices:
            messages = []
            for check, observation, notice in writes.notices:
                if isinstance(notice.event, DealFailed):
                    plan = await self._store_plan(session, check, observation, now)
                    if plan is not None:
                        version = failed_deal_token(plan)
                        event = replace(notice.event, failed_deal_id=plan.id, failed_deal_version=version)
                        notice = replace(notice, event=event)
                messages.append((check.user_id, to_payload(notice)))
            await outbox.enqueue_grouped(
                session, messages, kind="alert", now=now, window=self.config.group_window
            )

    async def _store_plan(
        self, session: AsyncSession, check: Claimed, observation: Observation, now: datetime
    ) -> FailedDeal | None:
        """The stored recreate plan a deal_failed alert's button names (the row, for its token)."""
        store = self.recreate_plans.get(check.kind)
        plan_id = None if store is None else await store(session, check.user_id, check.id, observation, now)
        return None if plan_id is None else await session.get(FailedDeal, plan_id)

    def _next_poll(self, claimed: Claimed, state: IncidentState, now: datetime, egress: str) -> datetime:
        interval = claimed.interval
        if self.stretch is not None:
            interval = self.stretch(claimed.exchange, interval, self.population.get(claimed.exchange, 1))
        pending = state.status is IncidentStatus.PENDING
        if pending:
            interval = min(interval, confirm_after(state.verdict, self.policy))
        service = service_of(claimed.kind, claimed.exchange)
        if self.guard is not None and self.guard.backing_off(service, egress):
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


def _key_outcome(check: Claimed, result: CheckResult) -> KeyOutcome:
    service = service_of(check.kind, check.exchange)
    return KeyOutcome(
        service, check.id, result.verdict, result.egress, check.last_ok_at, proof=result.blocks_our_ip
    )


@dataclass
class _Writes:
    """What one batch will write, gathered so that each kind of write is one bulk statement."""

    connections: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)
    changed_incidents: list[tuple[int, IncidentState]] = field(default_factory=list)
    new_incidents: list[tuple[int, str, IncidentState]] = field(default_factory=list)
    notices: list[tuple[Claimed, Observation, Notice]] = field(default_factory=list)

    def connection(self, connection_id: int, columns: dict[str, Any]) -> None:
        names = tuple(sorted(columns))
        params = {"b_id": connection_id, **{f"b_{name}": columns[name] for name in names}}
        self.connections.setdefault(names, []).append(params)

    def incident(self, connection_id: int, kind: str, incident_id: int | None, state: IncidentState) -> None:
        if incident_id is None:
            self.new_incidents.append((connection_id, kind, state))
        else:
            self.changed_incidents.append((incident_id, state))
