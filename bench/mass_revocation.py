"""Issue 5: 10,000 users, one Binance key each, all revoked at once. One worker, real clock.

    .venv/bin/python bench/mass_revocation.py [--users 10000] [--db sqlite|postgres]
        [--throughput-only] [--lanes N] [--no-gc-freeze] [--py-spy FILE]

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
    CORES,
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
TARGETS = {"checks_per_min": 10_000, "of_bare": 0.6, "cpu_ms": 2.0, "kb_per_conn": 10.0}


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


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    began = time.perf_counter()
    users = args.users
    tmp = Path(tempfile.mkdtemp(prefix="keysentry-bench-"))
    children: list[Child] = []
    pg_url = None
    out: dict[str, Any] = {"args": args, "users": users}
    try:
        from services.core.clock import utcnow
        from services.core.vault import generate_key

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
        telegram = Child(telegram_main, user_ids, args.telegram_latency_ms, name="telegram")
        children.append(telegram)

        # --- the bare ccxt limit, before the worker exists
        skipped = {"rate": float("nan"), "cpu_ms": float("nan"), "rounds": [], "watched": [0.0], "other": 0.0}
        out["bare"], out["bare_64"] = skipped, skipped
        if args.bare_seconds > 0:
            watched = [exchange, telegram]
            out["bare"] = bare_ccxt(
                EXCHANGE, url, keys[0], args.bare_in_flight, args.bare_seconds, others=watched
            )
            # Like for like: the worker keeps at most PollerConfig.concurrency = 64 probes in flight.
            out["bare_64"] = bare_ccxt(EXCHANGE, url, keys[0], 64, args.bare_seconds, others=watched)

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
            "no_gc_freeze": args.no_gc_freeze,
            "sliding_sender": args.sliding_sender,
            "poller": {
                k: v for k, v in (("batch_size", args.batch_size), ("concurrency", args.concurrency)) if v
            },
        }
        worker = Child(worker_main, config, name="worker")
        children.append(worker)
        out["rss_ready"] = worker.ready["rss_ready"]
        out["lanes"] = worker.ready["lanes"]
        sampler = Sampler()

        def sample() -> dict[str, Any]:
            s = worker.call("stats")
            s["exchange_cpu"] = exchange.cpu()
            s["telegram_cpu"] = telegram.cpu()
            s["self_cpu"] = time.process_time()
            s["busy"], s["jiffies"] = machine_busy()
            sampler.add(s)
            return s

        sample()
        worker.call("start")
        round_started = time.time()
        spy: subprocess.Popen[bytes] | None = None
        while (checked := sample()["checked"]) < users:
            if args.py_spy and spy is None and checked >= 0.1 * users:
                # A sampling profiler on the worker over the steady window (collapsed stacks).
                command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(worker.pid)]
                spy = subprocess.Popen(
                    [*command, "--gil", "-f", "raw", "-r", "250", "-o", args.py_spy],
                    stdout=subprocess.DEVNULL,
                )
            if spy is not None and checked >= 0.9 * users and spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            if time.time() - round_started > 600:
                raise SystemExit("round 1 did not finish within 10 minutes")
            time.sleep(0.25)
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
    bare, bare_64 = out["bare"], out["bare_64"]
    ratio = rate / bare["rate"]
    kb = (out["rss_idle"] - out["rss_ready"]) / users / 1024

    flags = [args.db, f"{args.latency_ms} ms latency on private calls"]
    if args.telegram_latency_ms:
        flags.append(f"{args.telegram_latency_ms} ms Telegram round trip")
    if args.no_gc_freeze:
        flags.append("no gc.freeze()")
    if args.sliding_sender:
        flags.append("sender paced over a sliding second (experiment)")
    if args.uvloop:
        flags.append("uvloop")
    if args.lanes:
        flags.append(f"{args.lanes} poll lane(s)")
    if args.batch_size or args.concurrency:
        flags.append(f"batch {args.batch_size or 'default'} / concurrency {args.concurrency or 'default'}")
    print(f"\nmass revocation: {users} users x 1 {EXCHANGE} key, 1 worker; " + ", ".join(flags))
    print(f"  {CORES} CPUs; seeding {users} users + connections + incidents took {out['seed_s']:.1f} s")

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
    phases = high["phases"]
    batches = max(phases["claim"][2], 1)
    per_check = max(phases["checks"][2], 1)
    if out["lanes"] == 1:
        print(f"  per batch of {round(per_check / batches)}, wall ms per batch / CPU ms per check:")
        for name in ("claim", "checks", "record"):
            wall, cpu, _ = phases[name]
            print(f"    {name:7s} {1000 * wall / batches:7.1f} ms  {1000 * cpu / per_check:7.3f} ms")
    else:
        print(f"  ({out['lanes']} batches in flight overlap; --lanes 1 shows the claim/checks/record split)")

    rounds = f"best of 4 x {args.bare_seconds / 4:.0f} s"
    print(f"\nbare ccxt — same call, one process, {args.bare_in_flight} in flight, {rounds}")
    _row("signed calls per second", f"{bare['rate']:9.0f}   ({bare['cpu_ms']:.3f} ms CPU/call)")
    _row("rounds", ", ".join(f"{r:.0f}" for r in bare["rounds"]))
    _row("exchange fake CPU meanwhile", f"{100 * bare['watched'][0]:8.0f} %  of one core")
    _row("outside this bench", f"{100 * bare['other']:8.0f} %  of one core (other load on the machine)")
    _row("ratio checks/s / bare calls/s", f"{ratio:9.2f}")
    _row(
        "64 in flight (the worker's cap)",
        f"{bare_64['rate']:9.0f}   ({bare_64['cpu_ms']:.3f} ms CPU/call; ratio {rate / bare_64['rate']:.2f})",
    )

    print("\nmemory (worker RSS)")
    _row("ready (context + template)", f"{out['rss_ready'] / 2**20:9.1f} MiB")
    _row("after round 1, idle", f"{out['rss_idle'] / 2**20:9.1f} MiB")
    _row("per connection", f"{kb:9.2f} KiB")
    if out.get("db_bytes"):
        _row("SQLite file per connection", f"{out['db_bytes'] / users / 1024:9.2f} KiB (on disk, not in RSS)")

    rows: list[tuple[str, str, bool]] = [
        (f"checks/min per worker >= {TARGETS['checks_per_min']}", f"{rate * 60:.0f}", rate * 60 >= 10_000),
        (
            f"checks/s >= {TARGETS['of_bare']} x bare ccxt calls/s",
            f"{ratio:.2f}",
            ratio >= TARGETS["of_bare"],
        ),
        (f"CPU per check <= {TARGETS['cpu_ms']} ms", f"{cpu_ms:.3f}", cpu_ms <= TARGETS["cpu_ms"]),
        (f"memory per idle connection <= {TARGETS['kb_per_conn']:.0f} KB", f"{kb:.2f}", kb <= 10),
    ]
    last = float("nan")
    if "tg" in out:
        tg, final, revoked_at = out["tg"], out["final"], out["revoked_at"]
        statuses = out["exchange"]["statuses"]
        over = statuses.get(429, 0) + statuses.get(418, 0)
        last = tg["last"] - revoked_at if tg.get("last") else float("nan")
        first = tg["first"] - revoked_at if tg.get("first") else float("nan")
        tl = out["timeline"]
        rows_n, queued_min, queued_max, sent_rows, failed_rows = tl["outbox"]
        all_cpu_ms = (final["cpu"] - out["first_sample"]["cpu"]) * 1000 / max(final["checked"], 1)
        ph = final["phases"]
        sends = max(ph["send_message"][2], 1)
        claims = max(ph["send_claim"][2], 1)
        print("\nrevocation -> alerts (seconds after every key was revoked)")
        _row("first / last failed check", _span(tl["seen"][0], tl["seen"][1], revoked_at))
        _row("first / last confirmed", _span(tl["confirmed"][0], tl["confirmed"][1], revoked_at))
        _row("first / last alert queued", _span(queued_min, queued_max, revoked_at))
        done = "" if out["complete"] else "   INCOMPLETE"
        _row("first / last alert delivered", f"{first:6.1f} s / {last:6.1f} s{done}")
        if tg.get("first") and tg.get("last"):
            _row("delivery rate", f"{users / (tg['last'] - tg['first']):6.1f} messages/s")
        floor = users / SEND_RATE_PER_SECOND
        _row("Telegram pacing floor", f"{floor:6.1f} s  ({users} messages at {SEND_RATE_PER_SECOND}/s)")
        _row("outbox rows", f"{rows_n}, sent {sent_rows}, parked as failed {failed_rows}")
        _row("sendMessage answers", f"{tg['outcomes']}  (the sender counted {final['telegram_429']} x 429)")
        _row("most messages in any 1 s", f"{tg['peak_per_second']}  (Telegram allows 30 per bot; our clock)")
        for (_, why), before in zip(tg["refused"], tg["refused_after"], strict=True):
            _row("  refused", f"{why}  ({before} delivered in the second before)")
        _row("alerts not saying 'revoked'", str(tg["not_revoked_text"]))
        _row("exchange answers", str(statuses))
        _row(
            "sender, per message (wall)",
            f"sendMessage {1000 * ph['send_message'][0] / sends:.1f} ms + mark_sent"
            f" {1000 * ph['mark_sent'][0] / sends:.1f} ms, one after another;"
            f" outbox claim {1000 * ph['send_claim'][0] / claims:.1f} ms x {claims}",
        )
        _row(
            "worker CPU per check, whole run",
            f"{all_cpu_ms:9.3f} ms  ({final['checked']} checks + the alerts)",
        )
        _row(
            "APScheduler 'skipped' warnings", f"{final['skipped_runs']}  (Worker.send overran its 0.2 s tick)"
        )
        lost, dupes = tg["users_without"], tg["users_with_more"]
        rows += [
            ("lost alerts (users without one) = 0", str(lost), lost == 0 and out["complete"]),
            ("duplicate alerts (users with > 1) = 0", str(dupes), dupes == 0),
            ("exchange budget never exceeded (429 + 418 = 0)", str(over), over == 0),
        ]
    print("\ntargets")
    for label, value, ok in rows:
        print(f"  {verdict(ok)}  {label:50s} {value}")
    if "tg" in out:
        telegram_429 = out["tg"]["outcomes"].get(429, 0)
        print(f"  info  Telegram 429s: {telegram_429}; last alert {last:.1f} s after revocation")
    print(f"\nbench took {out['took_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument(
        "--telegram-latency-ms", type=int, default=0, help="round trip added to every Telegram call"
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--bare-in-flight", type=int, default=256)
    parser.add_argument("--bare-seconds", type=float, default=8, help="total over 4 rounds")
    parser.add_argument("--throughput-only", action="store_true", help="stop after round 1 (~1 min)")
    parser.add_argument("--no-gc-freeze", action="store_true", help="start the worker without gc.freeze()")
    parser.add_argument(
        "--sliding-sender", action="store_true", help="pace the sender over a sliding second (proposal)"
    )
    parser.add_argument("--uvloop", action="store_true", help="run the worker on uvloop (experiment)")
    parser.add_argument(
        "--lanes", type=int, default=0, help="Worker.lanes: batches in flight (default: product's)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="override PollerConfig.batch_size")
    parser.add_argument("--concurrency", type=int, default=0, help="override PollerConfig.concurrency")
    parser.add_argument("--py-spy", help="py-spy the worker over the round-1 window into FILE (collapsed)")
    out = run(parser.parse_args())
    if out is not None:
        report(out)


if __name__ == "__main__":
    main()
