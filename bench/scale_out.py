"""Issue 7: 1, 2 and 4 worker processes sharing 50,000 connections on PostgreSQL.

    .venv/bin/python -m bench.scale_out [--connections 50000] [--workers 1,2,4] [--window 30]

Set-up: a fresh PostgreSQL database (127.0.0.1:5432, as the tests use), 50,000 users with one
Binance connection each, created through the services with credentials sealed by one vault; the
local Binance in its own process with those keys, 20 ms added to private calls and every weight
pool raised (the workers' ``EXCHANGE_WEIGHT_PER_MINUTE`` matches it, as in ``mass_revocation``).

Each worker is ``python -m bot worker`` (``bench.common.BenchWorker``, the harness the tests
use): the real scheduler, Poller with leases ``FOR UPDATE SKIP LOCKED`` and Sender, configured
through its environment. The poll interval is 10 s (the lowest the settings allow), so 50,000
connections always come due faster than any worker count checks them: the workers never run dry
and the rate is their capacity.

For each worker count: reset every connection to due and unleased, start the workers, wait
``--warmup`` seconds, then count checks over ``--window`` seconds. CPU over the same window is
read from /proc for every process involved: the workers, the exchange fake, every PostgreSQL
process, and the machine as a whole (what nobody here used is "other").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from sqlalchemy.engine import make_url

from bench.common import CORES, BenchRun, BenchWorker, Child, cpu_seconds, machine_busy, new_keys

WEIGHT_LIMIT = 60_000_000  # per minute, every pool of the local Binance and our budget for it
NO_TELEGRAM = "http://127.0.0.1:9"  # no alerts here: the sender never calls it


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU of the PostgreSQL processes that work for this bench: the backends of ``database``
    (their process title names it) and the server's shared processes (WAL writer, checkpointer,
    autovacuum...). Backends of other databases (other people's tests) are left out."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
            backend = "(" in title  # "postgres: 15/main: user db 127.0.0.1(port) state"
            if backend and f" {database} " not in title:
                continue
            out[int(entry)] = cpu_seconds(int(entry))
        except OSError:
            continue
    return out


async def _reset(database_url: str) -> None:
    """Every connection due now and unleased (incidents stay: every key is valid throughout)."""
    from sqlalchemy import update

    from services.core.clock import utcnow
    from services.storage.db import create_engine, session_factory
    from services.storage.models import Connection

    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            await session.execute(
                update(Connection).values(next_poll_at=utcnow(), lease_owner=None, lease_until=None)
            )
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql("VACUUM ANALYZE")  # same start for every worker count
    finally:
        await engine.dispose()


async def snapshot(workers: list[BenchWorker], exchange: Child, database: str) -> dict[str, Any]:
    stats = [await w.stats() for w in workers]
    busy, total = machine_busy()
    return {
        "t": time.perf_counter(),
        "checked": [s["checked"] for s in stats],
        "worker_cpu": [s["cpu"] for s in stats],
        "worker_rss": [s["rss"] for s in stats],
        "exchange_cpu": exchange.cpu(),
        "pg": postgres_cpu(database),
        "self_cpu": time.process_time(),
        "busy": busy,
        "total": total,
    }


async def measure(
    count: int, bench: BenchRun, database_url: str, warmup: float, window: float
) -> dict[str, Any]:
    await _reset(database_url)
    try:
        for n in range(1, count + 1):
            await bench.start_worker(
                database_url,
                NO_TELEGRAM,
                weight_limit=WEIGHT_LIMIT,
                name=f"worker-{n}",
                poll_interval_seconds=10,
                log_level="INFO",
            )
        database = make_url(database_url).database or ""
        await asyncio.sleep(warmup)
        a = await snapshot(bench.workers, bench.exchange, database)
        await asyncio.sleep(window)
        b = await snapshot(bench.workers, bench.exchange, database)
    finally:
        await bench.stop_workers()
    span = b["t"] - a["t"]
    checks = [cb - ca for ca, cb in zip(a["checked"], b["checked"], strict=True)]
    worker_cpu = [cb - ca for ca, cb in zip(a["worker_cpu"], b["worker_cpu"], strict=True)]
    pg_cpu = sum(v - a["pg"].get(pid, 0.0) for pid, v in b["pg"].items())
    jiffy_share = (b["busy"] - a["busy"]) / (b["total"] - a["total"])  # of all cores
    machine_cpu = jiffy_share * CORES * span
    exchange_cpu = b["exchange_cpu"] - a["exchange_cpu"]
    self_cpu = b["self_cpu"] - a["self_cpu"]
    total_checks = sum(checks)
    return {
        "workers": count,
        "span": span,
        "checks": total_checks,
        "per_min": total_checks / span * 60,
        "per_worker_per_min": [c / span * 60 for c in checks],
        "worker_cpu": sum(worker_cpu),
        "worker_cpu_each": worker_cpu,
        "worker_rss": b["worker_rss"],
        "exchange_cpu": exchange_cpu,
        "pg_cpu": pg_cpu,
        "machine_cpu": machine_cpu,
        "other_cpu": max(machine_cpu - sum(worker_cpu) - exchange_cpu - pg_cpu - self_cpu, 0.0),
    }


def _share(cpu: float, span: float) -> str:
    return f"{100 * cpu / span:5.0f} %"


def report(results: list[dict[str, Any]], connections: int) -> None:
    base = results[0]["per_min"] or float("nan")
    print(f"\nscale-out: {connections} connections on PostgreSQL, {CORES} CPUs")
    print("  CPU columns: % of one core over the window (the machine has", CORES * 100, "%)")
    head = (
        "workers",
        "checks/min",
        "x 1",
        "per worker",
        "workers",
        "exchange",
        "postgres",
        "other",
        "machine",
    )
    print("  {:>7} {:>10} {:>5} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8}".format(*head))
    for r in results:
        span = r["span"]
        print(
            "  {:>7} {:>10.0f} {:>5.2f} {:>10.0f} {:>8} {:>8} {:>8} {:>7} {:>8}".format(
                r["workers"],
                r["per_min"],
                r["per_min"] / base,
                r["per_min"] / r["workers"],
                _share(r["worker_cpu"], span),
                _share(r["exchange_cpu"], span),
                _share(r["pg_cpu"], span),
                _share(r["other_cpu"], span),
                _share(r["machine_cpu"], span),
            )
        )
    print("\n  CPU ms per check, and the ceiling that cost allows on all cores")
    costs = ("workers", "worker", "exchange", "postgres", "all", "ceiling/min", "worker RSS MiB")
    print("  {:>7} {:>8} {:>8} {:>8} {:>7} {:>12}   {}".format(*costs))
    for r in results:
        n = max(r["checks"], 1)
        w, e, p = (1000 * r[k] / n for k in ("worker_cpu", "exchange_cpu", "pg_cpu"))
        rss = ", ".join(f"{v / 2**20:.0f}" for v in r["worker_rss"])
        ceiling = CORES * 1000 / (w + e + p) * 60
        print(f"  {r['workers']:>7} {w:8.3f} {e:8.3f} {p:8.3f} {w + e + p:7.3f} {ceiling:12.0f}   {rss}")
    explain(results)


def explain(results: list[dict[str, Any]]) -> None:
    """Where it saturates, from the numbers above."""
    print("\nwhere it saturates")
    one = results[0]
    span = one["span"]
    worker_share = one["worker_cpu"] / span
    print(
        f"  1 worker: {one['per_min']:.0f} checks/min; the worker uses"
        f" {100 * worker_share:.0f} % of one core,"
        f" the exchange fake {100 * one['exchange_cpu'] / span:.0f} %,"
        f" PostgreSQL {100 * one['pg_cpu'] / span:.0f} %;"
        f" the machine is {100 * one['machine_cpu'] / span / CORES:.0f} % busy."
    )
    if worker_share >= 0.85:
        print("  One worker is bound by its own core: one Python process runs on one core at a time.")
    previous = one
    for r in results[1:]:
        span = r["span"]
        busy = r["machine_cpu"] / span / CORES
        print(
            f"  {previous['workers']} -> {r['workers']} workers:"
            f" x{r['per_min'] / (previous['per_min'] or 1):.2f};"
            f" machine {100 * busy:.0f} % busy (workers {100 * r['worker_cpu'] / span:.0f} %,"
            f" exchange fake {100 * r['exchange_cpu'] / span:.0f} %,"
            f" PostgreSQL {100 * r['pg_cpu'] / span:.0f} %,"
            f" other load {100 * r['other_cpu'] / span:.0f} % of one core)."
        )
        previous = r
    saturated = next((r for r in results if r["machine_cpu"] / r["span"] / CORES >= 0.9), None)
    if saturated is None:
        print("  The machine never reached 90 % busy: the limit is elsewhere (latency, locks, pool sizes).")
        return
    n = saturated["checks"]
    parts = {k: saturated[k] / n for k in ("worker_cpu", "exchange_cpu", "pg_cpu")}
    total = sum(parts.values())
    best = max(results, key=lambda r: r["per_min"])
    print(
        f"  From {saturated['workers']} workers on, all {CORES} cores are busy,"
        " so more workers only split them"
        f" (best: {best['workers']} workers, {best['per_min']:.0f} checks/min). Each check then costs"
        f" {1000 * total:.2f} ms of CPU: {100 * parts['worker_cpu'] / total:.0f} % in the worker,"
        f" {100 * parts['exchange_cpu'] / total:.0f} % in the exchange fake,"
        f" {100 * parts['pg_cpu'] / total:.0f} % in PostgreSQL."
    )
    print(
        "  The exchange fake runs on the same two cores only because this is a bench; in production that"
        " share goes to workers, and workers scale until PostgreSQL's CPU (or the exchange's IP budget,"
        " lifted here) is the limit."
    )


async def run(args: argparse.Namespace) -> None:
    from services.core.clock import utcnow

    began = time.perf_counter()
    counts = [int(c) for c in args.workers.split(",")]
    async with BenchRun("keysentry-scale-out-") as bench:
        keys = new_keys(args.connections)
        exchange = await bench.start_exchange(keys, WEIGHT_LIMIT, latency_ms=args.latency_ms)
        database_url = await bench.postgres_url()
        t0 = time.perf_counter()
        await bench.seed(database_url, keys, now=utcnow())
        seeded = time.perf_counter() - t0
        print(f"seeded {args.connections} users + connections (through the services) in {seeded:.1f} s")
        results = []
        for count in counts:
            r = await measure(count, bench, database_url, args.warmup, args.window)
            print(f"  {count} worker(s): {r['per_min']:.0f} checks/min over {r['span']:.1f} s")
            results.append(r)
        statuses = exchange.call("stats")["statuses"]
    report(results, args.connections)
    print(f"\nexchange answers: {statuses}")
    print(f"bench took {time.perf_counter() - began:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--latency-ms", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
