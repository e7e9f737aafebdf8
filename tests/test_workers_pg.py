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

from services.budget import BudgetRegistry
from services.exchanges import ExchangeHub
from tests.conftest import PG_ADMIN_URL, postgres_unreachable_reason
from tests.processes import Cluster, cluster, gaps, wait_until

_REASON = postgres_unreachable_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]

INTERVAL = 10.0  # POLL_INTERVAL_SECONDS
LEASE = 5.0  # LEASE_SECONDS
JITTER = 0.1  # PollerConfig.jitter: next check at interval ± 10 %
TICK_SLACK = 2.0  # the poll tick runs every second; a check may wait for the next one


def effective_interval(connections: int) -> float:
    """The interval the workers actually use for ``connections`` Binance keys.

    The poller stretches the interval when the exchange's IP budget cannot cover every key
    (services.exchanges.ExchangeHub.stretch_interval, exported as keysentry_interval_stretch_ratio):
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


def longest_gap(c: Cluster, until: float) -> tuple[float, str]:
    """The longest time any key went unchecked, from its first check to ``until``."""
    worst = (0.0, "")
    for api_key, times in c.check_times().items():
        for gap in gaps(times, until):
            worst = max(worst, (gap, api_key))
    return worst


# --------------------------------------------------------------------------------------------------
# issue 5: two workers share the work, every key once per interval
# --------------------------------------------------------------------------------------------------


async def test_two_workers_check_every_connection_once_per_interval(tmp_path):
    async with cluster(tmp_path) as c:
        await c.seed(200)
        workers = await c.start_workers(2)
        start = await wait_first_round(c)
        end = start + 4 * INTERVAL
        await wait_until(lambda: time.monotonic() >= end, timeout=4 * INTERVAL + 5, every=0.5)
        for w in workers:
            assert w.alive, c.logs()

        times = c.check_times()
        all_gaps = [g for t in times.values() for g in gaps(t, until=end)]
        between = [g for t in times.values() for g in gaps(t)]
        shares = [await w.checks_done() for w in workers]
        print(
            f"\n[issue 5] 200 keys, 2 workers, {len(c.key_checks())} checks; "
            f"gap min {min(between):.2f}s max {max(all_gaps):.2f}s; per worker {shares}"
        )
        upper = INTERVAL * (1 + JITTER) + TICK_SLACK
        late = {k[:8]: round(max(gaps(t, until=end)), 2) for k, t in times.items() if max(gaps(t, until=end)) > upper}
        assert not late, f"keys not checked within {upper}s: {late}"
        double = {k[:8]: round(min(gaps(t)), 2) for k, t in times.items() if min(gaps(t)) < 0.5 * INTERVAL}
        assert not double, f"keys checked twice within one interval: {double}"
        assert all(len(t) >= 4 for t in times.values())
        # Each process did a share of the work, and together they did all of it (per-process
        # counters from their own /metrics; the exchange cannot tell the processes apart).
        assert all(share > 0 for share in shares), shares
        assert sum(shares) == len(c.key_checks())
