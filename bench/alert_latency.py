"""Issue 14 §1: how long after a key breaks is its owner told? Revocation → alert delivered.

    .venv/bin/python -m bench.alert_latency [--users 1000] [--intervals 10 60] [--spread 3]

For each poll interval: the local Binance with one key per user (``--users``), the local
Telegram with its flood limits on, and one real ``python -m bot`` process (the poller ticking
every second, the sender five times a second), each in its own process (``bench.common``).
The connections are seeded as after their first check, their next checks spread evenly over
one interval, as a running deployment's are. After one interval of steady state every key is
revoked at its own random moment, uniformly over ``--spread`` intervals; the bench then waits
until every user has received an alert that says "revoked".

So many keys turning invalid within minutes is also what a ban of our own IP looks like
(``services/monitoring/guard.py``); a deployment tells the two apart with the operator's canary
key (``CANARY_KEYS``), and so does this bench: one more key on the exchange, never revoked.

Measured per user: the revocation moment (the local exchange's clock, right after the key's
state changed) to the moment the local Telegram accepted the alert. Printed: p50, p99 and max,
and the target as a PASS/FAIL line: p99 ≤ interval + key confirmation (10 s) + 3 s. The floor
is the schedule itself: a key revoked just after its check is seen one interval later and
confirmed by a second probe 10 s after that.

The target is the pipeline's, so the revocations must not arrive faster than Telegram lets a bot
send (``SEND_RATE_PER_SECOND``, 25 a second by default): 1,000 keys over three 10 s intervals are
33 alerts a second, and the last ones would wait their turn in the outbox however fast everything
else is (``bench/mass_revocation.py`` measures that case: delivery at the rate limit). So the
spread is at least what keeps arrivals at 80 % of the send rate: five intervals at 10 s for 1,000
users, the default three at 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from datetime import timedelta
from typing import Any

from bench.common import BenchRun, new_keys, verdict
from bot.settings import Settings

WEIGHT_LIMIT = 6_000_000  # per minute: the machine is measured, not Binance's budget
CONFIRMATION_S = 10  # the key rule: a second failed probe at least 10 s after the first
SLACK_S = 3
SEND_RATE: int = Settings.model_fields["send_rate_per_second"].default  # the worker runs with it
ARRIVALS_OF_SEND_RATE = 0.8


def spread_for(users: int, interval: int, at_least: float) -> float:
    """Intervals to spread the revocations over so alerts arrive at most at 80 % of the send rate."""
    return max(at_least, math.ceil(users / (interval * SEND_RATE * ARRIVALS_OF_SEND_RATE)))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(users: int, interval: int, spread: float, latency_ms: int, seed_value: int) -> dict[str, Any]:
    """One interval's measurement: per-user latencies, and how many users were never alerted."""
    from services.core.clock import utcnow

    rng = random.Random(seed_value)
    async with BenchRun("keysentry-latency-") as bench:
        keys = new_keys(users)
        canary = new_keys(1)[0]
        exchange = await bench.start_exchange([*keys, canary], WEIGHT_LIMIT, latency_ms=latency_ms)
        database_url = bench.sqlite_url()
        now = utcnow()

        def spread_schedule(index: int, connection: Any) -> None:
            connection.next_poll_at = now + timedelta(seconds=interval * index / users)

        user_ids = await bench.seed(database_url, keys, now=now, prepare=spread_schedule)
        telegram = bench.start_telegram(user_ids)
        await bench.start_worker(
            database_url,
            telegram.ready,
            weight_limit=WEIGHT_LIMIT,
            poll_interval_seconds=interval,
            canary=canary,
        )
        await asyncio.sleep(interval)  # one interval of steady state: every connection checked once

        # Each key at its own moment, uniformly over ``spread`` intervals; keys due within 20 ms
        # of each other are revoked in one command.
        plan = sorted(
            (rng.uniform(0, spread * interval), user, key[0])
            for user, key in zip(user_ids, keys, strict=True)
        )
        revoked_at: dict[int, float] = {}
        started = time.time()
        index = 0
        while index < len(plan):
            await asyncio.sleep(max(0.0, started + plan[index][0] - time.time()))
            batch = [entry for entry in plan[index:] if started + entry[0] <= time.time() + 0.02]
            moment = exchange.call("revoke", [api_key for _, _, api_key in batch])
            revoked_at.update((user, moment) for _, user, _ in batch)
            index += len(batch)

        deadline = time.time() + interval + CONFIRMATION_S + 120
        first: dict[int, float] = {}
        while time.time() < deadline:
            first = telegram.call("first_alerts")
            if len(first) >= users:
                break
            await asyncio.sleep(1)
        alerted = [user for user in user_ids if user in first]
        return {
            "latencies": [first[user] - revoked_at[user] for user in alerted],
            "missing": users - len(alerted),
            "early": sum(1 for user in alerted if first[user] < revoked_at[user]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--intervals", type=int, nargs="+", default=[10, 60])
    parser.add_argument(
        "--spread",
        type=float,
        default=3,
        help="revocations spread over at least this many intervals (more when needed, module docstring)",
    )
    parser.add_argument("--latency-ms", type=int, default=20, help="added to every private exchange call")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    lines = []
    for interval in args.intervals:
        spread = spread_for(args.users, interval, args.spread)
        out = asyncio.run(run(args.users, interval, spread, args.latency_ms, args.seed))
        latencies = out["latencies"]
        target = interval + CONFIRMATION_S + SLACK_S
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        worst = max(latencies, default=float("nan"))
        print(f"\ninterval {interval} s, {args.users} users, revocations over {spread:g} intervals")
        print(f"  revocation → alert delivered   p50 {p50:6.1f} s   p99 {p99:6.1f} s   max {worst:6.1f} s")
        print(f"  users never alerted: {out['missing']}   alerted before their revocation: {out['early']}")
        ok = out["missing"] == 0 and out["early"] == 0 and p99 <= target
        lines.append(
            f"{verdict(ok)}  interval {interval} s: p99 {p99:.1f} s <= {target} s, every user alerted"
        )
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
