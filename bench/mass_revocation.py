"""Issue 5: 10,000 users, one Binance key each, all revoked at once. One worker, real clock.

    .venv/bin/python bench/mass_revocation.py [--users 10000] [--db sqlite|postgres] [--gc-freeze]

Processes (each its own, so each one's CPU is its own):

* the local Binance (``sandbox.exchanges``) with every user's key, 20 ms added to every private
  call, every weight pool raised to ``WEIGHT_LIMIT`` per minute;
* the local Telegram (``sandbox.telegram``) with Telegram's flood limits on (30 messages/s per
  bot, ~1/s per chat), counting deliveries per chat and 429s;
* one worker: the real ``bot.worker.Worker`` — APScheduler ticking the real Poller (1 s) and
  Sender (0.2 s) — wired like ``bot.app.build_context`` except that the exchange hub gets
  ``BudgetRegistry(overrides={"binance": WEIGHT_LIMIT})``: the same figure the local exchange
  enforces, used at the production share (50 %), so the machine is measured and not Binance's
  6000/min; a 429 or 418 from the exchange would still show (and is counted);
* a bare ccxt process for the baseline (below), run before the worker starts.

Database: a SQLite file (WAL), the default single-worker deployment. SQLite runs inside the
worker process (aiosqlite's thread), so every database cost is counted in the worker's CPU per
check — the conservative choice; ``--db postgres`` moves it out (PostgreSQL at 127.0.0.1).

Timeline: the connections are seeded as the link wizard leaves them (key info and balances
stored, so checks are key checks as in steady state) and all due at once. Round 1 is the
throughput measurement: the worker drains 10,000 due checks as fast as it can; the window from
10 % to 90 % of them is its steady state. Then, with every connection checked and idle, the
worker's RSS is read. Then every key is revoked on the exchange at once, and the bench waits
until every user has an alert in the local Telegram (and 15 s more, to catch duplicates).

Baseline ("bare ccxt"): the probe's signed call (``sapiGetAccountApiRestrictions``) through one
ccxt instance on one core, same exchange, same 20 ms, ``--bare-in-flight`` requests outstanding.

Delivery time has a floor no worker can beat: Telegram's 30 messages/s per bot, of which the
sender uses ``SEND_RATE_PER_SECOND`` (25): 10,000 alerts need 400 s. So this bench runs ~9 min.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Child,
    Sampler,
    bare_ccxt,
    exchange_main,
    new_keys,
    probe_key_info,
    seed,
    stop_all,
    telegram_main,
    utc,
    verdict,
    worker_main,
)

EXCHANGE = "binance"
WEIGHT_LIMIT = 6_000_000  # per minute, every pool of the local Binance and our budget for it
SEND_RATE_PER_SECOND = 25  # Settings.send_rate_per_second default
TARGETS = {
    "checks_per_min": 10_000,
    "of_bare": 0.6,
    "cpu_ms": 2.0,
    "kb_per_conn": 10.0,
}


async def _pg_database() -> str:
    from tests.conftest import create_pg_database

    return await create_pg_database()


async def _drop_pg(url: str) -> None:
    from tests.conftest import drop_pg_database

    await drop_pg_database(url)


async def _timeline(database_url: str, revoked_at: float) -> dict[str, Any]:
    """When the worker saw, confirmed and enqueued the revocations (from the database)."""
    from sqlalchemy import func, select

    from services.db import create_engine, session_factory
    from services.models import Incident, OutboxMessage

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            seen = (
                await session.execute(
                    select(func.min(Incident.pending_since), func.max(Incident.pending_since))
                    .where(Incident.check_kind == "key", Incident.pending_since >= utc(revoked_at))
                )
            ).one()
            confirmed = (
                await session.execute(
                    select(func.min(Incident.failing_since), func.max(Incident.failing_since)).where(
                        Incident.check_kind == "key", Incident.failing_since >= utc(revoked_at)
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


def run(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    users = args.users
    tmp = Path(tempfile.mkdtemp(prefix="keysentry-bench-"))
    children: list[Child | None] = []
    pg_url = None
    try:
        keys = new_keys(users)
        exchange = Child(exchange_main, EXCHANGE, keys, args.latency_ms, WEIGHT_LIMIT, name="exchange")
        children.append(exchange)
        url = exchange.ready
        key_info = asyncio.run(probe_key_info(EXCHANGE, url, keys[0]))
        if args.db == "postgres":
            pg_url = asyncio.run(_pg_database())
            database_url = pg_url
        else:
            database_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        from services.clock import utcnow
        from services.vault import generate_key

        vault_key = generate_key()
        seeded_at = time.perf_counter()
        user_ids = asyncio.run(
            seed(database_url, vault_key, EXCHANGE, keys, now=utcnow(), key_info=key_info)
        )
        seed_s = time.perf_counter() - seeded_at
        telegram = Child(telegram_main, user_ids, name="telegram")
        children.append(telegram)

        # --- the bare ccxt limit, before anything else loads the exchange
        ex_cpu0, t0 = exchange.cpu(), time.perf_counter()
        bare_rate, bare_cpu_ms, _ = bare_ccxt(EXCHANGE, url, keys[0], args.bare_in_flight, args.bare_seconds)
        bare_exchange_share = (exchange.cpu() - ex_cpu0) / (time.perf_counter() - t0)

        # --- one worker
        config = {
            "telegram_url": telegram.ready,
            "database_url": database_url,
            "vault_key": vault_key,
            "poll_interval_s": 60,
            "exchange_urls": {EXCHANGE: url},
            "budget_per_minute": {EXCHANGE: WEIGHT_LIMIT},
            "uvloop": args.uvloop,
            "poller": {k: v for k, v in (("batch_size", args.batch_size), ("concurrency", args.concurrency)) if v},
        }
        worker = Child(worker_main, config, name="worker")
        children.append(worker)
        rss_ready = worker.ready["rss_ready"]
        sampler = Sampler()

        def sample() -> dict[str, Any]:
            s = worker.call("stats")
            s["exchange_cpu"] = exchange.cpu()
            sampler.add(s)
            return s

        sample()
        if args.gc_freeze:
            worker.call("gc_freeze")
        worker.call("start")
        round_started = time.time()
        while sample()["checked"] < users:
            if time.time() - round_started > 600:
                raise SystemExit("round 1 did not finish within 10 minutes")
            time.sleep(0.5)
        round_s = time.time() - round_started
        low, high = sampler.window(0.1 * users, 0.9 * users)
        span = high["t"] - low["t"]
        steady_rate = (high["checked"] - low["checked"]) / span
        steady_cpu_ms = (high["cpu"] - low["cpu"]) * 1000 / (high["checked"] - low["checked"])
        steady_worker_share = (high["cpu"] - low["cpu"]) / span
        steady_exchange_share = (high["exchange_cpu"] - low["exchange_cpu"]) / span
        time.sleep(3)  # every connection checked, none due for ~55 s: loaded and idle
        rss_idle = worker.call("stats")["rss"]

        # --- revoke everything at once
        revoked_at = exchange.call("revoke_all")
        deadline = revoked_at + 180 + users / SEND_RATE_PER_SECOND * 1.5
        tg: dict[str, Any] = {}
        while time.time() < deadline:
            tg = telegram.call("stats")
            sample()
            if tg["users_alerted"] >= users:
                break
            time.sleep(1)
        complete = tg.get("users_alerted", 0) >= users
        time.sleep(15)  # a duplicate would arrive now
        tg = telegram.call("stats")
        final = sample()
        exchange_stats = exchange.call("stats")
        worker.stop()
        children.remove(worker)
        timeline = asyncio.run(_timeline(database_url, revoked_at))
        db_bytes = sum(p.stat().st_size for p in tmp.glob("bench.db*")) if args.db == "sqlite" else None
    finally:
        stop_all(children)
        if pg_url:
            asyncio.run(_drop_pg(pg_url))
        shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ report
    per_min = steady_rate * 60
    ratio = steady_rate / bare_rate
    kb_per_conn = (rss_idle - rss_ready) / users / 1024
    statuses = exchange_stats["statuses"]
    over_budget = statuses.get(429, 0) + statuses.get(418, 0)
    lost = tg["users_without"]
    dupes = tg["users_with_more"]
    last_alert_s = tg["last"] - revoked_at if tg.get("last") else float("nan")
    total_cpu_ms = (final["cpu"] - sampler.samples[0]["cpu"]) * 1000 / max(final["checked"], 1)
    floor_s = users / SEND_RATE_PER_SECOND

    print(f"\nmass revocation: {users} users x 1 {EXCHANGE} key, 1 worker, {args.db}", end="")
    print(f", {args.latency_ms} ms latency on private calls" + (", gc frozen at start" if args.gc_freeze else ""))
    print(f"  machine: {os.cpu_count()} CPUs; seeding {users} connections took {seed_s:.1f} s")
    print("\nthroughput (round 1: all due at once, window 10 %-90 % of the checks)")
    print(f"  checks per minute per worker  {per_min:9.0f}   ({steady_rate:.0f}/s; round 1 took {round_s:.1f} s)")
    print(f"  CPU per check (worker)        {steady_cpu_ms:9.3f} ms  (whole run incl. sending: {total_cpu_ms:.3f} ms)")
    print(f"  worker CPU in the window      {100 * steady_worker_share:8.0f} %  of one core")
    print(f"  exchange fake CPU             {100 * steady_exchange_share:8.0f} %  of one core")
    print(f"\nbare ccxt, same call, one process, {args.bare_in_flight} in flight, {args.bare_seconds:.0f} s")
    print(f"  signed calls per second       {bare_rate:9.0f}   ({bare_cpu_ms:.3f} ms CPU/call)")
    print(f"  exchange fake CPU meanwhile   {100 * bare_exchange_share:8.0f} %  of one core")
    print(f"  ratio checks/s / bare calls/s {ratio:9.2f}")
    print("\nmemory (worker RSS)")
    print(f"  ready (context + template)    {rss_ready / 2**20:9.1f} MiB")
    print(f"  after round 1, idle           {rss_idle / 2**20:9.1f} MiB")
    print(f"  per connection                {kb_per_conn:9.2f} KiB")
    if db_bytes is not None:
        print(f"  (on disk, SQLite: {db_bytes / users / 1024:.2f} KiB per connection, not in RSS)")
    print("\nrevocation → alerts")
    seen_min, seen_max = timeline["seen"]
    conf_min, conf_max = timeline["confirmed"]
    rows, queued_min, queued_max, sent_rows, failed_rows = timeline["outbox"]
    print(f"  first / last failed check     {_since(seen_min, revoked_at)} / {_since(seen_max, revoked_at)}")
    print(f"  first / last confirmed        {_since(conf_min, revoked_at)} / {_since(conf_max, revoked_at)}")
    print(f"  first / last alert queued     {_since(queued_min, revoked_at)} / {_since(queued_max, revoked_at)}")
    first = tg["first"] - revoked_at if tg.get("first") else float("nan")
    print(f"  first / last alert delivered  {first:6.1f} s / {last_alert_s:6.1f} s" + ("" if complete else "  (INCOMPLETE)"))
    print(f"  Telegram pacing floor         {floor_s:6.1f} s  ({users} alerts at {SEND_RATE_PER_SECOND}/s)")
    print(f"  outbox rows {rows}, sent {sent_rows}, parked as failed {failed_rows or 0}")
    print(f"  Telegram sendMessage outcomes {tg['outcomes']}  (sender saw {final['telegram_429']} x 429)")
    print(f"  alerts without 'revoked'      {tg['not_revoked_text']}")
    print(f"  exchange answers              {statuses}")

    print("\ntargets")
    rows_out = [
        (f"checks/min per worker >= {TARGETS['checks_per_min']}", f"{per_min:.0f}", per_min >= TARGETS["checks_per_min"]),
        (f"checks/s >= {TARGETS['of_bare']} x bare ccxt", f"{ratio:.2f}", ratio >= TARGETS["of_bare"]),
        (f"CPU per check <= {TARGETS['cpu_ms']} ms", f"{steady_cpu_ms:.3f}", steady_cpu_ms <= TARGETS["cpu_ms"]),
        (f"memory per idle connection <= {TARGETS['kb_per_conn']:.0f} KB", f"{kb_per_conn:.2f}", kb_per_conn <= TARGETS["kb_per_conn"]),
        ("lost alerts = 0", str(lost), lost == 0),
        ("duplicate alerts = 0", str(dupes), dupes == 0),
        ("exchange budget never exceeded (429/418 = 0)", str(over_budget), over_budget == 0),
    ]
    for label, value, ok in rows_out:
        print(f"  {verdict(ok)}  {label:48s} {value}")
    print(f"  info  Telegram 429s: {tg['outcomes'].get(429, 0)}; last alert {last_alert_s:.1f} s after revocation")
    print(f"\nbench took {time.perf_counter() - began:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--bare-in-flight", type=int, default=256)
    parser.add_argument("--bare-seconds", type=float, default=8)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the worker before it starts (experiment)")
    parser.add_argument("--uvloop", action="store_true", help="run the worker on uvloop (experiment)")
    parser.add_argument("--batch-size", type=int, default=0, help="override PollerConfig.batch_size")
    parser.add_argument("--concurrency", type=int, default=0, help="override PollerConfig.concurrency")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
