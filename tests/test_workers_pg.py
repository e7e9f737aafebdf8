"""Several ``python -m bot worker`` OS processes sharing one PostgreSQL database (issues 5 and 7).

Real processes, real time: a LocalBinance and a LocalTelegram run in the test process, the
workers reach them through ``EXCHANGE_URL_OVERRIDES`` and ``TELEGRAM_API_URL``, and every
health check is read from the exchange's request log (which key was probed, and when).
POLL_INTERVAL_SECONDS=10 and LEASE_SECONDS=5 keep each scenario to a few intervals; waits poll
the logs and the database with an overall timeout instead of sleeping for fixed times.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from services.core.clock import utcnow
from services.exchanges.budget import BudgetRegistry
from services.exchanges.hub import ExchangeHub
from tests.conftest import PG_ADMIN_URL, postgres_unreachable_reason
from tests.processes import Cluster, WorkerProcess, cluster, gaps, wait_until

_REASON = postgres_unreachable_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    # One xdist process runs a group, in order: two groups, so the waiting of one overlaps the other
    # (each keeps its worker processes to itself; the CPU-bound rest of the suite shares the cores).
    pytest.mark.xdist_group("real-time-workers"),
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]

INTERVAL = 10.0  # POLL_INTERVAL_SECONDS
LEASE = 5.0  # LEASE_SECONDS
JITTER = 0.1  # PollerConfig.jitter: next check at interval ± 10 %
TICK_SLACK = 2.0  # the poll tick runs every second; a check may wait for the next one


def effective_interval(connections: int) -> float:
    """The interval the workers actually use for ``connections`` Binance keys.

    The poller stretches the interval when the exchange's IP budget cannot cover every key
    (services.exchanges.hub.ExchangeHub.stretch_interval, exported as keysentry_interval_stretch_ratio):
    500 Binance keys every 10 s need 55 weight/s against a 50/s share, hence 11.1 s.
    """
    hub = ExchangeHub(budgets=BudgetRegistry())
    return hub.stretch_interval("binance", timedelta(seconds=INTERVAL), connections).total_seconds()


async def wait_first_round(c: Cluster, *, timeout: float = 30.0) -> float:  # noqa: ASYNC109
    """Until every seeded key has been checked once; returns when the last first check happened."""
    await wait_until(
        lambda: all(c.check_times().values()),
        timeout=timeout,
        message=lambda: f"{sum(1 for t in c.check_times().values() if not t)} keys never checked\n{c.logs()}",
    )
    return max(times[0] for times in c.check_times().values())


async def outbox_drained(c: Cluster) -> bool:
    return await c.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND NOT failed") == 0


async def users_attempted(c: Cluster, users: int) -> bool:
    """Every one of ``users`` has an alert in the outbox whose sending has been tried."""
    return await c.scalar("SELECT count(DISTINCT user_id) FROM outbox WHERE attempts >= 1") == users


def tick_phase_distance(a: WorkerProcess, b: WorkerProcess) -> float:
    """Seconds between two workers' poll ticks (mod 1 s), from their "worker … started" log lines.

    APScheduler's interval trigger fires at start + n x 1 s, and the line is logged right after
    the job is added, so its millisecond timestamp is the tick phase.
    """
    phases = [a.started_phase(), b.started_phase()]
    distance = abs(phases[0] - phases[1]) % 1.0
    return min(distance, 1.0 - distance)


def longest_gap(c: Cluster, until: float, ignore: dict[str, tuple[float, float]]) -> tuple[float, str]:
    """The longest time any key went unchecked, from its first check to ``until``.

    ``ignore`` maps a key to a time span whose requests were no checks: the exchange answered
    them, but the worker that sent them was dead by then and nothing was recorded.
    """
    worst = (0.0, "")
    for api_key, times in c.check_times().items():
        lo, hi = ignore.get(api_key, (0.0, -1.0))
        for gap in gaps([t for t in times if not lo <= t <= hi], until):
            worst = max(worst, (gap, api_key))
    return worst


# --------------------------------------------------------------------------------------------------
# issue 5: two workers share the work, every key once per interval
# --------------------------------------------------------------------------------------------------


@pytest.mark.xdist_group("real-time-workers-b")
async def test_two_workers_check_every_connection_once_per_interval(tmp_path):
    async with cluster(tmp_path) as c:
        await c.seed(200)
        workers = await c.start_workers(2)
        start = await wait_first_round(c)
        end = start + 3 * INTERVAL
        await wait_until(lambda: time.monotonic() >= end, timeout=3 * INTERVAL + 5, every=0.5)
        for w in workers:
            assert w.alive, c.logs()

        times = c.check_times()
        all_gaps = [g for t in times.values() for g in gaps(t, until=end)]
        between = [g for t in times.values() for g in gaps(t)]
        # The workers keep checking while their counters are read: bracket the reads between two
        # counts of the exchange (a worker counts a check just after the exchange answered it).
        checks_before = len(c.key_checks())
        await asyncio.sleep(0.1)  # let the workers count what the exchange has answered so far
        shares = [await w.checks_done() for w in workers]
        checks_after = len(c.key_checks())
        print(
            f"\n[issue 5] 200 keys, 2 workers, {checks_before} checks; "
            f"gap min {min(between):.2f}s max {max(all_gaps):.2f}s; per worker {shares}"
        )
        upper = INTERVAL * (1 + JITTER) + TICK_SLACK
        worst = {key[:8]: round(max(gaps(t, until=end)), 2) for key, t in times.items()}
        late = {k: g for k, g in worst.items() if g > upper}
        assert not late, f"keys not checked within {upper}s (key: longest gap): {late}"
        closest = {key[:8]: round(min(gaps(t)), 2) for key, t in times.items()}
        twice = {k: g for k, g in closest.items() if g < 0.5 * INTERVAL}
        assert not twice, f"keys checked twice within one interval (key: shortest gap): {twice}"
        assert all(len(t) >= 3 for t in times.values())
        # Together they did all of it (per-process counters from their own /metrics; the exchange
        # cannot tell the processes apart)...
        assert checks_before <= sum(shares) <= checks_after, (checks_before, shares, checks_after)
        # ...and each did a share. Who gets a due row is decided by the phase of the workers'
        # one-second poll ticks: the first tick after a row falls due claims it. Ticks a few
        # milliseconds apart leave the later worker next to nothing (correct, just idle), so
        # the share is only asserted when the ticks are far enough apart to make it certain.
        apart = tick_phase_distance(*workers)
        print(f"[issue 5] poll ticks {apart * 1000:.0f} ms apart")
        if apart >= 0.03:
            assert all(share > 0 for share in shares), shares


# --------------------------------------------------------------------------------------------------
# issue 7: a worker killed with SIGKILL
# --------------------------------------------------------------------------------------------------


LATENCY_MS = 300


async def test_kill_9_of_one_of_three_workers_loses_no_check_and_no_alert(tmp_path):
    async with cluster(tmp_path) as c:
        interval = effective_interval(500)
        seeded = await c.seed(500, spread_s=interval)  # steady state: ~45 keys fall due each second
        revoked = seeded[:300:15]  # 20 keys, first due over 6.7 s: confirmed around the kill
        c.revoke(revoked)  # before the kill: their incidents are being confirmed around it
        # Probes take 0.3 s, as with a real exchange, so a worker's leases are observable.
        c.exchange.inject("latency", latency_ms=LATENCY_MS)
        workers = await c.start_workers(3)
        ready = time.monotonic()
        await wait_first_round(c)

        # Once every key has been checked (the workers are in their steady state), kill -9 the
        # busiest worker while it holds leases.
        shares = [await w.checks_done() for w in workers]
        victim = workers[shares.index(max(shares))]

        async def victim_holds() -> bool:
            """The victim claimed a batch within half a probe's latency: its probes are in flight."""
            fresh = utcnow() + timedelta(seconds=LEASE - LATENCY_MS / 2000)
            return any(owner == victim.ident and until >= fresh for _, owner, until in await c.leases())

        await wait_until(victim_holds, timeout=2 * interval, every=0.05)
        victim.kill()
        killed_at = time.monotonic()
        assert await victim.wait_exit(10) == -9
        held = [cid for cid, owner, _ in await c.leases() if owner == victim.ident]
        assert held, "the kill was meant to leave leases behind"

        bound = interval * (1 + JITTER) + LEASE + 3
        # Watched until one bound past the kill: a key the kill left unchecked longer than the
        # bound shows as a gap up to ``end`` (gaps count from a key's last check to ``end``).
        end = killed_at + bound + 1
        await wait_until(lambda: time.monotonic() >= end, timeout=bound + 5, every=0.5)
        survivors = [w for w in workers if w is not victim]
        assert all(w.alive for w in survivors), c.logs()
        # The requests the victim had in flight were still answered by the exchange, after it
        # died; they checked nothing. Nobody else could probe those keys within a second of the
        # kill (the victim's leases blocked them), so requests for them then were the victim's.
        keys = {s.connection_id: s.api_key for s in seeded}
        phantom = {keys[cid]: (killed_at - 1, killed_at + 1) for cid in held}
        gap, api_key = longest_gap(c, end, phantom)
        print(
            f"\n[issue 7 kill -9] 500 keys, 3 workers (interval {interval:.1f}s after budget stretch), "
            f"checks per worker before the kill {shares}; the killed one held {len(held)} leases; "
            f"longest gap any key saw: {gap:.2f}s ({'a' if api_key in phantom else 'not a'} key the victim "
            f"held; bound {bound:.2f}s); killed {killed_at - ready:.1f}s after the workers were ready"
        )
        assert gap <= bound, f"key {api_key[:8]} went {gap:.2f}s unchecked\n{c.logs()}"
        # Its leases expired and the survivors took the connections over.
        assert not [cid for cid, owner, _ in await c.leases() if owner == victim.ident]

        # Every revoked key's user is told exactly once, through the local Telegram.
        await wait_until(
            lambda: all(c.sent_to(s.user_id) for s in revoked),
            timeout=60,
            message=lambda: (
                f"alerts missing for {[s.user_id for s in revoked if not c.sent_to(s.user_id)]}"
                f"\n{c.tg.transcript()}\n{c.logs()}"
            ),
        )
        await wait_until(
            lambda: outbox_drained(c),
            timeout=30,
            message="outbox not drained",
        )
        print(f"[issue 7 kill -9] all 20 alerts delivered {time.monotonic() - ready:.1f}s after ready")
        for s in revoked:
            for message in c.sent_to(s.user_id):
                assert "revoked" in message.lower() and "Binance · Main" in message, message
        duplicates = sum(len(c.sent_to(s.user_id)) - 1 for s in revoked)
        assert duplicates <= 1, {s.user_id: c.sent_to(s.user_id) for s in revoked}
        assert not [s.user_id for s in seeded if s not in revoked and c.sent_to(s.user_id)]
        assert await c.scalar("SELECT count(*) FROM outbox WHERE failed") == 0


# --------------------------------------------------------------------------------------------------
# issue 7: PostgreSQL drops every connection
# --------------------------------------------------------------------------------------------------


@pytest.mark.xdist_group("real-time-workers-b")
async def test_workers_reconnect_after_postgres_drops_their_connections(tmp_path):
    async with cluster(tmp_path) as c:
        await c.seed(100)
        c.exchange.inject("latency", latency_ms=300)  # checks in flight while the connections drop
        workers = await c.start_workers(2)
        first = await wait_first_round(c)
        await wait_until(lambda: time.monotonic() >= first + INTERVAL / 2, timeout=INTERVAL)

        # Drop every session of the database, again and again for two seconds, so drops also hit
        # claims and records in the middle of their transactions, not only idle pooled connections.
        terminated = 0
        drops_end = time.monotonic() + 2
        while time.monotonic() < drops_end:
            terminated += await terminate_backends(c.database_name)
            await asyncio.sleep(0.01)
        dropped_at = time.monotonic()
        assert terminated, "no database session was open to drop"
        before = [await w.checks_done() for w in workers]

        def rechecked() -> bool:
            return all(any(t > dropped_at for t in times) for times in c.check_times().values())

        await wait_until(
            rechecked, timeout=2 * INTERVAL, message=lambda: f"checks did not resume\n{c.logs()}"
        )
        resumed = max(next(t for t in times if t > dropped_at) for times in c.check_times().values())
        after = [await w.checks_done() for w in workers]
        errors = [sum("Traceback" in line for line in w.log().splitlines()) for w in workers]
        print(
            f"\n[issue 7 db drop] {terminated} backends terminated in 2 s; every key checked again "
            f"within {resumed - dropped_at:.2f}s of the last drop; checks per worker since then "
            f"{[b - a for a, b in zip(before, after, strict=True)]}; tracebacks logged per worker {errors}"
        )
        assert resumed - dropped_at <= 2 * INTERVAL
        for w in workers:
            assert w.alive, c.logs()
            assert await w.ready(), f"{w.name} cannot reach the database again\n{w.log_tail()}"


async def terminate_backends(database: str) -> int:
    """``pg_terminate_backend`` every session of ``database`` except our own; how many."""
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port, user=admin.username, database=admin.database
    )
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    return sum(1 for row in rows if row[0])


# --------------------------------------------------------------------------------------------------
# issue 7: Telegram down while alerts are produced
# --------------------------------------------------------------------------------------------------


async def test_alert_backlog_is_delivered_once_each_after_telegram_comes_back(tmp_path):
    async with cluster(tmp_path) as c:
        seeded = await c.seed(30)
        c.revoke(seeded)
        c.tg.set_down(True)
        # Two sending workers: keep their sum under Telegram's 30 messages a second (deployment.md).
        workers = await c.start_workers(2, send_rate_per_second=12)

        # Down until every alert has been produced and has failed at least once.
        await wait_until(
            lambda: users_attempted(c, 30),
            timeout=75,
            every=0.5,
            message=lambda: f"alerts were not all attempted while Telegram was down\n{c.logs()}",
        )
        failed_sends = sum(1 for r in c.tg.requests if r.status == 502)
        assert not any(c.sent_to(s.user_id) for s in seeded)
        c.tg.set_down(False)
        back_at = time.monotonic()

        await wait_until(
            lambda: all(c.sent_to(s.user_id) for s in seeded),
            timeout=40,
            message=lambda: f"backlog not delivered\n{c.tg.transcript()}\n{c.logs()}",
        )
        delivered_in = time.monotonic() - back_at
        await wait_until(
            lambda: outbox_drained(c),
            timeout=20,
            message="outbox not drained",
        )
        sends = [r for r in c.tg.requests if r.method == "sendMessage"]
        too_many = [r for r in sends if r.status == 429]
        print(
            f"\n[issue 7 telegram down] {failed_sends} sends failed with 502 while down; backlog of 30 "
            f"delivered {delivered_in:.1f}s after recovery; 429 answers: {len(too_many)}"
        )
        for s in seeded:
            [alert] = c.sent_to(s.user_id)  # exactly one each, nothing lost, nothing repeated
            assert "revoked" in alert.lower() and "Binance · Main" in alert
        assert len(too_many) <= 1, too_many  # paced under the limits, no 429 storm
        assert all(w.alive for w in workers), c.logs()
        assert await c.scalar("SELECT count(*) FROM outbox WHERE failed") == 0


# --------------------------------------------------------------------------------------------------
# SIGTERM: graceful stop
# --------------------------------------------------------------------------------------------------


async def test_sigterm_finishes_in_flight_checks_exits_zero_and_releases_every_lease(tmp_path):
    async with cluster(tmp_path) as c:
        await c.seed(50)
        c.exchange.inject("latency", latency_ms=2000)  # probes in flight while the signal arrives
        [worker] = await c.start_workers(1)
        await wait_until(lambda: c.leases(), timeout=20, message=lambda: f"no lease taken\n{c.logs()}")
        leased = await c.leases()
        assert {owner for _, owner, _ in leased} == {worker.ident}
        worker.terminate()
        signalled = time.monotonic()
        code = await worker.wait_exit(25)  # Worker.stop's in-flight deadline is 20 s
        took = time.monotonic() - signalled
        recorded = await c.scalar(
            "SELECT count(*) FROM connections WHERE id = ANY(:ids) AND last_check_at IS NOT NULL",
            ids=[cid for cid, _, _ in leased],
        )
        print(
            f"\n[sigterm] {len(leased)} leases held at the signal; exit {code} after {took:.2f}s; "
            f"{recorded} of those checks finished and recorded"
        )
        assert code == 0, worker.log_tail()
        assert took < 20, f"exit took {took:.1f}s"
        assert await c.leases() == []
        assert "released its leases" in worker.log()
        # Graceful: the checks in flight at the signal were finished and recorded, not cut off.
        assert recorded == len(leased), worker.log_tail()
