"""Our IP blocked is not your key revoked: a wave of identical key errors is first our problem.

Exchanges sometimes answer a ban of *our* IP with a key-level error: Binance sends -2015 "Invalid
API-key, IP, or permissions for action" to valid keys during a temporary ban (ccxt
async_support/binance.py ``handle_errors`` comment; ccxt issue #11045, tests/corpus
``binance/2015_during_ip_ban``); 3Commas answers 401 to every key when our IP falls off an
account's whitelist (docs ``quick-start/8_errors``). One such answer reads as a dead key; many keys
of one service, behind one egress IP, turning to the *same* key-level verdict within minutes,
several of which passed minutes before, is what a block looks like. Real mass revocations exist
too (an exchange-wide key reset), which is why the hold is not forever.

While a wave is on for ``(service, egress)``:

* the pipeline's ``guard`` stage (:func:`with_guard`) turns that verdict into ``rate_limited``
  with a detail saying why: no key alert, no "delete your key" advice, and the incident machine's
  much longer rate-limit rule (three failures over 30 minutes) decides whether the user hears at
  all, in words that say their key is not the problem;
* :meth:`BlockGuard.waves_started` hands each new wave to the caller once, who pauses that
  service's budget, tells the operator (``ADMIN_CHAT_IDS``), counts it in a metric and logs an
  ERROR, and probes the operator's canary key (``CANARY_KEYS``) where one is set;
* a canary that still works (:meth:`BlockGuard.canary_result`) proves our IP is fine: the wave is
  released, the keys are judged one by one again, and for ``canary_trust`` no new wave starts on
  that service and egress (in a real mass revocation every batch would otherwise look like a
  new wave, each held until its own canary probe answered).

The guard is generic over the service (an exchange id or ``threecommas``); callers feed it every
key-check outcome of a batch *before* the batch is decided (:meth:`observe_batch`), so a wave seen
in one batch holds every key of that batch. State is per process; each worker judges what it
probes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.core.verdicts import Verdict
from services.monitoring.incidents import KEY_CHECK, Observation
from services.monitoring.pipeline import Flow, Stage

__all__ = ["BlockGuard", "GuardConfig", "KeyOutcome", "Wave", "service_of", "with_guard"]

DEFAULT_EGRESS = "default"
# Verdicts an IP block is known to masquerade as (-2015 → key_invalid / ip_not_allowed; 3Commas 401).
_MASKING = frozenset({Verdict.KEY_INVALID, Verdict.IP_NOT_ALLOWED, Verdict.PERMISSION_MISSING})


@dataclass(frozen=True)
class GuardConfig:
    """``min_keys`` distinct connections turning to one masking verdict within ``window``, at least
    ``min_recent_ok`` of which passed within ``recent_ok`` before, start a wave; it ends after
    ``quiet`` without that verdict on that service."""

    window: timedelta = timedelta(minutes=3)
    min_keys: int = 5
    min_recent_ok: int = 2
    recent_ok: timedelta = timedelta(minutes=15)
    quiet: timedelta = timedelta(minutes=10)
    backoff: timedelta = timedelta(minutes=5)
    canary_trust: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyOutcome:
    """One key check as the guard needs it."""

    service: str
    connection_id: int
    verdict: Verdict
    egress: str = DEFAULT_EGRESS


@dataclass
class Wave:
    """A suspected block of ``egress`` by ``service``, shown as ``verdict`` on ``keys`` keys."""

    service: str
    egress: str
    verdict: Verdict
    started_at: datetime
    keys: set[int] = field(default_factory=set)
    last_seen: datetime | None = None
    announced: bool = False


def service_of(kind: str, exchange: str) -> str:
    """The service a connection's key talks to: its exchange, or ``threecommas``."""
    return exchange if kind == "exchange" else kind


class BlockGuard:
    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self._failures: defaultdict[tuple[str, str, Verdict], dict[int, datetime]] = defaultdict(dict)
        self._last_ok: dict[tuple[str, str, int], datetime] = {}
        self._waves: dict[tuple[str, str, Verdict], Wave] = {}
        self._canary_ok: dict[tuple[str, str], datetime] = {}

    def observe_batch(self, outcomes: Iterable[KeyOutcome], now: datetime) -> None:
        """Record a batch of key checks (all of them, OKs included) before any is decided."""
        cfg = self.config
        for outcome in outcomes:
            scope = (outcome.service, outcome.egress)
            if outcome.verdict is Verdict.OK:
                self._last_ok[(*scope, outcome.connection_id)] = now
                continue
            if outcome.verdict not in _MASKING:
                continue
            failing: tuple[str, str, Verdict] = (*scope, outcome.verdict)
            self._failures[failing][outcome.connection_id] = now
            wave = self._waves.get(failing)
            if wave is not None:
                wave.keys.add(outcome.connection_id)
                wave.last_seen = now
        for key, seen in list(self._failures.items()):
            for connection_id, at in list(seen.items()):
                if now - at > cfg.window:
                    del seen[connection_id]
            wave = self._waves.get(key)
            if wave is not None and wave.last_seen is not None and now - wave.last_seen > cfg.quiet:
                del self._waves[key]
            service, egress, _ = key
            trusted = self._canary_ok.get((service, egress))
            if trusted is not None and now - trusted <= cfg.canary_trust:
                continue
            if wave is None and len(seen) >= cfg.min_keys:
                recent = sum(
                    1
                    for connection_id in seen
                    if (ok_at := self._last_ok.get((service, egress, connection_id))) is not None
                    and now - ok_at <= cfg.recent_ok
                )
                if recent >= cfg.min_recent_ok:
                    self._waves[key] = Wave(service, egress, key[2], now, set(seen), now)

    def held(self, service: str, verdict: Verdict, egress: str = DEFAULT_EGRESS) -> Wave | None:
        """The wave holding ``verdict`` on ``service`` behind ``egress``, if any."""
        return self._waves.get((service, egress, verdict))

    def backing_off(self, service: str, egress: str = DEFAULT_EGRESS) -> bool:
        """Whether a wave is on for ``service``: its checks are spaced by ``config.backoff`` (more
        probes would only prolong a ban)."""
        return any(k[0] == service and k[1] == egress for k in self._waves)

    def waves_started(self) -> list[Wave]:
        """Waves not yet announced; each is returned once (the caller tells the operator)."""
        fresh = [wave for wave in self._waves.values() if not wave.announced]
        for wave in fresh:
            wave.announced = True
        return fresh

    def canary_result(
        self, service: str, verdict: Verdict, now: datetime, egress: str = DEFAULT_EGRESS
    ) -> None:
        """The operator's canary key on ``service`` answered ``verdict`` at ``now``: if it works, our
        IP is not blocked, so the keys really fail one by one: release every wave of that service
        and trust the result for ``config.canary_trust``."""
        if verdict is Verdict.OK:
            self._canary_ok[(service, egress)] = now
            for key in [k for k in self._waves if k[0] == service and k[1] == egress]:
                del self._waves[key]
                self._failures.pop(key, None)


def with_guard(
    stages: Sequence[tuple[str, Stage]], guard: BlockGuard, service: str, egress: str = DEFAULT_EGRESS
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
            f"{len(wave.keys)} keys on {service} turned to {obs.verdict} at once: "
            "this looks like the exchange blocking our server's IP, not your key"
        )
        return replace(flow, observation=Observation(KEY_CHECK, False, Verdict.RATE_LIMITED, detail))

    at = next(i for i, (name, _) in enumerate(stages) if name == "confirm")
    return (*stages[:at], ("guard", guard_stage), *stages[at:])
