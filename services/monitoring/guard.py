"""Our IP blocked is not your key revoked: a wave of identical key errors is first our problem.

Services sometimes answer a block of *our* IP with a key-level error: Binance sends -2015
"Invalid API-key, IP, or permissions for action" to valid keys during a temporary ban (ccxt
async_support/binance.py ``handle_errors`` comment; ccxt issue #11045, tests/corpus
``binance/2015_during_ip_ban``); 3Commas answers 401 to every key whose whitelist our address
fell off (docs ``quick-start/8_errors``, tests/corpus ``threecommas/401_ip_not_whitelisted``).
One such answer reads as a dead key; many keys of one service, behind one egress route, turning
to the *same* key-level verdict within minutes, several of which passed minutes before, is what
a block looks like. A 3Commas 418 (docs ``quick-start/9_limits``) needs no counting: the answer
itself says our IP is banned (``KeyOutcome.proof``). Real mass revocations exist too (an
exchange-wide key reset), which is why the hold is not forever and a canary key can lift it.

While a wave is on for ``(service, egress route, verdict)``:

* the pipeline's ``guard`` stage (:func:`with_guard`) turns that verdict into ``rate_limited``
  with a detail saying why: no key alert, no "delete your key" advice, and the incident machine's
  much longer rate-limit rule (three failures over 30 minutes) decides whether the user hears at
  all, in words that say their key is not the problem;
* the poller spaces that service's checks on that route by ``GuardConfig.backoff``
  (:meth:`BlockGuard.backing_off`): more probes would only prolong a ban;
* :meth:`BlockGuard.claim_new_waves` hands each new wave to exactly one worker, which tells the
  operator (``ADMIN_CHAT_IDS``), counts it in a metric, logs an ERROR and probes the operator's
  canary key (``CANARY_KEYS``) where one is set (bot/operator.py);
* a canary that still works (:meth:`BlockGuard.canary_result`) proves our IP is fine: the route's
  waves are released, the keys are judged one by one again (users hear promptly), and no new wave
  starts on that route for ``GuardConfig.canary_trust``, so a real mass revocation is neither held
  again a minute later nor announced over and over.

The state lives in the database (``guard_signals``, ``guard_waves``), so every worker counts the
same wave and holds the same users; it is keyed by egress route, so a ban of one IP does not hold
the users whose calls leave from another. A worker writes only when its batch holds a masking
verdict; otherwise it re-reads the waves at most every ``GuardConfig.sync``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.verdicts import Verdict
from services.exchanges.egress import DIRECT
from services.monitoring.incidents import KEY_CHECK, Observation
from services.monitoring.pipeline import Flow, Stage
from services.storage.models import GuardSignal, GuardWave

__all__ = ["BlockGuard", "GuardConfig", "KeyOutcome", "Wave", "service_of", "with_guard"]

# Verdicts an IP block is known to masquerade as (-2015 → key_invalid / ip_not_allowed; 3Commas 401).
_MASKING = frozenset({Verdict.KEY_INVALID, Verdict.IP_NOT_ALLOWED, Verdict.PERMISSION_MISSING})


@dataclass(frozen=True)
class GuardConfig:
    """``min_keys`` distinct connections turning to one masking verdict within ``window``, at least
    ``min_recent_ok`` of which had passed within ``recent_ok`` before, start a wave (one ``proof``
    is enough); it ends after ``quiet`` without that verdict on that route."""

    window: timedelta = timedelta(minutes=3)
    min_keys: int = 5
    min_recent_ok: int = 2
    recent_ok: timedelta = timedelta(minutes=15)
    quiet: timedelta = timedelta(minutes=10)
    backoff: timedelta = timedelta(minutes=5)
    # A canary key that worked is believed this long: no wave starts again on its route meanwhile.
    canary_trust: timedelta = timedelta(minutes=15)
    # How stale a worker's view of the waves may grow while its own checks show nothing masking.
    sync: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class KeyOutcome:
    """One key check as the guard needs it: ``passed_at`` is when the key last passed (None if
    never), ``proof`` that the answer itself says our IP is blocked (a 3Commas 418)."""

    service: str
    connection_id: int
    verdict: Verdict
    egress: str = DIRECT
    passed_at: datetime | None = None
    proof: bool = False


@dataclass(frozen=True)
class Wave:
    """A suspected block of ``egress`` by ``service``, shown as ``verdict`` on ``keys`` keys."""

    id: int
    service: str
    egress: str
    verdict: Verdict
    started_at: datetime
    keys: int
    announced: bool = False

    @property
    def banned(self) -> bool:
        """Started by an answer that names the ban itself (a 418), not by counting key errors."""
        return self.verdict not in _MASKING


def service_of(kind: str, exchange: str) -> str:
    """The service a connection's key talks to: its exchange, or ``threecommas``."""
    return exchange if kind == "exchange" else kind


def _in_scopes(scopes: Iterable[tuple[str, str]], table: Any) -> Any:
    return or_(*(and_(table.service == service, table.egress == egress) for service, egress in scopes))


class BlockGuard:
    """The wave state of every worker, kept in the database; ``held`` and ``backing_off`` answer
    from this worker's last read of it (refreshed by :meth:`observe_batch`)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: GuardConfig | None = None) -> None:
        self.sessions = sessions
        self.config = config or GuardConfig()
        self._waves: dict[tuple[str, str, Verdict], Wave] = {}
        self._read_at: datetime | None = None

    async def observe_batch(self, outcomes: Iterable[KeyOutcome], now: datetime) -> None:
        """Count a batch of key checks (all of them; only masking ones are stored) before any of
        them is decided, start or extend the waves they make, and re-read the waves."""
        signals = [o for o in outcomes if o.proof or o.verdict in _MASKING]
        if signals:
            async with self.sessions.begin() as session:
                await self._record(session, signals, now)
                await self._read(session, now)
        elif self._read_at is None or now - self._read_at >= self.config.sync:
            async with self.sessions() as session:
                await self._read(session, now)

    async def _record(self, session: AsyncSession, signals: Sequence[KeyOutcome], now: datetime) -> None:
        cfg = self.config
        await session.execute(delete(GuardSignal).where(GuardSignal.seen_at < now - cfg.window))
        await session.execute(
            delete(GuardWave).where(
                or_(
                    and_(GuardWave.cleared_until.is_(None), GuardWave.last_seen < now - cfg.quiet),
                    GuardWave.cleared_until <= now,
                )
            )
        )
        await session.execute(
            insert(GuardSignal),
            [
                {
                    "service": o.service,
                    "egress": o.egress,
                    "verdict": o.verdict.value,
                    "connection_id": o.connection_id,
                    "seen_at": now,
                    "passed_recently": o.passed_at is not None and now - o.passed_at <= cfg.recent_ok,
                    "proof": o.proof,
                }
                for o in signals
            ],
        )
        scopes = {(o.service, o.egress) for o in signals}
        seen_now = {(o.service, o.egress, o.verdict.value) for o in signals}
        waves = {
            (w.service, w.egress, w.verdict): w
            for w in (
                await session.execute(
                    select(
                        GuardWave.id, GuardWave.service, GuardWave.egress, GuardWave.verdict,
                        GuardWave.keys, GuardWave.cleared_until,
                    ).where(_in_scopes(scopes, GuardWave))
                )
            ).all()
        }  # fmt: skip
        cleared = {(s, e) for (s, e, _), w in waves.items() if w.cleared_until is not None}
        distinct = func.count(GuardSignal.connection_id.distinct())
        recent = func.count(case((GuardSignal.passed_recently, GuardSignal.connection_id)).distinct())
        tallies = await session.execute(
            select(
                GuardSignal.service, GuardSignal.egress, GuardSignal.verdict,
                distinct, recent, func.max(case((GuardSignal.proof, 1), else_=0)),
            )
            .where(_in_scopes(scopes, GuardSignal))
            .group_by(GuardSignal.service, GuardSignal.egress, GuardSignal.verdict)
        )  # fmt: skip
        for service, egress, verdict, keys, passed, proof in tallies.all():
            key = (service, egress, verdict)
            if key not in seen_now or (service, egress) in cleared:
                continue
            wave = waves.get(key)
            if wave is not None:
                await session.execute(
                    update(GuardWave)
                    .where(GuardWave.id == wave.id)
                    .values(last_seen=now, keys=max(wave.keys, keys))
                )
            elif proof or (keys >= cfg.min_keys and passed >= cfg.min_recent_ok):
                await self._start(session, service, egress, verdict, keys, now)

    async def _start(
        self, session: AsyncSession, service: str, egress: str, verdict: str, keys: int, now: datetime
    ) -> None:
        """A new wave row; another worker starting the same wave at the same moment wins quietly."""
        values = {
            "service": service, "egress": egress, "verdict": verdict,
            "started_at": now, "last_seen": now, "keys": keys,
        }  # fmt: skip
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        await session.execute(
            dialect.insert(GuardWave)
            .values(values)
            .on_conflict_do_nothing(index_elements=["service", "egress", "verdict"])
        )

    async def _read(self, session: AsyncSession, now: datetime) -> None:
        rows = await session.execute(
            select(
                GuardWave.id, GuardWave.service, GuardWave.egress, GuardWave.verdict,
                GuardWave.started_at, GuardWave.keys, GuardWave.announced_at,
            ).where(GuardWave.cleared_until.is_(None), GuardWave.last_seen >= now - self.config.quiet)
        )  # fmt: skip
        waves = (
            Wave(r.id, r.service, r.egress, Verdict(r.verdict), r.started_at, r.keys, bool(r.announced_at))
            for r in rows.all()
        )
        self._waves = {(w.service, w.egress, w.verdict): w for w in waves}
        self._read_at = now

    def held(self, service: str, verdict: Verdict, egress: str = DIRECT) -> Wave | None:
        """The wave holding ``verdict`` on ``service`` behind ``egress``, if any."""
        return self._waves.get((service, egress, verdict))

    def backing_off(self, service: str, egress: str = DIRECT) -> bool:
        """Whether a wave is on for ``service`` on ``egress``: its checks are spaced by
        ``config.backoff`` (more probes would only prolong a ban)."""
        return any(k[0] == service and k[1] == egress for k in self._waves)

    async def claim_new_waves(self, now: datetime) -> list[Wave]:
        """Waves nobody announced yet, each claimed by exactly one worker (the caller tells the
        operator about the ones returned)."""
        fresh = [wave for wave in self._waves.values() if not wave.announced]
        if not fresh:
            return []
        claimed = []
        async with self.sessions.begin() as session:
            for wave in fresh:
                won = await session.execute(
                    update(GuardWave)
                    .where(GuardWave.id == wave.id, GuardWave.announced_at.is_(None))
                    .values(announced_at=now)
                )
                if won.rowcount:  # type: ignore[attr-defined]
                    claimed.append(wave)
                self._waves[(wave.service, wave.egress, wave.verdict)] = replace(wave, announced=True)
        return claimed

    async def canary_result(self, service: str, egress: str, verdict: Verdict, now: datetime) -> None:
        """The operator's canary key on ``service`` answered ``verdict`` from ``egress``: if it works,
        our IP is not blocked, so the keys really fail one by one: release the route's waves and
        believe it for ``config.canary_trust``."""
        if verdict is not Verdict.OK:
            return
        scope = [(service, egress)]
        async with self.sessions.begin() as session:
            await session.execute(
                update(GuardWave)
                .where(_in_scopes(scope, GuardWave))
                .values(cleared_until=now + self.config.canary_trust)
            )
            await session.execute(delete(GuardSignal).where(_in_scopes(scope, GuardSignal)))
        self._waves = {k: w for k, w in self._waves.items() if (k[0], k[1]) != (service, egress)}


def with_guard(
    stages: Sequence[tuple[str, Stage]], guard: BlockGuard, service: str, egress: str = DIRECT
) -> tuple[tuple[str, Stage], ...]:
    """``stages`` with the ``guard`` stage for one connection of ``service`` inserted before
    ``confirm``: a key check whose verdict a wave holds is confirmed as ``rate_limited`` instead
    (our traffic, not the key), with a detail that says so."""

    def guard_stage(flow: Flow) -> Flow:
        obs = flow.observation
        if obs.check_kind != KEY_CHECK or obs.ok:
            return flow
        wave = guard.held(service, obs.verdict, egress)
        if wave is None:
            return flow
        detail = (
            f"{wave.keys} keys on {service} turned to {obs.verdict} at once: "
            f"this looks like {service} blocking our server's IP, not your key"
        )
        return replace(flow, observation=Observation(KEY_CHECK, False, Verdict.RATE_LIMITED, detail))

    at = next(i for i, (name, _) in enumerate(stages) if name == "confirm")
    return (*stages[:at], ("guard", guard_stage), *stages[at:])
