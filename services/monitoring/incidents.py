"""The incident state machine: when a failing check becomes a message, and when it stops.

Users trust a watchdog only if it speaks once per real problem. So every check on a connection
(``check_kind``: ``"key"`` for the key itself, others for balance/PnL symptoms) walks through

    ok ──1st failure──► pending ──rule met──► failing ──ok──► ok
                          └──────────ok (silent)──────────────┘

and :func:`step` turns each probe result into at most a handful of events. The module is pure:
no I/O, no clock of its own; the caller passes ``now`` and persists :class:`IncidentState` in
the ``incidents`` row (:meth:`IncidentState.from_row` / :meth:`IncidentState.apply_to`).

User-visible promises (each one is tested in ``tests/test_incidents.py``):

* A single failed probe never alerts. A failure becomes an :class:`Alert` only when the
  verdict's :class:`ConfirmRule` is met: at least N consecutive failures **and** at least T
  seconds since the first of them. Both are required: N alone would let the fast re-probes
  (:func:`confirm_after`) confirm a network blip within seconds, T alone would let one late
  second probe confirm anything.
* One :class:`Alert` per incident, one :class:`Recovery` when it ends; repeated failures in
  between are silent except for :func:`due_reminder` and one :class:`VerdictChanged`.
* "Down since" is the first failed probe (``pending_since``), not the confirmation moment:
  that is when the key actually stopped working, so Alert/Reminder ``since`` and the
  Recovery ``duration`` are measured from it.
* A verdict change while pending restarts confirmation with the new verdict's rule, unless
  the two verdicts share a rule (e.g. network ↔ exchange_down, key_invalid ↔ ip_not_allowed):
  then they are the same kind of evidence and keep counting. So a key problem that follows a
  network blip is confirmed by its own fast rule, never by the slow network one.
* A failing incident whose verdict becomes a key problem (e.g. network → key_invalid) sends
  one :class:`VerdictChanged` once the new verdict is itself confirmed: the user now has to
  act, which the first alert did not ask of them. Changes between key problems, or away from
  one, are not announced (reminders carry the current verdict); this bounds it to one per
  incident so an exchange alternating error codes cannot spam.
* Flapping: more than ``flap_threshold`` ok↔failing transitions within ``flap_window`` send
  one :class:`FlappingNotice` instead of that transition's event; Alerts, Recoveries,
  VerdictChanged and reminders are then suppressed until no transition happened for a whole
  window. The next probe after that sends one summary (``summary=FLAPPING_SETTLED``): an Alert
  if failing, a Recovery if not. Only confirmed transitions count; pending → ok is invisible.
* Reminders while failing: after 1 h, then 6 h, then 24 h, then daily (the last gap repeats),
  at most 7 per incident, each gap measured from the previous message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from services.core.verdicts import Verdict, clip_detail
from services.monitoring.events import (
    Alert,
    FlappingNotice,
    IncidentEvent,
    Recovery,
    Reminder,
    Summary,
    VerdictChanged,
)

if TYPE_CHECKING:
    from services.storage.models import Incident

KEY_CHECK = "key"
"""``Incident.check_kind`` of the key check; every other kind is a symptom of the key."""

_MIN_REPROBE = timedelta(seconds=5)  # never hammer an exchange faster than this while confirming


class IncidentStatus(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FAILING = "failing"


class UserView(StrEnum):
    """What the user currently believes about a check; stored in ``muted_state`` at mute time.

    Pending is ``OK`` here: the user has not been told anything yet.
    """

    OK = "ok"
    FAILING = "failing"
    FLAPPING = "flapping"


@dataclass(frozen=True)
class ConfirmRule:
    """When a pending failure becomes an alert: ``failures`` probes in a row, spanning ``seconds``."""

    failures: int
    seconds: float

    def __post_init__(self) -> None:
        if self.failures < 2:
            raise ValueError("a single failed probe must never alert: failures must be >= 2")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")

    def met(self, failures: int, elapsed: timedelta) -> bool:
        return failures >= self.failures and elapsed >= timedelta(seconds=self.seconds)

    @property
    def reprobe(self) -> timedelta:
        """Probe spacing that meets both conditions at the ``failures``-th probe."""
        return max(_MIN_REPROBE, timedelta(seconds=self.seconds / (self.failures - 1)))


_KEY_RULE = ConfirmRule(failures=2, seconds=10)
_OUTAGE_RULE = ConfirmRule(failures=5, seconds=300)

DEFAULT_RULES: Mapping[Verdict, ConfirmRule] = {
    # The exchange rejected the key itself. A second probe 10 s later rules out a one-off
    # (a node that has not yet seen a fresh key, a proxy hiccup) and still alerts in seconds.
    Verdict.KEY_INVALID: _KEY_RULE,
    Verdict.SIGNATURE_INVALID: _KEY_RULE,
    Verdict.PASSPHRASE_INVALID: _KEY_RULE,
    Verdict.IP_NOT_ALLOWED: _KEY_RULE,
    Verdict.KEY_EXPIRED: _KEY_RULE,
    Verdict.PERMISSION_MISSING: _KEY_RULE,
    # Usually our clock or the exchange's time offset, which the client re-syncs; a minute
    # and three probes lets that happen before bothering anyone.
    Verdict.CLOCK_SKEW: ConfirmRule(failures=3, seconds=60),
    # Outages and timeouts mostly last seconds and say nothing about the key: five unbroken
    # minutes before an alert.
    Verdict.NETWORK: _OUTAGE_RULE,
    Verdict.EXCHANGE_DOWN: _OUTAGE_RULE,
    # Our own request budget, not the key. Alert only when we have been blind for 30 minutes,
    # because then the user is effectively unwatched.
    Verdict.RATE_LIMITED: ConfirmRule(failures=3, seconds=1800),
    # Unclassified: could be anything, so between the key and the outage rules.
    Verdict.UNKNOWN: ConfirmRule(failures=3, seconds=120),
}


@dataclass(frozen=True)
class AlertPolicy:
    rules: Mapping[Verdict, ConfirmRule] = field(default_factory=lambda: DEFAULT_RULES)
    flap_threshold: int = 4
    flap_window: timedelta = timedelta(hours=1)
    reminder_schedule: tuple[timedelta, ...] = (timedelta(hours=1), timedelta(hours=6), timedelta(hours=24))
    max_reminders: int = 7

    def __post_init__(self) -> None:
        missing = set(Verdict) - {Verdict.OK} - set(self.rules)
        if missing:
            raise ValueError(f"no confirmation rule for {sorted(missing)}")
        if not self.reminder_schedule or min(self.reminder_schedule) <= timedelta(0):
            raise ValueError("reminder_schedule needs at least one positive gap")
        if self.flap_window <= timedelta(0) or self.flap_threshold < 1:
            raise ValueError("flap_window must be positive and flap_threshold at least 1")

    def rule(self, verdict: Verdict) -> ConfirmRule:
        return self.rules[verdict]

    def reminder_gap(self, sent: int) -> timedelta:
        """Gap before reminder ``sent + 1``; the last scheduled gap repeats ("then daily")."""
        return self.reminder_schedule[min(sent, len(self.reminder_schedule) - 1)]


DEFAULT_POLICY = AlertPolicy()


# -- state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    verdict: Verdict
    since: datetime
    until: datetime


@dataclass(frozen=True)
class IncidentMemo:
    """Contents of the ``Incident.transitions`` JSON column: memory beyond the scalar columns.

    ``recent``: confirmed ok↔failing transitions (pruned to the flap window when one is added);
    ``flapping_since``/``flapping_until``: the running flap episode, ``flapping_until`` moving
    to "last transition + window"; ``confirm_since``: start of the current confirmation (the
    rule's T is measured from it, and it restarts on a verdict change); ``confirmed``: the
    verdict the incident was confirmed (or escalated) with, which a Recovery reports;
    ``last_outage``: the latest ended outage, for summaries after flapping or a mute.
    """

    recent: tuple[datetime, ...] = ()
    flapping_since: datetime | None = None
    flapping_until: datetime | None = None
    confirm_since: datetime | None = None
    confirmed: Verdict | None = None
    last_outage: Outage | None = None

    def to_json(self) -> dict[str, Any]:
        outage = self.last_outage
        return {
            "recent": [t.isoformat() for t in self.recent],
            "flapping_since": _iso(self.flapping_since),
            "flapping_until": _iso(self.flapping_until),
            "confirm_since": _iso(self.confirm_since),
            "confirmed": None if self.confirmed is None else self.confirmed.value,
            "last_outage": None
            if outage is None
            else {"verdict": outage.verdict.value, "since": _iso(outage.since), "until": _iso(outage.until)},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> IncidentMemo:
        """Reads :meth:`to_json` output; ``{}`` (the column default) is an empty memo."""
        outage = raw.get("last_outage")
        confirmed = raw.get("confirmed")
        return cls(
            recent=tuple(datetime.fromisoformat(t) for t in raw.get("recent", ())),
            flapping_since=_parse(raw.get("flapping_since")),
            flapping_until=_parse(raw.get("flapping_until")),
            confirm_since=_parse(raw.get("confirm_since")),
            confirmed=None if confirmed is None else Verdict(confirmed),
            last_outage=None
            if outage is None
            else Outage(
                Verdict(outage["verdict"]),
                datetime.fromisoformat(outage["since"]),
                datetime.fromisoformat(outage["until"]),
            ),
        )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse(raw: str | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw)


STATE_COLUMNS = (
    "state",
    "verdict",
    "detail",
    "failures",
    "pending_since",
    "failing_since",
    "last_alert_at",
    "reminders_sent",
    "transitions",
    "muted_state",
)
"""The ``incidents`` columns :class:`IncidentState` reads and writes."""


@dataclass(frozen=True)
class IncidentState:
    """One ``incidents`` row's alert state; each field is the column of the same name.

    ``status`` is the ``state`` column. ``pending_since`` is the first failed probe and stays
    set while failing (it is "down since"); ``failing_since`` is when the alert was confirmed;
    ``failures`` counts the probes of the current confirmation (up to the rule's N);
    ``last_alert_at`` is when the user was last told about this incident (the reminder clock).
    """

    status: IncidentStatus = IncidentStatus.OK
    verdict: Verdict = Verdict.OK
    detail: str = ""
    failures: int = 0
    pending_since: datetime | None = None
    failing_since: datetime | None = None
    last_alert_at: datetime | None = None
    reminders_sent: int = 0
    transitions: IncidentMemo = field(default_factory=IncidentMemo)
    muted_state: UserView | None = None

    def __post_init__(self) -> None:
        memo = self.transitions
        if self.status is not IncidentStatus.OK and (
            self.pending_since is None or memo.confirm_since is None
        ):
            raise ValueError("a pending or failing incident needs pending_since and confirm_since")
        if self.status is IncidentStatus.FAILING and (
            self.failing_since is None or self.last_alert_at is None or memo.confirmed is None
        ):
            raise ValueError("a failing incident needs failing_since, last_alert_at and confirmed")

    @classmethod
    def from_row(cls, row: Incident) -> IncidentState:
        """Loads a stored row. A row not yet flushed has no column defaults: for a new
        incident start from ``IncidentState()`` and :meth:`apply_to` it."""
        return cls.from_columns({name: getattr(row, name) for name in STATE_COLUMNS})

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> IncidentState:
        """Loads the :data:`STATE_COLUMNS` of a row read without the ORM."""
        return cls(
            status=IncidentStatus(row["state"]),
            verdict=Verdict(row["verdict"]),
            detail=row["detail"],
            failures=row["failures"],
            pending_since=row["pending_since"],
            failing_since=row["failing_since"],
            last_alert_at=row["last_alert_at"],
            reminders_sent=row["reminders_sent"],
            transitions=IncidentMemo.from_json(row["transitions"] or {}),
            muted_state=None if row["muted_state"] is None else UserView(row["muted_state"]),
        )

    def to_columns(self) -> dict[str, Any]:
        """Every state column's value; identity columns and ``updated_at`` are the caller's."""
        return {
            "state": self.status.value,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "failures": self.failures,
            "pending_since": self.pending_since,
            "failing_since": self.failing_since,
            "last_alert_at": self.last_alert_at,
            "reminders_sent": self.reminders_sent,
            "transitions": self.transitions.to_json(),
            "muted_state": None if self.muted_state is None else self.muted_state.value,
        }

    def apply_to(self, row: Incident) -> None:
        """Writes every state column to an ORM row (``transitions`` gets a new dict, so
        SQLAlchemy sees the JSON column change)."""
        for name, value in self.to_columns().items():
            setattr(row, name, value)

    @property
    def flapping(self) -> bool:
        return self.transitions.flapping_until is not None


@dataclass(frozen=True, slots=True)
class Observation:
    """One check's outcome: the one type from every checker to this machine.

    ``check_kind`` names the incident (:data:`KEY_CHECK` for the key itself, e.g.
    ``tc_account:7`` or ``deal_failed:9`` for what a 3Commas key shows). ``verdict_or_reason`` is
    a :class:`Verdict` value, or for a symptom a finer reason to show the user (``account_locked``),
    which the machine confirms like ``unknown``. ``subject`` holds what the message names (a
    deal's pair, an account's name). ``is_event`` marks one-off happenings (a failed deal): they
    are announced once and never step an incident.
    """

    check_kind: str
    ok: bool
    verdict_or_reason: str
    detail: str = ""
    subject: Mapping[str, Any] = field(default_factory=dict)
    is_event: bool = False

    def __post_init__(self) -> None:
        failing_verdict = (
            self.verdict_or_reason in Verdict._value2member_map_ and self.verdict_or_reason != Verdict.OK
        )
        if (self.ok and failing_verdict) or (not self.ok and self.verdict_or_reason == Verdict.OK):
            raise ValueError(f"ok={self.ok} contradicts {self.verdict_or_reason!r}")

    @property
    def verdict(self) -> Verdict:
        """What the machine confirms on: ``ok``, the verdict, or ``unknown`` for a finer reason."""
        if self.ok:
            return Verdict.OK
        known = self.verdict_or_reason in Verdict._value2member_map_
        return Verdict(self.verdict_or_reason) if known else Verdict.UNKNOWN


def key_check(ok: bool, verdict: Verdict, detail: str = "") -> Observation:
    """The key check's observation, as the poller makes it from a probe's verdict."""
    return Observation(KEY_CHECK, ok, verdict.value, clip_detail(detail))


# -- the machine --------------------------------------------------------------------------


def step(
    state: IncidentState, obs: Observation, now: datetime, policy: AlertPolicy = DEFAULT_POLICY
) -> tuple[IncidentState, list[IncidentEvent]]:
    """Advances ``state`` by one probe result taken at ``now``.

    Muted checks must still be stepped (and their events dropped) so the state tracks
    reality; :func:`unmute_summary` then reports what changed.
    """
    _require_aware(now)
    flapping_since = state.transitions.flapping_since
    settling = state.transitions.flapping_until is not None and now >= state.transitions.flapping_until
    if settling:
        state = replace(
            state, transitions=replace(state.transitions, flapping_until=None, flapping_since=None)
        )
    if obs.ok:
        state, events = _observe_ok(state, now, policy)
    else:
        state, events = _observe_failure(state, obs, now, policy)
    if settling and not events:
        # Stable for a whole window: tell the user where it settled. Any event this probe
        # produced already says that, so the summary is only needed when it was silent.
        assert flapping_since is not None  # set together with flapping_until
        state, summary = _settle(state, flapping_since, now)
        events.append(summary)
    return state, events


def _observe_ok(
    state: IncidentState, now: datetime, policy: AlertPolicy
) -> tuple[IncidentState, list[IncidentEvent]]:
    memo = replace(state.transitions, confirm_since=None, confirmed=None)
    events: list[IncidentEvent] = []
    if state.status is IncidentStatus.FAILING:
        verdict, since = state.transitions.confirmed, state.pending_since
        assert verdict is not None and since is not None  # guaranteed by __post_init__
        memo, events = _transition(memo, now, policy, Recovery(verdict, since, now - since))
        memo = replace(memo, last_outage=Outage(verdict, since, now))
    return (
        replace(
            state,
            status=IncidentStatus.OK,
            verdict=Verdict.OK,
            detail="",
            failures=0,
            pending_since=None,
            failing_since=None,
            reminders_sent=0,
            transitions=memo,
        ),
        events,
    )


def _observe_failure(
    state: IncidentState, obs: Observation, now: datetime, policy: AlertPolicy
) -> tuple[IncidentState, list[IncidentEvent]]:
    memo = state.transitions
    rule = policy.rule(obs.verdict)
    if state.status is IncidentStatus.OK:
        pending_since, failures, confirm_since = now, 1, now
    else:
        assert state.pending_since is not None and memo.confirm_since is not None  # by __post_init__
        pending_since = state.pending_since
        if rule == policy.rule(state.verdict):
            # Same kind of evidence (same rule): keep counting under the newest verdict, up to the
            # rule's N: more probes say nothing new, so a steady failure leaves the row unchanged.
            failures, confirm_since = min(state.failures + 1, rule.failures), memo.confirm_since
        else:
            failures, confirm_since = 1, now
    state = replace(
        state,
        status=IncidentStatus.PENDING if state.status is IncidentStatus.OK else state.status,
        verdict=obs.verdict,
        detail=clip_detail(obs.detail),
        failures=failures,
        pending_since=pending_since,
        transitions=replace(memo, confirm_since=confirm_since),
    )
    if not rule.met(failures, now - confirm_since):
        return state, []
    if state.status is IncidentStatus.PENDING:
        return _confirm(state, now, policy)
    assert memo.confirmed is not None  # failing ⇒ confirmed, by __post_init__
    if obs.verdict.is_key_problem and not memo.confirmed.is_key_problem:
        return _escalate(state, memo.confirmed, now)
    return state, []


def _confirm(
    state: IncidentState, now: datetime, policy: AlertPolicy
) -> tuple[IncidentState, list[IncidentEvent]]:
    assert state.pending_since is not None
    alert = Alert(state.verdict, state.detail, state.pending_since)
    memo, events = _transition(state.transitions, now, policy, alert)
    state = replace(
        state,
        status=IncidentStatus.FAILING,
        failing_since=now,
        last_alert_at=now,
        reminders_sent=0,
        transitions=replace(memo, confirmed=state.verdict),
    )
    return state, events


def _escalate(
    state: IncidentState, previous: Verdict, now: datetime
) -> tuple[IncidentState, list[IncidentEvent]]:
    assert state.pending_since is not None
    escalated = replace(state, transitions=replace(state.transitions, confirmed=state.verdict))
    if state.flapping:
        return escalated, []  # the settle summary will carry the new verdict
    event = VerdictChanged(previous, state.verdict, state.detail, state.pending_since)
    return replace(escalated, last_alert_at=now), [event]


def _transition(
    memo: IncidentMemo, now: datetime, policy: AlertPolicy, event: IncidentEvent
) -> tuple[IncidentMemo, list[IncidentEvent]]:
    """Records a confirmed ok↔failing transition and decides whether ``event`` may go out."""
    recent = (*(t for t in memo.recent if now - t < policy.flap_window), now)
    memo = replace(memo, recent=recent)
    if memo.flapping_until is not None:
        return replace(memo, flapping_until=now + policy.flap_window), []
    if len(recent) > policy.flap_threshold:
        notice = FlappingNotice(len(recent), policy.flap_window)
        return replace(memo, flapping_since=recent[0], flapping_until=now + policy.flap_window), [notice]
    return memo, [event]


def _settle(
    state: IncidentState, flapping_since: datetime, now: datetime
) -> tuple[IncidentState, IncidentEvent]:
    if state.status is IncidentStatus.FAILING:
        assert state.pending_since is not None
        alert = Alert(state.verdict, state.detail, state.pending_since, Summary.FLAPPING_SETTLED)
        memo = replace(state.transitions, confirmed=state.verdict)
        return replace(state, last_alert_at=now, transitions=memo), alert
    # Not failing after a flap episode ⇒ some failing→ok transition happened in it.
    outage = state.transitions.last_outage
    assert outage is not None
    duration = outage.until - flapping_since
    return state, Recovery(outage.verdict, flapping_since, duration, Summary.FLAPPING_SETTLED)


def due_reminder(
    state: IncidentState, now: datetime, policy: AlertPolicy = DEFAULT_POLICY
) -> tuple[IncidentState, Reminder | None]:
    """The next reminder for a still-failing incident, if one is due at ``now``.

    Gaps run from the previous message (``last_alert_at``), not from a fixed timetable, so a
    periodic job that was down for a day sends one reminder when it returns, not a burst.
    """
    _require_aware(now)
    if (
        state.status is not IncidentStatus.FAILING
        or state.flapping
        or state.reminders_sent >= policy.max_reminders
    ):
        return state, None
    assert state.last_alert_at is not None and state.pending_since is not None
    if now < state.last_alert_at + policy.reminder_gap(state.reminders_sent):
        return state, None
    number = state.reminders_sent + 1
    reminder = Reminder(state.verdict, state.detail, state.pending_since, number)
    return replace(state, reminders_sent=number, last_alert_at=now), reminder


def confirm_after(verdict: Verdict, policy: AlertPolicy = DEFAULT_POLICY) -> timedelta:
    """How soon to re-probe a pending connection so its rule is met by the N-th probe.

    Spacing the probes ``T / (N - 1)`` apart makes the N-th probe land exactly at T: key
    problems are confirmed ~10 s after the first failure, outages after 5 min. The poller
    should use the smaller of this and its regular interval, unless the exchange's rate
    budget asks for a longer back-off.
    """
    return policy.rule(verdict).reprobe


# -- mute, inhibition ------------------------------------------------------


def _user_view(state: IncidentState) -> UserView:
    if state.flapping:
        return UserView.FLAPPING
    return UserView.FAILING if state.status is IncidentStatus.FAILING else UserView.OK


def mute_snapshot(state: IncidentState) -> UserView:
    """What the user knows at mute time; store it as ``muted_state`` (clear it on unmute)."""
    return _user_view(state)


def unmute_summary(
    state: IncidentState, now: datetime, policy: AlertPolicy = DEFAULT_POLICY
) -> Alert | Recovery | FlappingNotice | None:
    """One event telling what changed while muted, or None if the user's picture still holds.

    Compares the user's view (ok / failing / flapping) at mute time with now. Failing now →
    an Alert since the first failed probe; ok now → a Recovery of the latest ended outage;
    flapping now → a FlappingNotice counting the transitions of the last ``flap_window``.
    A verdict change within a failing incident is not summarised: the next reminder carries it.
    """
    _require_aware(now)
    before, after = state.muted_state, _user_view(state)
    if before is None or before == after:
        return None
    if after is UserView.FLAPPING:
        recent = [t for t in state.transitions.recent if now - t < policy.flap_window]
        return FlappingNotice(len(recent), policy.flap_window)
    if after is UserView.FAILING:
        assert state.pending_since is not None
        return Alert(state.verdict, state.detail, state.pending_since, Summary.WHILE_MUTED)
    # ok now, failing or flapping before ⇒ an outage ended in between.
    outage = state.transitions.last_outage
    assert outage is not None
    return Recovery(outage.verdict, outage.since, outage.until - outage.since, Summary.WHILE_MUTED)


def inhibited(check_kind: str, key_status: IncidentStatus) -> bool:
    """Whether a check on a connection is silenced by the state of that connection's key check.

    Balance and PnL checks read through the same key, so while the key check is pending or
    failing — a key problem, or an outage on the same path — their failures are symptoms
    and the key incident already speaks for them. Silence them from pending on, so a symptom
    cannot be confirmed first and beat the key alert. The caller neither probes nor steps nor
    reminds an inhibited check (it would only spend rate budget on a known-dead key); its
    incident stays as it was and resumes once the key check is ok again.
    """
    return check_kind != KEY_CHECK and key_status is not IncidentStatus.OK


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("naive datetime; pass an aware UTC datetime")
