"""The alert pipeline's stages, each alone, and :func:`decide` as their ordered composition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.core.verdicts import Verdict
from services.monitoring.events import (
    Alert,
    DealFailed,
    MuteSummary,
    Notice,
    OutageNotice,
    Recovery,
    Reminder,
    Summary,
    Target,
)
from services.monitoring.incidents import (
    DEFAULT_POLICY,
    IncidentState,
    IncidentStatus,
    Observation,
    UserView,
    key_check,
    step,
)
from services.monitoring.pipeline import (
    STAGES,
    Flow,
    Situation,
    announce,
    confirm,
    decide,
    fold_outages,
    inhibit,
    mute,
    remind,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REVOKED = key_check(False, Verdict.KEY_INVALID, "Invalid API-key")
OK = key_check(True, Verdict.OK)
LOCKED = Observation("tc_account:7", False, "account_locked", "locked", {"name": "Main"})
FAILED_DEAL = Observation("deal_failed:9", False, "deal_failed", "deal 9 failed", {}, is_event=True)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def flow(
    observation: Observation, state: IncidentState | None = None, seconds: float = 0, **situation
) -> Flow:
    state = state or IncidentState()
    return Flow(state, state, observation, DEFAULT_POLICY, at(seconds), Situation(**situation))


def failing_key() -> IncidentState:
    state, _ = step(IncidentState(), REVOKED, at(0))
    state, [alert] = step(state, REVOKED, at(10))
    assert isinstance(alert, Alert)
    return state


def test_announce_tells_a_one_off_event_once_and_ends_the_pipeline() -> None:
    out = announce(flow(FAILED_DEAL))
    assert out.halted and out.events == (DealFailed("deal_failed", "deal 9 failed"),)
    assert out.state == IncidentState()  # never an incident


def test_announce_stays_silent_while_muted_and_ignores_incident_checks() -> None:
    assert announce(flow(FAILED_DEAL, muted=True)) == replace(flow(FAILED_DEAL, muted=True), halted=True)
    assert announce(flow(REVOKED)) == flow(REVOKED)


def test_inhibit_halts_a_symptom_behind_a_pending_key_without_touching_its_state() -> None:
    start = flow(LOCKED, key_status=IncidentStatus.PENDING)
    assert inhibit(start) == replace(start, halted=True)
    assert inhibit(flow(LOCKED)) == flow(LOCKED)
    assert not inhibit(flow(REVOKED, key_status=IncidentStatus.FAILING)).halted  # the key itself


def test_confirm_alerts_on_the_second_failure_ten_seconds_later() -> None:
    first = confirm(flow(REVOKED))
    assert first.events == () and first.state.status is IncidentStatus.PENDING
    second = confirm(replace(first, now=at(10)))
    assert second.events == (Alert(Verdict.KEY_INVALID, "Invalid API-key", at(0)),)


def test_remind_adds_the_first_reminder_an_hour_after_the_alert() -> None:
    state = failing_key()
    assert remind(flow(REVOKED, state, seconds=3000)).events == ()
    later = remind(flow(REVOKED, state, seconds=10 + 3600))
    assert later.events == (Reminder(Verdict.KEY_INVALID, "Invalid API-key", at(0), 1),)
    assert later.state.reminders_sent == 1


def test_mute_drops_events_and_remembers_what_the_user_knew() -> None:
    alerted = replace(flow(REVOKED, muted=True), events=(Alert(Verdict.KEY_INVALID, "", at(0)),))
    out = mute(alerted)
    assert out.events == () and out.state.muted_state is UserView.OK


def test_mute_end_replaces_the_events_with_one_summary() -> None:
    state = replace(failing_key(), muted_state=UserView.FAILING)
    recovered, [recovery] = step(state, OK, at(600))
    out = mute(replace(flow(OK, state, seconds=600), state=recovered, events=(recovery,)))
    change = Recovery(Verdict.KEY_INVALID, at(0), timedelta(seconds=600), Summary.WHILE_MUTED)
    assert out.events == (MuteSummary(change),)
    assert out.state.muted_state is None
    quiet = mute(flow(OK, IncidentState(muted_state=UserView.OK)))
    assert quiet.events == () and quiet.state.muted_state is None  # nothing changed: no summary


def test_decide_runs_the_stages_in_order() -> None:
    assert [name for name, _ in STAGES] == ["announce", "inhibit", "confirm", "remind", "mute"]
    state, events = decide(IncidentState(), REVOKED, DEFAULT_POLICY, at(0))
    state, events = decide(state, REVOKED, DEFAULT_POLICY, at(10))
    assert events == [Alert(Verdict.KEY_INVALID, "Invalid API-key", at(0))]
    muted_state, muted_events = decide(IncidentState(), REVOKED, DEFAULT_POLICY, at(0), Situation(muted=True))
    assert muted_events == [] and muted_state.muted_state is UserView.OK


def test_a_stage_can_be_inserted_by_name() -> None:
    """How a guard (e.g. "our own IP is blocked") joins: a function placed before ``confirm``."""

    def not_the_key(f: Flow) -> Flow:
        return replace(f, halted=True) if "blocked" in f.observation.detail else f

    names = [name for name, _ in STAGES]
    stages = [
        *STAGES[: names.index("confirm")],
        ("own_ip_blocked", not_the_key),
        *STAGES[names.index("confirm") :],
    ]
    blocked = key_check(False, Verdict.IP_NOT_ALLOWED, "our ip blocked")
    state, events = decide(IncidentState(), blocked, DEFAULT_POLICY, at(0), stages=stages)
    assert (state, events) == (IncidentState(), [])


def _alert(connection_id: int, exchange: str, verdict: Verdict) -> Notice:
    return Notice(Target(connection_id, exchange, f"c{connection_id}"), Alert(verdict, "", at(0)))


def test_fold_outages_merges_one_exchange_and_keeps_order_and_keys() -> None:
    notices = [
        (1, _alert(1, "binance", Verdict.KEY_INVALID)),
        (2, _alert(2, "bybit", Verdict.NETWORK)),
        (3, _alert(3, "okx", Verdict.KEY_INVALID)),
        (4, _alert(4, "bybit", Verdict.EXCHANGE_DOWN)),
    ]
    folded = fold_outages(42, notices)
    assert folded == [
        ([1], notices[0][1]),
        ([2, 4], OutageNotice("bybit", (2, 4), ("", ""))),
        ([3], notices[2][1]),
    ]


def test_fold_outages_leaves_key_problems_and_summaries_alone() -> None:
    summary = Notice(Target(5, "bybit", "x"), MuteSummary(Alert(Verdict.NETWORK, "", at(0))))
    notices = [(1, _alert(1, "binance", Verdict.KEY_INVALID)), (5, summary)]
    assert fold_outages(42, notices) == [([1], notices[0][1]), ([5], summary)]
