"""The "our IP is blocked" guard on its own: when a wave starts, what it holds, what releases it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.verdicts import Verdict
from services.monitoring.guard import BlockGuard, GuardConfig, KeyOutcome, with_guard
from services.monitoring.incidents import DEFAULT_POLICY, IncidentState, IncidentStatus, key_check
from services.monitoring.pipeline import STAGES, decide

T = datetime(2026, 1, 1, tzinfo=UTC)
V = Verdict


def batch(service: str, ids: range, verdict: Verdict) -> list[KeyOutcome]:
    return [KeyOutcome(service, i, verdict) for i in ids]


def test_a_wave_needs_many_keys_that_passed_recently_and_the_same_verdict() -> None:
    guard = BlockGuard(GuardConfig(min_keys=5, min_recent_ok=2))
    guard.observe_batch(batch("binance", range(4), V.KEY_INVALID), T)
    assert guard.held("binance", V.KEY_INVALID) is None  # four keys: could be four users
    guard.observe_batch(batch("binance", range(4, 10), V.KEY_INVALID), T)
    assert guard.held("binance", V.KEY_INVALID) is None  # none of them ever passed: no evidence

    guard = BlockGuard(GuardConfig(min_keys=5, min_recent_ok=2))
    guard.observe_batch(batch("binance", range(10), V.OK), T)
    guard.observe_batch(batch("binance", range(3), V.KEY_INVALID), T + timedelta(minutes=2))
    guard.observe_batch(batch("binance", range(3, 6), V.IP_NOT_ALLOWED), T + timedelta(minutes=2))
    assert guard.held("binance", V.KEY_INVALID) is None  # two verdicts, neither a wave
    guard.observe_batch(batch("binance", range(6, 8), V.KEY_INVALID), T + timedelta(minutes=3))
    wave = guard.held("binance", V.KEY_INVALID)
    assert wave is not None and wave.keys == {0, 1, 2, 6, 7}
    assert guard.held("bybit", V.KEY_INVALID) is None and guard.backing_off("binance")
    assert [w.service for w in guard.waves_started()] == ["binance"] and guard.waves_started() == []


def test_the_guard_stage_confirms_a_held_key_verdict_as_rate_limited() -> None:
    guard = BlockGuard(GuardConfig(min_keys=3, min_recent_ok=1))
    guard.observe_batch(batch("threecommas", range(5), V.OK), T)
    guard.observe_batch(batch("threecommas", range(5), V.KEY_INVALID), T + timedelta(minutes=1))
    stages = with_guard(STAGES, guard, "threecommas")
    assert [name for name, _ in stages] == ["announce", "inhibit", "guard", "confirm", "remind", "mute"]
    state = IncidentState()
    for seconds in (0, 15, 30):  # three key-rule probes would alert "revoked" without the guard
        at = T + timedelta(minutes=1, seconds=seconds)
        state, events = decide(
            state, key_check(False, V.KEY_INVALID, "401"), DEFAULT_POLICY, at, stages=stages
        )
        assert events == []
    assert state.status is IncidentStatus.PENDING and state.verdict is V.RATE_LIMITED


def test_a_working_canary_releases_the_wave_and_quiet_ends_it() -> None:
    guard = BlockGuard(GuardConfig(min_keys=3, min_recent_ok=1, quiet=timedelta(minutes=10)))
    guard.observe_batch(batch("okx", range(3), V.OK), T)
    guard.observe_batch(batch("okx", range(3), V.KEY_INVALID), T)
    guard.canary_result("okx", V.KEY_INVALID, T)  # the canary fails too: still a block
    assert guard.held("okx", V.KEY_INVALID) is not None
    guard.canary_result("okx", V.OK, T)  # our IP works: the keys really died
    assert guard.held("okx", V.KEY_INVALID) is None

    # More keys die in later batches of the same mass revocation: the working canary is trusted
    # for a while, so they are judged one by one instead of starting wave after wave.
    guard.observe_batch(batch("okx", range(3, 6), V.OK), T)
    guard.observe_batch(batch("okx", range(3, 6), V.KEY_INVALID), T + timedelta(minutes=1))
    assert guard.held("okx", V.KEY_INVALID) is None and guard.waves_started() == []

    later = T + timedelta(minutes=6)  # the canary's word is old: a new wave is a block again
    guard.observe_batch(batch("okx", range(6, 9), V.OK), later)
    guard.observe_batch(batch("okx", range(6, 9), V.KEY_INVALID), later)
    assert guard.held("okx", V.KEY_INVALID) is not None
    guard.observe_batch([], later + timedelta(minutes=11))
    assert guard.held("okx", V.KEY_INVALID) is None
