"""Issue 14: N users, one Binance key each, all revoked at once; one worker, real clock.

    .venv/bin/python -m bench.mass_revocation [--users 10000] [--telegram-latency-ms 80]
        [--db sqlite|postgres] [--throughput-only]

A reduced run (``--users 1000``) takes about two minutes; the full 10,000 about ten.

Processes (each its own, so each one's CPU is its own):

* the local Binance (``sandbox.exchanges``) with every user's key, 20 ms added to every private
  call, every weight pool raised to ``WEIGHT_LIMIT`` per minute;
* the local Telegram (``sandbox.telegram``) with Telegram's flood limits on (30 messages/s per
  bot, ~1/s per chat), ``--telegram-latency-ms`` added to every answer (the round trip to
  api.telegram.org), counting deliveries per chat and 429s;
* one worker: ``python -m bot`` started by the harness the tests use (``sandbox.processes``), its
  own settings only: ``EXCHANGE_WEIGHT_PER_MINUTE`` = the figure the local exchange enforces
  (used at the production share, 50 %), so the machine is measured and not Binance's 6000/min;
  a 429 or 418 from the exchange would still show (and is counted);
* a bare ccxt process for the baseline (below), run before the worker starts.

Database: a SQLite file (WAL), the default single-worker deployment (the worker then runs as
``python -m bot``, all roles). SQLite runs inside the worker process (aiosqlite's thread), so
every database cost is counted in the worker's CPU per check — the conservative choice;
``--db postgres`` moves it out (PostgreSQL at 127.0.0.1, ``python -m bot worker``).

Users are seeded through the services as the link wizard leaves them (key info of a real probe,
fresh balances); every tenth user has funds locked by open orders — the riskiest decile, spread
evenly over the row order, so sending in row order reaches its last member only at the end.

Timeline: round 1 is the throughput measurement: the worker drains N due checks as fast as it
can; the window from 10 % to 90 % of them is its steady state. Then, with every connection
checked and idle, the worker's RSS is read. Then every key is revoked on the exchange at once,
and the bench waits until every user has an alert in the local Telegram (and 15 s more, to
catch duplicates).

Baseline ("bare ccxt"): the probe's signed call (``sapiGetAccountApiRestrictions``) through one
ccxt instance in one process (one core), same exchange, same 20 ms, ``--bare-in-flight``
requests outstanding; the best of 4 rounds, since load from outside the bench can only slow a
round down.

Delivery has a floor no worker can beat: the configured rate (``SEND_RATE_PER_SECOND``, 25 of
Telegram's 30 messages/s per bot) from the moment the first alert is ready: ``first alert + N /
rate`` after the revocation.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import (
    CORES,
    EXCHANGE,
    BenchRun,
    Sampler,
    bare_ccxt,
    machine_busy,
    new_keys,
    utc,
    verdict,
)

WEIGHT_LIMIT = 6_000_000  # per minute, every pool of the local Binance and our budget for it
SEND_RATE_PER_SECOND = 25  # Settings.send_rate_per_second default
RISKY_EVERY = 10  # every tenth user has funds locked by open orders
TARGETS = {"of_rate": 0.9, "of_floor": 1.1, "of_bare": 0.5}


def _locks_funds(index: int, connection: Any) -> None:
    if index % RISKY_EVERY == RISKY_EVERY - 1:
        connection.balances = {"USDT": {"free": 200.0, "total": 1000.0}}  # 800 USDT in open orders
    else:
        connection.balances = {"USDT": {"free": 1000.0, "total": 1000.0}}


async def _timeline(database_url: str, revoked_at: float) -> dict[str, Any]:
    """When the worker saw, confirmed and enqueued the revocations (from the database)."""
    from sqlalchemy import func, select

    from services.storage.db import create_engine, session_factory
    from services.storage.models import Incident, OutboxMessage

    engine = create_engine(database_url)
    since = utc(revoked_at)
    try:
        async with session_factory(engine)() as session:
            seen = (
                await session.execute(
                    select(func.min(Incident.pending_since), func.max(Incident.pending_since)).where(
                        Incident.check_kind == "key", Incident.pending_since >= since
                    )
                )
            ).one()
            confirmed = (
                await session.execute(
                    select(func.min(Incident.failing_since), func.max(Incident.failing_since)).where(
                        Incident.check_kind == "key", Incident.failing_since >= since
                    )
                )
            ).one()
            outbox = (
                await session.execute(
                    select(
                        func.count(),
                        func.min(OutboxMessage.created_at),
                        func.max(OutboxMessage.created_at),
                        func.count(OutboxMessage.sent_at),
                        func.count().filter(OutboxMessage.failed.is_(True)),
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return {"seen": seen, "confirmed": confirmed, "outbox": outbox}


def _since(moment: Any, origin: float) -> str:
    return f"{moment.timestamp() - origin:6.1f} s" if moment is not None else "   n/a"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    users = args.users
    out: dict[str, Any] = {"args": args, "users": users}
    try:
        async with BenchRun("keysentry-bench-") as bench:
            return await _measure(bench, args, out)
    finally:
        out["took_s"] = time.perf_counter() - began


async def _measure(bench: BenchRun, args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    from services.core.clock import utcnow

    users = args.users
    keys = new_keys(users)
    # The operator's canary key (CANARY_KEYS), never revoked: it tells the IP-block guard that
    # a wave of revoked keys is a mass reset, not our IP being blocked.
    canary = new_keys(1)[0]
    exchange = await bench.start_exchange([*keys, canary], WEIGHT_LIMIT, latency_ms=args.latency_ms)
    database_url = await bench.postgres_url() if args.db == "postgres" else bench.sqlite_url()
    t0 = time.perf_counter()
    user_ids = await bench.seed(database_url, keys, now=utcnow(), prepare=_locks_funds)
    out["risky"] = [u for i, u in enumerate(user_ids) if i % RISKY_EVERY == RISKY_EVERY - 1]
    out["seed_s"] = time.perf_counter() - t0
    telegram = bench.start_telegram(user_ids, args.telegram_latency_ms)

    # --- the bare ccxt limit, before the worker exists
    out["bare"] = {
        "rate": float("nan"),
        "cpu_ms": float("nan"),
        "rounds": [],
        "watched": [0.0],
        "other": 0.0,
    }
    if args.bare_seconds > 0:
        out["bare"] = bare_ccxt(
            EXCHANGE,
            exchange.ready,
            keys[0],
            args.bare_in_flight,
            args.bare_seconds,
            others=[exchange, telegram],
        )

    # --- one worker, configured only through its environment
    worker = await bench.start_worker(
        database_url,
        telegram.ready,
        weight_limit=WEIGHT_LIMIT,
        poll_interval_seconds=args.interval,
        send_rate_per_second=SEND_RATE_PER_SECOND,
        canary=canary,
    )
    sampler = Sampler()

    async def sample() -> dict[str, Any]:
        s = await worker.stats()
        s["exchange_cpu"] = exchange.cpu()
        s["telegram_cpu"] = telegram.cpu()
        s["self_cpu"] = time.process_time()
        s["busy"], s["jiffies"] = machine_busy()
        sampler.add(s)
        return s

    out["rss_ready"] = (await sample())["rss"]
    round_started = time.time()
    while (await sample())["checked"] < users:
        if time.time() - round_started > 600:
            raise SystemExit("round 1 did not finish within 10 minutes")
        await asyncio.sleep(0.25)
    out["round_s"] = time.time() - round_started
    out["window"] = sampler.window(0.1 * users, 0.9 * users)
    await asyncio.sleep(3)  # every connection checked, none due for a while: loaded and idle
    out["rss_idle"] = (await worker.stats())["rss"]
    if args.throughput_only:
        return out

    # --- revoke everything at once
    revoked_at = exchange.call("revoke", [key[0] for key in keys])
    deadline = revoked_at + 180 + users / SEND_RATE_PER_SECOND * 1.5
    tg: dict[str, Any] = {}
    while time.time() < deadline:
        tg = telegram.call("stats")
        await sample()
        if tg["users_alerted"] >= users:
            break
        await asyncio.sleep(1)
    out["complete"] = tg.get("users_alerted", 0) >= users
    await asyncio.sleep(15)  # a duplicate would arrive now
    out["tg"] = telegram.call("stats")
    out["risky_last"] = telegram.call("last_among", out["risky"])
    out["final"] = await sample()
    out["first_sample"] = sampler.samples[0]
    out["exchange"] = exchange.call("stats")
    out["revoked_at"] = revoked_at
    await bench.stop_workers()
    out["timeline"] = await _timeline(database_url, revoked_at)
    return out


def _row(label: str, value: str) -> None:
    print(f"  {label:32s}{value}")


def _span(a: Any, b: Any, origin: float) -> str:
    return f"{_since(a, origin)} / {_since(b, origin)}"


def report(out: dict[str, Any]) -> None:
    args, users = out["args"], out["users"]
    low, high = out["window"]
    span = high["t"] - low["t"]
    checks = high["checked"] - low["checked"]
    rate = checks / span
    cpu_ms = (high["cpu"] - low["cpu"]) * 1000 / checks
    worker_share = (high["cpu"] - low["cpu"]) / span
    exchange_share = (high["exchange_cpu"] - low["exchange_cpu"]) / span
    machine = (high["busy"] - low["busy"]) / (high["jiffies"] - low["jiffies"]) * CORES
    others = high["telegram_cpu"] - low["telegram_cpu"] + high["self_cpu"] - low["self_cpu"]
    outside = max(machine - worker_share - exchange_share - others / span, 0.0)
    bare = out["bare"]
    ratio = rate / bare["rate"]
    kb = (out["rss_idle"] - out["rss_ready"]) / users / 1024

    flags = [args.db, f"{args.latency_ms} ms latency on private calls"]
    if args.telegram_latency_ms:
        flags.append(f"{args.telegram_latency_ms} ms Telegram round trip")
    print(f"\nmass revocation: {users} users x 1 {EXCHANGE} key, 1 worker; " + ", ".join(flags))
    print(f"  {CORES} CPUs; seeding {users} users + connections took {out['seed_s']:.1f} s")

    print("\nthroughput — round 1, every connection due at once; window 10 %-90 % of the checks")
    _row(
        "checks per minute per worker",
        f"{rate * 60:9.0f}   ({rate:.0f}/s; round 1 took {out['round_s']:.1f} s)",
    )
    if out["round_s"] < 3:
        print("  (round 1 too short for a steady-state window: figures include start-up; use more users)")
    _row("CPU per check (worker process)", f"{cpu_ms:9.3f} ms")
    _row("worker CPU", f"{100 * worker_share:8.0f} %  of one core")
    _row("exchange fake CPU", f"{100 * exchange_share:8.0f} %  of one core")
    _row("outside this bench", f"{100 * outside:8.0f} %  of one core (other load on the machine)")

    rounds = f"best of 4 x {args.bare_seconds / 4:.0f} s"
    print(f"\nbare ccxt — same call, one process, {args.bare_in_flight} in flight, {rounds}")
    _row("signed calls per second", f"{bare['rate']:9.0f}   ({bare['cpu_ms']:.3f} ms CPU/call)")
    _row("rounds", ", ".join(f"{r:.0f}" for r in bare["rounds"]))
    _row("outside this bench", f"{100 * bare['other']:8.0f} %  of one core (other load on the machine)")
    _row("ratio checks/s / bare calls/s", f"{ratio:9.2f}")

    print("\nmemory (worker RSS)")
    _row("ready (context, before checks)", f"{out['rss_ready'] / 2**20:9.1f} MiB")
    _row("after round 1, idle", f"{out['rss_idle'] / 2**20:9.1f} MiB")
    _row("per connection", f"{kb:9.2f} KiB  (includes the exchange template, built on the first check)")

    rows: list[tuple[str, str, bool]] = [
        (
            f"checks/s >= {TARGETS['of_bare']} x bare ccxt calls/s",
            f"{ratio:.2f}",
            ratio >= TARGETS["of_bare"],
        ),
        ("CPU per check (info)", f"{cpu_ms:.3f} ms", True),
    ]
    if "tg" in out:
        tg, final, revoked_at = out["tg"], out["final"], out["revoked_at"]
        statuses = out["exchange"]["statuses"]
        over = statuses.get(429, 0) + statuses.get(418, 0)
        last = tg["last"] - revoked_at if tg.get("last") else float("nan")
        first = tg["first"] - revoked_at if tg.get("first") else float("nan")
        risky_last = out["risky_last"] - revoked_at if out.get("risky_last") else float("nan")
        tl = out["timeline"]
        rows_n, queued_min, queued_max, sent_rows, failed_rows = tl["outbox"]
        print("\nrevocation -> alerts (seconds after every key was revoked)")
        _row("first / last failed check", _span(tl["seen"][0], tl["seen"][1], revoked_at))
        _row("first / last confirmed", _span(tl["confirmed"][0], tl["confirmed"][1], revoked_at))
        _row("first / last alert queued", _span(queued_min, queued_max, revoked_at))
        done = "" if out["complete"] else "   INCOMPLETE"
        _row("first / last alert delivered", f"{first:6.1f} s / {last:6.1f} s{done}")
        _row(
            "last alert of the riskiest 10 %",
            f"{risky_last:6.1f} s  ({len(out['risky'])} users, funds locked)",
        )
        delivery = users / (tg["last"] - tg["first"]) if tg.get("first") and tg.get("last") else 0.0
        _row("delivery rate", f"{delivery:6.1f} messages/s  (configured {SEND_RATE_PER_SECOND}/s)")
        floor = first + users / SEND_RATE_PER_SECOND
        # Sent first, the riskiest users wait at most until the last alert is queued plus their own
        # messages at the configured rate (and a few seconds of confirmation and ticks).
        last_queued = queued_max.timestamp() - revoked_at if queued_max is not None else float("nan")
        risky_floor = min(last_queued, floor) + len(out["risky"]) / SEND_RATE_PER_SECOND + 5
        _row("floor", f"{floor:6.1f} s  (first alert + {users} messages at {SEND_RATE_PER_SECOND}/s)")
        _row("outbox rows", f"{rows_n}, sent {sent_rows}, parked as failed {failed_rows}")
        _row(
            "sendMessage answers", f"{tg['outcomes']}  (the sender counted {final['telegram_429']:.0f} x 429)"
        )
        _row("most messages in any 1 s", f"{tg['peak_per_second']}  (Telegram allows 30 per bot)")
        for (_, why), before in zip(tg["refused"], tg["refused_after"], strict=True):
            _row("  refused", f"{why}  ({before} delivered in the second before)")
        _row("alerts not saying 'revoked'", str(tg["not_revoked_text"]))
        _row("exchange answers", str(statuses))
        all_cpu_ms = (final["cpu"] - out["first_sample"]["cpu"]) * 1000 / max(final["checked"], 1)
        _row(
            "worker CPU per check, whole run",
            f"{all_cpu_ms:9.3f} ms  ({final['checked']:.0f} checks + the alerts)",
        )
        _row(
            "APScheduler 'skipped' warnings",
            f"send {final['skipped_sends']}, poll {final['skipped_polls']}  (a tick overran its interval)",
        )
        lost, dupes = tg["users_without"], tg["users_with_more"]
        telegram_429 = tg["outcomes"].get(429, 0)
        rows += [
            (
                f"delivery rate >= {TARGETS['of_rate']} x configured",
                f"{delivery / SEND_RATE_PER_SECOND:.2f}",
                delivery >= TARGETS["of_rate"] * SEND_RATE_PER_SECOND,
            ),
            ("Telegram 429s = 0", str(telegram_429), telegram_429 == 0),
            (
                f"last alert <= {TARGETS['of_floor']} x floor",
                f"{last / floor:.2f} ({last:.0f} s / {floor:.0f} s)",
                last <= TARGETS["of_floor"] * floor,
            ),
            (
                "riskiest decile served first (last <= own floor)",
                f"{risky_last:.0f} s / {risky_floor:.0f} s",
                risky_last <= risky_floor,
            ),
            ("lost alerts (users without one) = 0", str(lost), lost == 0 and out["complete"]),
            ("duplicate alerts (users with > 1) = 0", str(dupes), dupes == 0),
            ("exchange budget never exceeded (429 + 418 = 0)", str(over), over == 0),
            (
                "no overrun send ticks ('skipped' warnings = 0)",
                str(final["skipped_sends"]),
                final["skipped_sends"] == 0,
            ),
        ]
    print("\ntargets")
    for label, value, ok in rows:
        print(f"  {verdict(ok)}  {label:52s} {value}")
    print(f"\nbench took {out['took_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--interval", type=int, default=60, help="POLL_INTERVAL_SECONDS (10 for quick runs)")
    parser.add_argument(
        "--telegram-latency-ms", type=int, default=0, help="round trip added to every Telegram call"
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--bare-in-flight", type=int, default=256)
    parser.add_argument("--bare-seconds", type=float, default=8, help="total over 4 rounds")
    parser.add_argument("--throughput-only", action="store_true", help="stop after round 1 (~1 min)")
    report(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
