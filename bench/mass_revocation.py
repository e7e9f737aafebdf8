"""Issue 5: 10,000 users, one Binance key each, all revoked at once. One worker, real clock.

    .venv/bin/python bench/mass_revocation.py [--users 10000] [--db sqlite|postgres]
        [--gc-freeze] [--throughput-only] [--py-spy FILE]

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

Timeline: the connections are seeded as they are after their first check (key info, fresh
balances and an ok incident row stored), so checks are key checks as in steady state, and all
are due at once. Round 1 is the throughput measurement: the worker drains 10,000 due checks as
fast as it can; the window from 10 % to 90 % of them is its steady state. Then, with every
connection checked and idle, the worker's RSS is read. Then every key is revoked on the exchange
at once, and the bench waits until every user has an alert in the local Telegram (and 15 s
more, to catch duplicates).

Baseline ("bare ccxt"): the probe's signed call (``sapiGetAccountApiRestrictions``) through one
ccxt instance in one process (one core), same exchange, same 20 ms, ``--bare-in-flight``
requests outstanding; the best of 4 rounds, since load from outside the bench can only slow a
round down. The CPU used by processes outside the bench is printed for both windows.

Delivery time has a floor no worker can beat: Telegram's 30 messages/s per bot, of which the
sender uses ``SEND_RATE_PER_SECOND`` (25): 10,000 alerts need 400 s. So this bench runs ~10 min
(``--throughput-only`` stops after round 1: ~1 min).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
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
    machine_busy,
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
CORES = os.cpu_count() or 1
TARGETS = {"checks_per_min": 10_000, "of_bare": 0.6, "cpu_ms": 2.0, "kb_per_conn": 10.0}


async def _timeline(database_url: str, revoked_at: float) -> dict[str, Any]:
    """When the worker saw, confirmed and enqueued the revocations (from the database)."""
    from sqlalchemy import func, select

    from services.db import create_engine, session_factory
    from services.models import Incident, OutboxMessage

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


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    began = time.perf_counter()
    users = args.users
    tmp = Path(tempfile.mkdtemp(prefix="keysentry-bench-"))
    children: list[Child] = []
    pg_url = None
    out: dict[str, Any] = {"args": args, "users": users}
    try:
        from services.clock import utcnow
        from services.vault import generate_key

        keys = new_keys(users)
        exchange = Child(exchange_main, EXCHANGE, keys, args.latency_ms, WEIGHT_LIMIT, name="exchange")
        children.append(exchange)
        url = exchange.ready
        key_info = asyncio.run(probe_key_info(EXCHANGE, url, keys[0]))
        if args.db == "postgres":
            from tests.conftest import create_pg_database

            pg_url = database_url = asyncio.run(create_pg_database())
        else:
            database_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        vault_key = generate_key()
        t0 = time.perf_counter()
        user_ids = asyncio.run(seed(database_url, vault_key, EXCHANGE, keys, now=utcnow(), key_info=key_info))
        out["seed_s"] = time.perf_counter() - t0
        telegram = Child(telegram_main, user_ids, name="telegram")
        children.append(telegram)

        # --- the bare ccxt limit, before the worker exists
        out["bare"] = (
            bare_ccxt(EXCHANGE, url, keys[0], args.bare_in_flight, args.bare_seconds, others=[exchange, telegram])
            if args.bare_seconds > 0
            else {"rate": float("nan"), "cpu_ms": float("nan"), "rounds": [], "watched": [0.0], "other": 0.0}
        )

        # --- one worker
        config = {
            "telegram_url": telegram.ready,
            "database_url": database_url,
            "vault_key": vault_key,
            "poll_interval_s": 60,
            "exchange_urls": {EXCHANGE: url},
            "budget_per_minute": {EXCHANGE: WEIGHT_LIMIT},
            "uvloop": args.uvloop,
            "phases": True,
            "lanes": args.lanes,
            "poller": {k: v for k, v in (("batch_size", args.batch_size), ("concurrency", args.concurrency)) if v},
        }
        worker = Child(worker_main, config, name="worker")
        children.append(worker)
        out["rss_ready"] = worker.ready["rss_ready"]
        sampler = Sampler()

        def sample() -> dict[str, Any]:
            s = worker.call("stats")
            s["exchange_cpu"] = exchange.cpu()
            s["telegram_cpu"] = telegram.cpu()
            s["self_cpu"] = time.process_time()
            s["busy"], s["jiffies"] = machine_busy()
            sampler.add(s)
            return s

        if args.gc_freeze:
            worker.call("gc_freeze")
        sample()
        worker.call("start")
        round_started = time.time()
        spy: subprocess.Popen[bytes] | None = None
        while (checked := sample()["checked"]) < users:
            if args.py_spy and spy is None and checked >= 0.1 * users:
                # A sampling profiler on the worker over the steady window (collapsed stacks).
                command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(worker.pid)]
                spy = subprocess.Popen(
                    [*command, "-f", "raw", "-r", "250", "-o", args.py_spy], stdout=subprocess.DEVNULL
                )
            if spy is not None and checked >= 0.9 * users and spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            if time.time() - round_started > 600:
                raise SystemExit("round 1 did not finish within 10 minutes")
            time.sleep(0.5)
        out["round_s"] = time.time() - round_started
        low, high = sampler.window(0.1 * users, 0.9 * users)
        out["window"] = (low, high)
        time.sleep(3)  # every connection checked, none due for ~55 s: loaded and idle
        out["rss_idle"] = worker.call("stats")["rss"]
        if args.throughput_only:
            return out

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
        out["complete"] = tg.get("users_alerted", 0) >= users
        time.sleep(15)  # a duplicate would arrive now
        out["tg"] = telegram.call("stats")
        out["final"] = sample()
        out["first_sample"] = sampler.samples[0]
        out["exchange"] = exchange.call("stats")
        out["revoked_at"] = revoked_at
        worker.stop()
        children.remove(worker)
        out["timeline"] = asyncio.run(_timeline(database_url, revoked_at))
        if args.db == "sqlite":
            out["db_bytes"] = sum(p.stat().st_size for p in tmp.glob("bench.db*"))
    finally:
        stop_all(children)
        if pg_url:
            from tests.conftest import drop_pg_database

            asyncio.run(drop_pg_database(pg_url))
        shutil.rmtree(tmp, ignore_errors=True)
        out["took_s"] = time.perf_counter() - began
    return out


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
    ours = worker_share + exchange_share + (
        high["telegram_cpu"] - low["telegram_cpu"] + high["self_cpu"] - low["self_cpu"]
    ) / span
    bare = out["bare"]
    ratio = rate / bare["rate"]
    kb = (out["rss_idle"] - out["rss_ready"]) / users / 1024

    flags = [args.db, f"{args.latency_ms} ms latency on private calls"]
    if args.gc_freeze:
        flags.append("gc frozen at start")
    if args.uvloop:
        flags.append("uvloop")
    if args.lanes > 1:
        flags.append(f"{args.lanes} poll lanes")
    if args.batch_size or args.concurrency:
        flags.append(f"batch {args.batch_size or 'default'} / concurrency {args.concurrency or 'default'}")
    print(f"\nmass revocation: {users} users x 1 {EXCHANGE} key, 1 worker; " + ", ".join(flags))
    print(f"  {CORES} CPUs; seeding {users} users + connections + incidents took {out['seed_s']:.1f} s")

    print("\nthroughput — round 1, every connection due at once; window 10 %-90 % of the checks")
    print(f"  checks per minute per worker    {rate * 60:9.0f}   ({rate:.0f}/s; round 1 took {out['round_s']:.1f} s)")
    print(f"  CPU per check (worker process)  {cpu_ms:9.3f} ms")
    print(f"  worker CPU                      {100 * worker_share:8.0f} %  of one core")
    print(f"  exchange fake CPU               {100 * exchange_share:8.0f} %  of one core")
    print(f"  outside this bench              {100 * max(machine - ours, 0):8.0f} %  of one core (other load)")
    phases = high["phases"]
    batches = max(phases["claim"][2], 1)
    print(f"  per batch of {checks and round(phases['checks'][2] / batches)} (wall ms / CPU ms per check):")
    for name in ("claim", "checks", "record"):
        wall, cpu, _ = phases[name]
        print(f"    {name:7s} {1000 * wall / batches:7.1f} ms wall   {1000 * cpu / max(phases['checks'][2], 1):6.3f} ms CPU/check")

    print(f"\nbare ccxt — same call, one process, {args.bare_in_flight} in flight, best of 4 x {args.bare_seconds / 4:.0f} s")
    print(f"  signed calls per second         {bare['rate']:9.0f}   ({bare['cpu_ms']:.3f} ms CPU/call)")
    print(f"  rounds                          {', '.join(f'{r:.0f}' for r in bare['rounds'])}")
    print(f"  exchange fake CPU meanwhile     {100 * bare['watched'][0]:8.0f} %  of one core")
    print(f"  outside this bench              {100 * bare['other']:8.0f} %  of one core (other load)")
    print(f"  ratio checks/s / bare calls/s   {ratio:9.2f}")

    print("\nmemory (worker RSS)")
    print(f"  ready (context + template)      {out['rss_ready'] / 2**20:9.1f} MiB")
    print(f"  after round 1, idle             {out['rss_idle'] / 2**20:9.1f} MiB")
    print(f"  per connection                  {kb:9.2f} KiB")
    if out.get("db_bytes"):
        print(f"  (SQLite file: {out['db_bytes'] / users / 1024:.2f} KiB per connection, on disk, not in RSS)")

    rows: list[tuple[str, str, bool]] = [
        (f"checks/min per worker >= {TARGETS['checks_per_min']}", f"{rate * 60:.0f}", rate * 60 >= TARGETS["checks_per_min"]),
        (f"checks/s >= {TARGETS['of_bare']} x bare ccxt calls/s", f"{ratio:.2f}", ratio >= TARGETS["of_bare"]),
        (f"CPU per check <= {TARGETS['cpu_ms']} ms", f"{cpu_ms:.3f}", cpu_ms <= TARGETS["cpu_ms"]),
        (f"memory per idle connection <= {TARGETS['kb_per_conn']:.0f} KB", f"{kb:.2f}", kb <= TARGETS["kb_per_conn"]),
    ]
    if "tg" in out:
        tg, final, revoked_at = out["tg"], out["final"], out["revoked_at"]
        statuses = out["exchange"]["statuses"]
        over = statuses.get(429, 0) + statuses.get(418, 0)
        last = tg["last"] - revoked_at if tg.get("last") else float("nan")
        first = tg["first"] - revoked_at if tg.get("first") else float("nan")
        tl = out["timeline"]
        rows_n, queued_min, queued_max, sent_rows, failed_rows = tl["outbox"]
        all_cpu_ms = (final["cpu"] - out["first_sample"]["cpu"]) * 1000 / max(final["checked"], 1)
        print("\nrevocation -> alerts (seconds after every key was revoked)")
        print(f"  first / last failed check       {_since(tl['seen'][0], revoked_at)} / {_since(tl['seen'][1], revoked_at)}")
        print(f"  first / last confirmed          {_since(tl['confirmed'][0], revoked_at)} / {_since(tl['confirmed'][1], revoked_at)}")
        print(f"  first / last alert queued       {_since(queued_min, revoked_at)} / {_since(queued_max, revoked_at)}")
        done = "" if out["complete"] else "   INCOMPLETE"
        print(f"  first / last alert delivered    {first:6.1f} s / {last:6.1f} s{done}")
        print(f"  Telegram pacing floor           {users / SEND_RATE_PER_SECOND:6.1f} s  ({users} messages at {SEND_RATE_PER_SECOND}/s)")
        print(f"  outbox rows {rows_n}, sent {sent_rows}, parked as failed {failed_rows}")
        print(f"  sendMessage answers             {tg['outcomes']}  (the sender counted {final['telegram_429']} x 429)")
        print(f"  alerts not saying 'revoked'     {tg['not_revoked_text']}")
        print(f"  exchange answers                {statuses}")
        print(f"  worker CPU per check, whole run {all_cpu_ms:9.3f} ms  ({final['checked']} checks, alerts included)")
        print(f"  APScheduler 'skipped' warnings  {final['skipped_runs']}  (hidden; Worker.send overran its 0.2 s tick)")
        rows += [
            ("lost alerts (users without one) = 0", str(tg["users_without"]), tg["users_without"] == 0 and out["complete"]),
            ("duplicate alerts (users with > 1) = 0", str(tg["users_with_more"]), tg["users_with_more"] == 0),
            ("exchange budget never exceeded (429 + 418 = 0)", str(over), over == 0),
        ]
    print("\ntargets")
    for label, value, ok in rows:
        print(f"  {verdict(ok)}  {label:50s} {value}")
    if "tg" in out:
        print(f"  info  Telegram 429s: {out['tg']['outcomes'].get(429, 0)}; last alert {last:.1f} s after revocation")
    print(f"\nbench took {out['took_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--bare-in-flight", type=int, default=256)
    parser.add_argument("--bare-seconds", type=float, default=8, help="total over 4 rounds")
    parser.add_argument("--throughput-only", action="store_true", help="stop after round 1 (~1 min)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the worker before it starts")
    parser.add_argument("--uvloop", action="store_true", help="run the worker on uvloop (experiment)")
    parser.add_argument("--lanes", type=int, default=1, help="concurrent claim-check-record loops (experiment)")
    parser.add_argument("--batch-size", type=int, default=0, help="override PollerConfig.batch_size")
    parser.add_argument("--concurrency", type=int, default=0, help="override PollerConfig.concurrency")
    parser.add_argument("--py-spy", help="py-spy the worker over the round-1 window into FILE (collapsed)")
    out = run(parser.parse_args())
    if out is not None:
        report(out)


if __name__ == "__main__":
    main()
