"""The incident state machine's user-visible promises: when keysentry speaks, and how often."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.verdicts import Verdict
from services.monitoring.events import IncidentEvent as Event
from services.monitoring.incidents import (
    DEFAULT_POLICY,
    DEFAULT_RULES,
    Alert,
    AlertPolicy,
    ConfirmRule,
    FlappingNotice,
    IncidentState,
    IncidentStatus,
    Recovery,
    Reminder,
    Summary,
    UserView,
    VerdictChanged,
    confirm_after,
    due_reminder,
    inhibited,
    mute_snapshot,
    step,
    unmute_summary,
)
from services.monitoring.incidents import key_check as Observation
from services.monitoring.pipeline import group_outages
from services.storage.models import Incident

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OK = Observation(True, Verdict.OK)
FAILURES = [v for v in Verdict if v is not Verdict.OK]
KEY_PROBLEMS = [v for v in Verdict if v.is_key_problem]
TRANSIENT = [v for v in Verdict if v.is_transient]


def fail(verdict: Verdict, detail: str = "") -> Observation:
    return Observation(False, verdict, detail)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(
    probes: Iterable[tuple[float, Observation]], state: IncidentState | None = None
) -> tuple[IncidentState, list[tuple[float, Event]]]:
    """Feeds ``(seconds after T0, observation)`` probes; returns the end state and timed events."""
    state = state or IncidentState()
    timed: list[tuple[float, Event]] = []
    for seconds, obs in probes:
        state, events = step(state, obs, at(seconds))
        timed += [(seconds, event) for event in events]
    return state, timed


def events_only(timed: Sequence[tuple[float, Event]]) -> list[Event]:
    return [event for _, event in timed]


def every(gap: float, obs: Observation, count: int, start: float = 0) -> list[tuple[float, Observation]]:
    return [(start + i * gap, obs) for i in range(count)]


def first_alert_probe(verdict: Verdict, gap: float, limit: int = 200) -> int | None:
    """1-based index of the probe that alerts when ``verdict`` is seen every ``gap`` seconds."""
    state = IncidentState()
    for index in range(limit):
        state, events = step(state, fail(verdict), at(index * gap))
        if events:
            assert events == [Alert(verdict, "", T0)]
            return index + 1
    return None


# -- confirmation ---------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", FAILURES)
def test_a_single_failure_never_alerts(verdict: Verdict) -> None:
    state, events = step(IncidentState(), fail(verdict, "boom"), T0)
    assert events == []
    assert (state.status, state.verdict, state.detail, state.failures) == (
        IncidentStatus.PENDING,
        verdict,
        "boom",
        1,
    )
    assert state.pending_since == T0


@pytest.mark.parametrize(
    ("verdict", "gap", "alerting_probe"),
    [
        *[(v, 10, 2) for v in KEY_PROBLEMS],  # a second probe 10 s later confirms
        (Verdict.KEY_INVALID, 4, 4),  # ...but not a burst: probes must span 10 s
        (Verdict.KEY_INVALID, 600, 2),
        (Verdict.CLOCK_SKEW, 30, 3),
        (Verdict.CLOCK_SKEW, 5, 13),  # 3 probes are not enough inside a minute
        (Verdict.NETWORK, 75, 5),
        (Verdict.NETWORK, 5, 61),  # fast re-probes cannot shortcut the 5 minutes
        (Verdict.NETWORK, 600, 5),  # and 5 minutes need 5 probes
        (Verdict.EXCHANGE_DOWN, 75, 5),
        (Verdict.RATE_LIMITED, 60, 31),  # 30 minutes of being throttled
        (Verdict.RATE_LIMITED, 900, 3),
        (Verdict.UNKNOWN, 60, 3),
    ],
)
def test_confirmation_rule_per_verdict(verdict: Verdict, gap: float, alerting_probe: int) -> None:
    assert first_alert_probe(verdict, gap) == alerting_probe


@pytest.mark.parametrize(
    ("verdict", "seconds"),
    [
        *[(v, 10) for v in KEY_PROBLEMS],
        (Verdict.CLOCK_SKEW, 30),
        (Verdict.NETWORK, 75),
        (Verdict.EXCHANGE_DOWN, 75),
        (Verdict.RATE_LIMITED, 900),
        (Verdict.UNKNOWN, 60),
    ],
)
def test_confirm_after_lands_the_nth_probe_on_the_deadline(verdict: Verdict, seconds: float) -> None:
    gap = confirm_after(verdict)
    assert gap == timedelta(seconds=seconds)
    assert first_alert_probe(verdict, gap.total_seconds()) == DEFAULT_RULES[verdict].failures


def test_confirm_after_never_hammers_the_exchange() -> None:
    rules = {**DEFAULT_RULES, Verdict.KEY_INVALID: ConfirmRule(failures=2, seconds=0)}
    assert confirm_after(Verdict.KEY_INVALID, AlertPolicy(rules=rules)) == timedelta(seconds=5)


@pytest.mark.parametrize("verdict", TRANSIENT)
def test_transient_verdicts_need_longer_than_key_problems(verdict: Verdict) -> None:
    _, timed = run(every(10, fail(verdict), 12))  # two minutes of failures
    assert timed == []


@given(
    verdict=st.sampled_from(FAILURES),
    gaps=st.lists(st.integers(min_value=1, max_value=3600), min_size=0, max_size=40),
)
def test_one_alert_per_incident_however_many_failures(verdict: Verdict, gaps: list[int]) -> None:
    times = [0, *(sum(gaps[: i + 1]) for i in range(len(gaps)))]
    _, timed = run((t, fail(verdict)) for t in times)
    rule = DEFAULT_RULES[verdict]
    expected = [
        (t, Alert(verdict, "", T0))
        for n, t in enumerate(times, start=1)
        if n >= rule.failures and t >= rule.seconds
    ][:1]
    assert timed == expected


def test_pending_to_ok_is_silent_and_forgets_the_failure() -> None:
    state, timed = run([(0, fail(Verdict.KEY_INVALID)), (5, OK)])
    assert timed == []
    assert state == IncidentState()
    _, timed = run([(10, fail(Verdict.KEY_INVALID))], state)
    assert timed == []  # the earlier failure does not count toward the next confirmation


def test_one_recovery_with_duration_since_the_first_failed_probe() -> None:
    probes = [*every(10, fail(Verdict.KEY_INVALID, "invalid api key"), 10), (100, OK), (110, OK), (120, OK)]
    state, timed = run(probes)
    assert timed == [
        (10, Alert(Verdict.KEY_INVALID, "invalid api key", T0)),
        (100, Recovery(Verdict.KEY_INVALID, T0, timedelta(seconds=100))),
    ]
    assert state.status is IncidentStatus.OK
    assert state.reminders_sent == 0


def test_verdict_change_while_pending_restarts_confirmation_with_the_new_rule() -> None:
    network_blip = every(60, fail(Verdict.NETWORK), 4)  # 4 failures over 3 minutes
    _, timed = run([*network_blip, (190, fail(Verdict.KEY_INVALID)), (200, fail(Verdict.KEY_INVALID))])
    # The key problem is confirmed by its own 10 s rule, and "down since" is the first failure.
    assert timed == [(200, Alert(Verdict.KEY_INVALID, "", T0))]

    # Evidence of a different kind starts over: one key failure then network needs 5 more minutes.
    _, timed = run([(0, fail(Verdict.KEY_INVALID)), *every(75, fail(Verdict.NETWORK), 5, start=10)])
    assert timed == [(310, Alert(Verdict.NETWORK, "", T0))]


@pytest.mark.parametrize(
    ("first", "second", "gap", "alerting_probe"),
    [
        (Verdict.NETWORK, Verdict.EXCHANGE_DOWN, 75, 5),
        (Verdict.KEY_INVALID, Verdict.IP_NOT_ALLOWED, 10, 2),
    ],
)
def test_verdicts_sharing_a_rule_keep_counting(
    first: Verdict, second: Verdict, gap: float, alerting_probe: int
) -> None:
    """An exchange alternating two error codes of one kind must still be confirmed."""
    probes = [(i * gap, fail(first if i % 2 == 0 else second)) for i in range(10)]
    _, timed = run(probes)
    assert [t for t, _ in timed] == [(alerting_probe - 1) * gap]


def test_a_key_problem_during_an_outage_sends_one_verdict_changed() -> None:
    outage = every(75, fail(Verdict.NETWORK), 5)  # alert at 300
    probes = [
        *outage,
        (310, fail(Verdict.KEY_INVALID, "-2015")),
        (315, fail(Verdict.NETWORK)),  # a single key failure is not enough
        (320, fail(Verdict.KEY_INVALID, "-2015")),
        (330, fail(Verdict.KEY_INVALID, "-2015")),
        (340, fail(Verdict.KEY_INVALID, "-2015")),
        (350, fail(Verdict.IP_NOT_ALLOWED)),
        (360, fail(Verdict.IP_NOT_ALLOWED)),
        (370, fail(Verdict.NETWORK)),
        (700, fail(Verdict.NETWORK)),
        (800, OK),
    ]
    _, timed = run(probes)
    assert timed == [
        (300, Alert(Verdict.NETWORK, "", T0)),
        (330, VerdictChanged(Verdict.NETWORK, Verdict.KEY_INVALID, "-2015", T0)),
        (800, Recovery(Verdict.KEY_INVALID, T0, timedelta(seconds=800))),
    ]


@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=2000), st.sampled_from([*TRANSIENT, Verdict.OK])),
        max_size=60,
    )
)
def test_transient_verdicts_never_produce_a_key_problem_alert(steps: list[tuple[int, Verdict]]) -> None:
    probes, clock = [], 0
    for gap, verdict in steps:
        clock += gap
        probes.append((clock, OK if verdict is Verdict.OK else fail(verdict)))
    _, timed = run(probes)
    for _, event in timed:
        assert not isinstance(event, VerdictChanged)
        if isinstance(event, Alert | Recovery):
            assert event.verdict.is_transient


# -- flapping -------------------------------------------------------------------------------


def flap_cycle(start: float) -> list[tuple[float, Observation]]:
    """A key that breaks (confirmed at +10 s) and comes back at +20 s: two transitions."""
    return [(start, fail(Verdict.KEY_INVALID)), (start + 10, fail(Verdict.KEY_INVALID)), (start + 20, OK)]


def test_flapping_sends_one_notice_then_one_summary_when_stable() -> None:
    cycles = [probe for i in range(8) for probe in flap_cycle(i * 60)]  # 16 transitions in 8 min
    last_transition = 7 * 60 + 20
    quiet = every(300, OK, 20, start=last_transition + 300)
    state, timed = run([*cycles, *quiet])
    assert events_only(timed) == [
        Alert(Verdict.KEY_INVALID, "", at(0)),
        Recovery(Verdict.KEY_INVALID, at(0), timedelta(seconds=20)),
        Alert(Verdict.KEY_INVALID, "", at(60)),
        Recovery(Verdict.KEY_INVALID, at(60), timedelta(seconds=20)),
        FlappingNotice(5, timedelta(hours=1)),
        Recovery(
            Verdict.KEY_INVALID,
            since=at(10),  # the first transition of the episode
            duration=timedelta(seconds=last_transition - 10),
            summary=Summary.FLAPPING_SETTLED,
        ),
    ]
    assert timed[-1][0] == last_transition + 3600  # the first probe after a stable hour
    assert not state.flapping

    # Back to normal afterwards.
    _, timed = run(flap_cycle(10_000), state)
    assert [type(e) for e in events_only(timed)] == [Alert, Recovery]


def test_flapping_that_settles_failing_sends_one_alert_and_reminders_resume() -> None:
    cycles = [probe for i in range(3) for probe in flap_cycle(i * 60)]  # notice at 130
    down = every(300, fail(Verdict.IP_NOT_ALLOWED, "ip 1.2.3.4"), 20, start=200)
    state = IncidentState()
    timed: list[tuple[float, Event]] = []
    for seconds, obs in [*cycles, *down]:
        state, events = step(state, obs, at(seconds))
        timed += [(seconds, e) for e in events]
        assert due_reminder(state, at(seconds))[1] is None or not state.flapping
    settled_at = 210 + 3600 + 290  # confirmed at 210; first probe at least an hour later
    assert timed[-2:] == [
        (130, FlappingNotice(5, timedelta(hours=1))),
        (settled_at, Alert(Verdict.IP_NOT_ALLOWED, "ip 1.2.3.4", at(200), Summary.FLAPPING_SETTLED)),
    ]
    assert due_reminder(state, at(settled_at + 3599))[1] is None
    assert due_reminder(state, at(settled_at + 3600))[1] == Reminder(
        Verdict.IP_NOT_ALLOWED, "ip 1.2.3.4", at(200), 1
    )


def test_slow_alternation_is_not_flapping() -> None:
    _, timed = run(probe for i in range(10) for probe in flap_cycle(i * 35 * 60))
    assert [type(e) for e in events_only(timed)] == [Alert, Recovery] * 10


# -- reminders ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "gap_hours"), [(0, 1), (1, 6), (2, 24), (3, 24), (4, 24), (5, 24), (6, 24)])
def test_reminder_gaps_back_off_to_daily(sent: int, gap_hours: int) -> None:
    assert DEFAULT_POLICY.reminder_gap(sent) == timedelta(hours=gap_hours)


def failing_since_t0() -> IncidentState:
    state, _ = run(every(10, fail(Verdict.KEY_EXPIRED, "expired"), 2))
    return state


def test_reminders_at_1h_6h_24h_then_daily_at_most_seven() -> None:
    state, alerted_at = failing_since_t0(), 10
    sent: list[tuple[float, Reminder]] = []
    for minute in range(14 * 24 * 60):  # a periodic job ticking every minute for two weeks
        now = alerted_at + minute * 60
        state, reminder = due_reminder(state, at(now))
        if reminder:
            sent.append(((now - alerted_at) / 3600, reminder))
    assert sent == [
        (hours, Reminder(Verdict.KEY_EXPIRED, "expired", T0, number))
        for number, hours in enumerate([1, 7, 31, 55, 79, 103, 127], start=1)
    ]


def test_a_reminder_job_back_from_downtime_sends_one_not_a_burst() -> None:
    state, reminder = due_reminder(failing_since_t0(), at(3 * 86_400))
    assert reminder is not None and reminder.number == 1
    assert due_reminder(state, at(3 * 86_400 + 60))[1] is None


@pytest.mark.parametrize(
    "probes", [[], [(0, fail(Verdict.KEY_INVALID))], [*every(10, fail(Verdict.KEY_INVALID), 2), (20, OK)]]
)
def test_no_reminders_unless_failing(probes: list[tuple[float, Observation]]) -> None:
    state, _ = run(probes)
    assert due_reminder(state, at(30 * 86_400))[1] is None


def test_reminders_carry_the_current_verdict_and_a_verdict_change_restarts_the_clock() -> None:
    state, _ = run(every(75, fail(Verdict.NETWORK), 5))  # alerted at 300
    state, timed = run(
        [(1000, fail(Verdict.KEY_INVALID)), (1010, fail(Verdict.KEY_INVALID, "bad key"))], state
    )
    assert [type(e) for e in events_only(timed)] == [VerdictChanged]
    assert due_reminder(state, at(300 + 3600))[1] is None
    assert due_reminder(state, at(1010 + 3600))[1] == Reminder(Verdict.KEY_INVALID, "bad key", T0, 1)


# -- mute -----------------------------------------------------------------------------------


def muted(state: IncidentState) -> IncidentState:
    return IncidentState(**{**vars(state), "muted_state": mute_snapshot(state)})


def test_unmute_reports_a_failure_that_started_while_muted() -> None:
    state = muted(IncidentState())
    state, _ = run(every(10, fail(Verdict.KEY_INVALID), 3, start=100), state)
    assert unmute_summary(state, at(200)) == Alert(Verdict.KEY_INVALID, "", at(100), Summary.WHILE_MUTED)


def test_unmute_reports_a_recovery_that_happened_while_muted() -> None:
    state = muted(failing_since_t0())
    assert state.muted_state is UserView.FAILING
    state, _ = run([(500, OK)], state)
    assert unmute_summary(state, at(900)) == Recovery(
        Verdict.KEY_EXPIRED, T0, timedelta(seconds=500), Summary.WHILE_MUTED
    )


@pytest.mark.parametrize(
    ("before", "while_muted"),
    [
        ([], [(0, OK)]),
        ([(0, fail(Verdict.NETWORK))], [(10, OK)]),  # pending counts as ok: nothing was said
        ([], [*every(10, fail(Verdict.KEY_INVALID), 2), (30, OK)]),  # broke and healed unseen
        (every(10, fail(Verdict.KEY_INVALID), 2), [(30, OK), *every(10, fail(Verdict.KEY_INVALID), 2, 40)]),
    ],
)
def test_unmute_is_silent_when_the_picture_did_not_change(
    before: list[tuple[float, Observation]], while_muted: list[tuple[float, Observation]]
) -> None:
    state, _ = run(before)
    state, _ = run(while_muted, muted(state))
    assert unmute_summary(state, at(1000)) is None


def test_unmute_reports_flapping_and_needs_a_snapshot() -> None:
    state = muted(IncidentState())
    state, _ = run((probe for i in range(3) for probe in flap_cycle(i * 60)), state)
    assert unmute_summary(state, at(200)) == FlappingNotice(6, timedelta(hours=1))
    assert unmute_summary(IncidentState(**{**vars(state), "muted_state": None}), at(200)) is None


# -- inhibition and outage grouping ---------------------------------------------------------


@pytest.mark.parametrize(
    ("check_kind", "key_status", "expected"),
    [
        ("key", IncidentStatus.FAILING, False),  # the key check is never its own symptom
        ("balance", IncidentStatus.FAILING, True),
        ("pnl", IncidentStatus.FAILING, True),
        ("balance", IncidentStatus.PENDING, True),
        ("balance", IncidentStatus.OK, False),
    ],
)
def test_a_broken_key_silences_its_symptom_checks(
    check_kind: str, key_status: IncidentStatus, expected: bool
) -> None:
    assert inhibited(check_kind, key_status) is expected


N, D, K, R = Verdict.NETWORK, Verdict.EXCHANGE_DOWN, Verdict.KEY_INVALID, Verdict.RATE_LIMITED


@pytest.mark.parametrize(
    ("failures", "checked", "down"),
    [
        ([(1, "bybit", N), (2, "bybit", D), (3, "bybit", N)], None, {"bybit"}),
        ([(1, "bybit", N), (2, "bybit", N)], None, set()),  # two users may be a coincidence
        ([(1, "bybit", N)] * 3 + [(1, "bybit", D)] * 5, None, set()),  # one user's many keys
        ([(u, "bybit", K) for u in range(10)], None, set()),  # key problems are per key
        ([(u, "bybit", R) for u in range(10)], None, set()),  # rate limits are our budget
        ([(u, "bybit", N) for u in range(3)], {"bybit": 100}, set()),  # 3 % of users
        ([(u, "bybit", N) for u in range(60)], {"bybit": 100}, {"bybit"}),
        ([(u, "bybit", N) for u in range(3)], {"bybit": 4}, {"bybit"}),
        ([(u, "okx", D) for u in range(3)], {"bybit": 100}, {"okx"}),  # unknown total: count only
        ([(u, "okx", D) for u in range(3)] + [(u, "binance", N) for u in range(2)], None, {"okx"}),
    ],
)
def test_group_outages(
    failures: list[tuple[int, str, Verdict]], checked: dict[str, int] | None, down: set[str]
) -> None:
    assert group_outages(failures, checked=checked) == down


def test_group_outages_thresholds_are_tunable() -> None:
    failures = [(u, "bybit", N) for u in range(5)]
    assert group_outages(failures, min_users=6) == frozenset()
    assert group_outages(failures, checked={"bybit": 20}, min_share=0.25) == {"bybit"}
    assert group_outages(failures, checked={"bybit": 21}, min_share=0.25) == frozenset()


# -- persistence and validation -------------------------------------------------------------


def new_row() -> Incident:
    row = Incident(connection_id=1, check_kind="key", updated_at=T0)
    IncidentState().apply_to(row)
    return row


def test_state_round_trips_through_the_incident_row_as_json() -> None:
    probes = [probe for i in range(3) for probe in flap_cycle(i * 60)]
    state, _ = run([*probes, *every(10, fail(Verdict.NETWORK, "timeout"), 2, start=500)])
    state = muted(state)
    row = new_row()
    state.apply_to(row)
    assert json.loads(json.dumps(row.transitions)) == row.transitions
    assert IncidentState.from_row(row) == state


def test_a_row_with_column_defaults_is_a_fresh_state() -> None:
    row = Incident(
        state="ok",
        verdict="ok",
        detail="",
        failures=0,
        reminders_sent=0,
        transitions={},
        muted_state=None,
    )
    assert IncidentState.from_row(row) == IncidentState()


def test_invalid_configuration_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="single failed probe"):
        ConfirmRule(failures=1, seconds=0)
    with pytest.raises(ValueError, match="no confirmation rule"):
        AlertPolicy(rules={Verdict.KEY_INVALID: ConfirmRule(2, 10)})
    with pytest.raises(ValueError, match="contradicts"):
        Observation(True, Verdict.KEY_INVALID)
    with pytest.raises(ValueError, match="naive"):
        step(IncidentState(), OK, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="pending_since"):
        IncidentState(status=IncidentStatus.FAILING)


# -- properties over random histories -------------------------------------------------------

GAPS = st.sampled_from([1, 5, 10, 10, 30, 75, 300, 1800, 4000])
OBSERVATIONS = st.sampled_from([OK, OK, OK, *(fail(v) for v in FAILURES), fail(Verdict.KEY_INVALID)])


@settings(max_examples=300)
@given(st.lists(st.tuples(GAPS, OBSERVATIONS), max_size=120))
def test_random_histories_keep_every_promise(history: list[tuple[int, Observation]]) -> None:
    state, row, clock = IncidentState(), new_row(), 0.0
    messages: list[Event] = []
    previous_failed = False
    for gap, obs in history:
        clock += gap
        now = at(clock)
        state, events = step(state, obs, now)
        state.apply_to(row)
        assert IncidentState.from_row(row) == state  # persisting between probes changes nothing
        if any(isinstance(e, Alert) for e in events):
            assert previous_failed and not obs.ok  # a single failure never alerts
        state, reminder = due_reminder(state, now)
        if reminder:
            assert state.status is IncidentStatus.FAILING and not state.flapping
            assert reminder.number <= DEFAULT_POLICY.max_reminders
        messages += events
        previous_failed = not obs.ok

    # A Recovery only ever closes an open problem (opened by an Alert or a FlappingNotice), so
    # #Recovery ≤ #Alert + #FlappingNotice; two Alerts in a row need a FlappingNotice between.
    problem_open, notice_since_alert = False, False
    for event in messages:
        if isinstance(event, Recovery):
            assert problem_open
            problem_open = False
        elif isinstance(event, Alert):
            assert not problem_open or notice_since_alert
            problem_open, notice_since_alert = True, False
        elif isinstance(event, FlappingNotice):
            problem_open, notice_since_alert = True, True

    # Outside flapping, alerts and recoveries strictly alternate, starting with an alert.
    notices = [e for e in messages if isinstance(e, FlappingNotice)]
    pairs = [type(e) for e in messages if isinstance(e, Alert | Recovery)]
    if not notices:
        assert pairs == [Alert, Recovery] * (len(pairs) // 2) + [Alert] * (len(pairs) % 2)
    # One notice per episode: the episode ends with a summary before another notice can come.
    kinds = [type(e) for e in messages if isinstance(e, Alert | Recovery | FlappingNotice)]
    assert all(not (a is FlappingNotice and b is FlappingNotice) for a, b in pairwise(kinds))
