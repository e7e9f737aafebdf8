"""The alert pipeline, pure: one observation in, the new incident state and the events to send out.

Everything that decides whether a check's result becomes a message is here, as an ordered list
of small named stages (:data:`STAGES`), so "why was I (not) alerted?" is answered by reading
one list::

    announce → inhibit → confirm → remind → mute      → events ready for the outbox

* ``announce``: a one-off happening (a failed deal) is told once, unless muted; it never steps
  an incident, so the pipeline ends there.
* ``inhibit``: a symptom behind a key that is itself pending or failing is not stepped at all
  (:func:`incidents.inhibited`); the key's incident speaks for it. It runs before ``confirm``
  because an inhibited check must keep its state, not merely lose its events.
* ``confirm``: the incident state machine (:func:`incidents.step`): alerts, recoveries,
  verdict changes, flapping.
* ``remind``: a still-failing incident's next reminder (:func:`incidents.due_reminder`).
* ``mute``: while muted, events are dropped and what the user knew at mute time is kept; the
  first step after the mute replaces that step's events with one :class:`MuteSummary`.

A stage takes and returns a :class:`Flow`; one that sets ``halted`` ends the pipeline. Another
stage (say, "our own IP is blocked: this is not the key") is a function inserted into a copy of
:data:`STAGES` at the right place and passed to :func:`decide`.

Outage grouping (:func:`group_outages`, :func:`fold_outages`) lives here too: it decides what a
user reads when many checks fail on one exchange.

The :class:`Poller` (``polling.py``) only claims, probes and writes what :func:`decide` returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from services.core.verdicts import Verdict
from services.monitoring.events import Alert, DealFailed, Event, MuteSummary, Notice, OutageNotice, Target
from services.monitoring.incidents import (
    AlertPolicy,
    IncidentState,
    IncidentStatus,
    Observation,
    due_reminder,
    inhibited,
    mute_snapshot,
    step,
    unmute_summary,
)

K = TypeVar("K")
_OUTAGE_VERDICTS = frozenset({Verdict.NETWORK, Verdict.EXCHANGE_DOWN})


@dataclass(frozen=True)
class Situation:
    """What a decision needs besides the incident: this connection's circumstances right now.

    ``muted``: the connection or its user is muted. ``key_status``: the state of the same
    connection's key check after this round (a symptom behind a dead key is inhibited).
    """

    muted: bool = False
    key_status: IncidentStatus = IncidentStatus.OK


@dataclass(frozen=True)
class Flow:
    """What passes from stage to stage; ``before`` is the state the pipeline started from."""

    before: IncidentState
    state: IncidentState
    observation: Observation
    policy: AlertPolicy
    now: datetime
    situation: Situation
    events: tuple[Event, ...] = ()
    halted: bool = False


Stage = Callable[[Flow], Flow]


def announce(flow: Flow) -> Flow:
    obs = flow.observation
    if not obs.is_event:
        return flow
    events = () if flow.situation.muted else (DealFailed(obs.verdict_or_reason, obs.detail),)
    return replace(flow, events=events, halted=True)


def inhibit(flow: Flow) -> Flow:
    if inhibited(flow.observation.check_kind, flow.situation.key_status):
        return replace(flow, halted=True)
    return flow


def confirm(flow: Flow) -> Flow:
    state, events = step(flow.state, flow.observation, flow.now, flow.policy)
    return replace(flow, state=state, events=(*flow.events, *events))


def remind(flow: Flow) -> Flow:
    state, reminder = due_reminder(flow.state, flow.now, flow.policy)
    if reminder is None:
        return flow
    return replace(flow, state=state, events=(*flow.events, reminder))


def mute(flow: Flow) -> Flow:
    state = flow.state
    if flow.situation.muted:
        known = flow.before.muted_state
        snapshot = mute_snapshot(flow.before) if known is None else known
        return replace(flow, state=replace(state, muted_state=snapshot), events=())
    if state.muted_state is None:
        return flow
    summary = unmute_summary(state, flow.now, flow.policy)
    events: tuple[Event, ...] = () if summary is None else (MuteSummary(summary),)
    return replace(flow, state=replace(state, muted_state=None), events=events)


STAGES: tuple[tuple[str, Stage], ...] = (
    ("announce", announce),
    ("inhibit", inhibit),
    ("confirm", confirm),
    ("remind", remind),
    ("mute", mute),
)


def decide(
    state: IncidentState,
    observation: Observation,
    policy: AlertPolicy,
    now: datetime,
    situation: Situation = Situation(),
    *,
    stages: Sequence[tuple[str, Stage]] = STAGES,
) -> tuple[IncidentState, list[Event]]:
    """Runs ``observation`` through ``stages``; returns the state to store and the events to send."""
    flow = Flow(state, state, observation, policy, now, situation)
    for _name, stage in stages:
        flow = stage(flow)
        if flow.halted:
            break
    return flow.state, list(flow.events)


# -- outages --------------------------------------------------------------------------------------


def group_outages(
    failures: Iterable[tuple[int, str, Verdict]],
    *,
    checked: Mapping[str, int] | None = None,
    min_users: int = 3,
    min_share: float = 0.5,
) -> frozenset[str]:
    """Exchanges that look down: many users failing with network/exchange_down at once.

    ``failures`` are ``(user_id, exchange, verdict)`` from one window; ``checked`` optionally
    gives how many distinct users were probed per exchange in that window. An exchange is down
    when at least ``min_users`` distinct users see an outage verdict and, if ``checked`` is
    known, they are at least ``min_share`` of those probed. Distinct users, not connections,
    so one user's ten sub-account keys cannot declare Bybit down for everyone; the share keeps
    a handful out of thousands from doing so on a large deployment. Key problems and
    rate limits never count: they are about a key or our own budget, not the exchange.
    """
    users: defaultdict[str, set[int]] = defaultdict(set)
    for user_id, exchange, verdict in failures:
        if verdict in _OUTAGE_VERDICTS:
            users[exchange].add(user_id)
    probed = checked or {}
    return frozenset(
        exchange
        for exchange, affected in users.items()
        if len(affected) >= min_users
        and len(affected) >= min_share * max(len(affected), probed.get(exchange, 0))
    )


def _outage(exchange: str, targets: Sequence[Target]) -> OutageNotice:
    return OutageNotice(exchange, tuple(t.connection_id for t in targets), tuple(t.version for t in targets))


def fold_outages(
    user_id: int, notices: Sequence[tuple[K, Notice]]
) -> list[tuple[list[K], Notice | OutageNotice]]:
    """One user's due notices (each with a key, e.g. its outbox row id), outage alerts folded into
    one :class:`OutageNotice` per exchange; each item comes back with the keys it stands for.

    Which exchanges look down is :func:`group_outages`'s decision, here over this one user's
    connections (so one distinct user suffices). The folded notice takes the place of the first
    alert it stands for, so the order of everything else is kept.
    """
    down = group_outages(
        ((user_id, n.target.exchange, v) for _, n in notices if (v := _outage_verdict(n)) is not None),
        min_users=1,
    )
    folded: list[tuple[list[K], Notice | OutageNotice]] = []
    groups: dict[str, tuple[list[K], list[Target]]] = {}
    for key, notice in notices:
        exchange = notice.target.exchange
        if exchange not in down or _outage_verdict(notice) is None:
            folded.append(([key], notice))
            continue
        if exchange not in groups:
            groups[exchange] = ([], [])
            folded.append((groups[exchange][0], OutageNotice(exchange, (), ())))
        groups[exchange][0].append(key)
        groups[exchange][1].append(notice.target)
    return [
        (keys, _outage(item.exchange, groups[item.exchange][1]))
        if isinstance(item, OutageNotice)
        else (keys, item)
        for keys, item in folded
    ]


def _outage_verdict(notice: Notice) -> Verdict | None:
    """The verdict of a live key alert that says "unreachable" rather than "your key"; else None."""
    event = notice.event
    if notice.check is None and isinstance(event, Alert) and event.summary is None:
        return event.verdict if event.verdict in _OUTAGE_VERDICTS else None
    return None
