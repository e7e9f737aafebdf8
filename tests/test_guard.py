"""The "our IP is blocked" guard on its own, on SQLite and PostgreSQL: when a wave starts, what it
holds, what releases it, and that several workers sharing one database see the same wave while a
ban of one egress route holds nobody behind another."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.core.verdicts import Verdict
from services.monitoring.guard import BlockGuard, GuardConfig, KeyOutcome, Wave, with_guard
from services.monitoring.incidents import DEFAULT_POLICY, IncidentState, IncidentStatus, key_check
from services.monitoring.pipeline import STAGES, decide
from services.monitoring.polling import CheckResult, Claimed, Poller, PollerConfig
from services.storage.models import Incident, OutboxMessage
from tests.test_leases import _seed

T = datetime(2026, 1, 1, tzinfo=UTC)
V = Verdict


def batch(
    service: str, ids: range, verdict: Verdict, *, passed: datetime | None = T, egress: str = "direct"
) -> list[KeyOutcome]:
    """``ids`` turning to ``verdict``; each had passed at ``passed`` (None: never)."""
    return [KeyOutcome(service, i, verdict, egress, passed) for i in ids]


async def test_a_wave_needs_many_keys_that_passed_recently_and_the_same_verdict(sessions) -> None:
    guard = BlockGuard(sessions, GuardConfig(min_keys=5, min_recent_ok=2))
    await guard.observe_batch(batch("binance", range(4), V.KEY_INVALID), T)
    assert guard.held("binance", V.KEY_INVALID) is None  # four keys: could be four users
    await guard.observe_batch(batch("binance", range(4, 10), V.KEY_INVALID, passed=None), T)
    assert guard.held("binance", V.KEY_INVALID) is not None  # ten keys, four had passed: a wave

    guard = BlockGuard(sessions, GuardConfig(min_keys=5, min_recent_ok=2))
    await guard.observe_batch(batch("okx", range(10), V.KEY_INVALID, passed=None), T)
    assert guard.held("okx", V.KEY_INVALID) is None  # none of them ever passed: no evidence
    later = T + timedelta(minutes=2)
    await guard.observe_batch(batch("bybit", range(3), V.KEY_INVALID), later)
    await guard.observe_batch(batch("bybit", range(3, 6), V.IP_NOT_ALLOWED), later)
    assert guard.held("bybit", V.KEY_INVALID) is None  # two verdicts, neither a wave
    await guard.observe_batch(batch("bybit", range(6, 8), V.KEY_INVALID), T + timedelta(minutes=3))
    wave = guard.held("bybit", V.KEY_INVALID)
    assert wave is not None and wave.keys == 5 and not wave.banned
    assert guard.held("bitget", V.KEY_INVALID) is None and guard.backing_off("bybit")
    assert [w.service for w in await guard.claim_new_waves(later)] == ["binance", "bybit"]
    assert await guard.claim_new_waves(later) == []


async def test_the_guard_stage_confirms_a_held_key_verdict_as_rate_limited(sessions) -> None:
    guard = BlockGuard(sessions, GuardConfig(min_keys=3, min_recent_ok=1))
    await guard.observe_batch(batch("threecommas", range(5), V.KEY_INVALID), T + timedelta(minutes=1))
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
    assert "threecommas blocking our server's IP" in state.detail


async def test_a_working_canary_releases_the_wave_and_is_believed_for_a_while(sessions) -> None:
    config = GuardConfig(min_keys=3, min_recent_ok=1, quiet=timedelta(minutes=10))
    guard = BlockGuard(sessions, config)
    await guard.observe_batch(batch("okx", range(3), V.KEY_INVALID), T)
    await guard.canary_result("okx", "direct", V.KEY_INVALID, T)  # the canary fails too: still a block
    assert guard.held("okx", V.KEY_INVALID) is not None
    await guard.canary_result("okx", "direct", V.OK, T)  # our IP works: the keys really died
    assert guard.held("okx", V.KEY_INVALID) is None and not guard.backing_off("okx")

    # The same keys keep failing: no new wave (nor operator notice) while the canary is believed.
    soon = T + timedelta(minutes=1)
    await guard.observe_batch(batch("okx", range(3, 9), V.KEY_INVALID), soon)
    assert guard.held("okx", V.KEY_INVALID) is None and await guard.claim_new_waves(soon) == []
    after = T + config.canary_trust + timedelta(seconds=1)
    await guard.observe_batch(batch("okx", range(3, 9), V.KEY_INVALID, passed=after), after)
    assert guard.held("okx", V.KEY_INVALID) is not None  # trust ran out: a wave may start again

    # A wave ends after ``quiet`` without its verdict.
    await guard.observe_batch([], after + config.quiet + timedelta(seconds=1))
    assert guard.held("okx", V.KEY_INVALID) is None


async def test_workers_sharing_the_database_see_one_wave_and_announce_it_once(sessions) -> None:
    config = GuardConfig(min_keys=5, min_recent_ok=2)
    first, second = BlockGuard(sessions, config), BlockGuard(sessions, config)
    await first.observe_batch(batch("binance", range(3), V.KEY_INVALID), T)
    await second.observe_batch(batch("binance", range(3, 5), V.KEY_INVALID), T)
    assert second.held("binance", V.KEY_INVALID) is not None  # 3 + 2 keys seen by two workers
    assert first.held("binance", V.KEY_INVALID) is None  # not re-read yet …
    await first.observe_batch([KeyOutcome("binance", 9, V.OK)], T + config.sync)
    assert first.held("binance", V.KEY_INVALID) is not None and first.backing_off("binance")
    announced = [*await first.claim_new_waves(T), *await second.claim_new_waves(T)]
    assert [w.keys for w in announced] == [5]  # exactly one worker tells the operator


async def test_a_wave_holds_only_the_egress_route_it_was_seen_on(sessions) -> None:
    guard = BlockGuard(sessions, GuardConfig(min_keys=3, min_recent_ok=1))
    await guard.observe_batch(batch("binance", range(4), V.KEY_INVALID, egress="proxy-a"), T)
    await guard.observe_batch(batch("binance", range(4, 6), V.KEY_INVALID, egress="direct"), T)
    assert guard.held("binance", V.KEY_INVALID, "proxy-a") is not None
    assert guard.held("binance", V.KEY_INVALID, "direct") is None  # two keys behind another IP
    assert guard.backing_off("binance", "proxy-a") and not guard.backing_off("binance", "direct")
    await guard.canary_result("binance", "direct", V.OK, T)  # a canary on another route proves nothing here
    assert guard.held("binance", V.KEY_INVALID, "proxy-a") is not None


async def test_one_ban_answer_starts_a_wave_by_itself(sessions) -> None:
    guard = BlockGuard(sessions, GuardConfig(min_keys=5))
    await guard.observe_batch([KeyOutcome("threecommas", 1, V.RATE_LIMITED, proof=True)], T)
    wave = guard.held("threecommas", V.RATE_LIMITED)
    assert wave is not None and wave.banned and guard.backing_off("threecommas")
    await guard.observe_batch([KeyOutcome("threecommas", 2, V.RATE_LIMITED)], T)  # an ordinary 429
    assert guard.held("threecommas", V.RATE_LIMITED) == wave


async def test_two_pollers_hold_the_banned_route_and_alert_a_dead_key_on_the_other(sessions, vault, clock):
    """Two workers (two pollers, each its own guard) over one database. Binance bans the proxy
    route's IP: every key behind it answers -2015, whichever worker checks it, and the wave holds
    them all and is announced once. A key on the direct route that really died meanwhile is not
    held by that wave: its user is alerted by the key rule."""
    await _seed(sessions, vault, clock, users=24)
    banned_route, dead = "proxy-a", 1
    failing: set[int] = set()

    async def check(claimed: Claimed) -> CheckResult:
        route = banned_route if claimed.id % 2 == 0 else "direct"
        verdict = V.KEY_INVALID if claimed.id in failing else V.OK
        return CheckResult(verdict, "-2015" if verdict is V.KEY_INVALID else "", egress=route)

    waves: list[Wave] = []

    async def on_wave(wave: Wave) -> None:
        waves.append(wave)

    config = GuardConfig(min_keys=5, min_recent_ok=2)
    workers = [
        Poller(
            sessions, clock, name, checkers={"exchange": check}, config=PollerConfig(batch_size=5, jitter=0),
            guard=BlockGuard(sessions, config), on_wave=on_wave,
        )
        for name in ("a", "b")
    ]  # fmt: skip

    async def round_of(seconds: int) -> None:
        clock.advance(seconds)
        while sum([await worker.run_once() for worker in workers]):
            pass

    await round_of(0)  # every key passes once
    failing.update(i for i in range(1, 25) if i % 2 == 0)
    failing.add(dead)
    for _ in range(4):  # the next regular checks, then the key rule's confirmation 10 s later
        await round_of(30)
    assert [(w.egress, w.verdict) for w in waves] == [(banned_route, V.KEY_INVALID)]
    guards = [worker.guard for worker in workers if worker.guard is not None]
    assert all(guard.held("binance", V.KEY_INVALID, banned_route) for guard in guards) and len(guards) == 2
    async with sessions() as session:
        alerted = {row.payload.get("connection_id") for row in await session.scalars(select(OutboxMessage))}
        held = (await session.scalars(select(Incident).where(Incident.connection_id != dead))).all()
    assert alerted == {dead}
    assert {(i.state, i.verdict) for i in held} == {("pending", "rate_limited")} and len(held) == 12
