"""Issue 14 §5: key checks per minute through 1, 2 and 4 egress routes, each IP its own budget.

    .venv/bin/python -m bench.egress [--routes 1,2,4] [--limit 600] [--users 800] [--window 60]

A reduced run (``--routes 1,2``) takes about three minutes; the default about five.

Set-up: the local Binance in its own process, enforcing ``--limit`` weight a minute **per caller
IP** on every pool (its per-IP counters are keyed by the connection's source address), and
``--users`` users with one key each, seeded through the services with fresh balances, so every
check is one key check of weight 1, falling due evenly over the interval the N routes' budgets
allow (a deployment in steady state, not a start with every user due at once). Routes:
``direct`` (127.0.0.1) plus N-1 local HTTP proxies (``sandbox.proxy.LocalProxy``), the k-th
opening its upstream connections from 127.0.0.(10+k) — another IP to the exchange, as a real
proxy's public IP would be.

For each N: a fresh database, one worker (``python -m bot`` through the shared harness) with
``EGRESS_PROXIES`` naming the proxies and ``EXCHANGE_WEIGHT_PER_MINUTE`` = ``--limit`` (so each
route budgets half of it, the production share), ``POLL_INTERVAL_SECONDS=10``: the users need
far more checks than the budgets allow, the poller stretches the interval to what all routes
together can carry, and the rate is the budgets' capacity. After ``--warmup`` seconds, checks
are counted over ``--window`` seconds (a whole budget window, 60 s: the limiter is a sliding log
over 60 s, so any shorter span can hold a burst or a gap).

Targets: every IP stays inside 50 % of its budget in every window of the exchange (the peak
weight the exchange counted per IP); checks a minute ≥ 90 % of N x limit / 2; linear in routes
(rate with N routes ≥ 0.9 x N x the rate with one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import BenchRun, new_keys, verdict
from sandbox.proxy import LocalProxy

DIRECT_IP = "127.0.0.1"


def proxy_ip(k: int) -> str:
    return f"127.0.0.{10 + k}"


async def measure(
    routes: int, args: argparse.Namespace, bench: BenchRun, keys: list[Any], telegram_url: str
) -> dict[str, Any]:
    from services.core.clock import utcnow

    proxies = [LocalProxy(proxy_ip(k)) for k in range(1, routes)]
    database_url = bench.sqlite_url(f"egress-{routes}")
    try:
        specs = {f"p{k}": {"url": await p.start(), "ip": p.source_ip} for k, p in enumerate(proxies, start=1)}
        # Steady state, as in a deployment that has run for a while: each user falls due once per
        # interval the routes' budgets allow, spread evenly over it (all due at once, every route
        # would first drain a burst that one lane's batch shares with the routes still in budget).
        interval_s = len(keys) / (routes * args.limit / 2) * 60
        await bench.seed(database_url, keys, now=utcnow(), spread_s=interval_s)
        worker = await bench.start_worker(
            database_url,
            telegram_url,  # no alerts here: every key stays valid
            weight_limit=args.limit,
            name=f"worker-{routes}",
            poll_interval_seconds=10,
            egress_ips=",".join([DIRECT_IP, *(p.source_ip for p in proxies)]),
            egress_proxies=json.dumps(specs),
        )
        await asyncio.sleep(args.warmup)
        bench.exchange.call("reset_peaks")
        a = await worker.stats()
        await asyncio.sleep(args.window)
        b = await worker.stats()
        peaks = bench.exchange.call("stats")["peaks"]
    finally:
        await bench.stop_workers()
        for proxy in proxies:
            await proxy.close()
    per_min = (b["checked"] - a["checked"]) / (b["t"] - a["t"]) * 60
    ips = [DIRECT_IP, *(proxy_ip(k) for k in range(1, routes))]
    return {
        "routes": routes,
        "per_min": per_min,
        "peaks": {ip: peaks.get(ip, 0) for ip in ips},
        "through_proxies": sum(p.connections for p in proxies),
        "cpu_ms": (b["cpu"] - a["cpu"]) * 1000 / max(b["checked"] - a["checked"], 1),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    counts = [int(n) for n in args.routes.split(",")]
    ips = (DIRECT_IP, *(proxy_ip(k) for k in range(1, max(counts))))
    keys = new_keys(args.users)
    async with BenchRun("keysentry-egress-") as bench:
        await bench.start_exchange(keys, args.limit, watch_ips=ips)
        telegram = bench.start_telegram([])
        results = []
        for routes in counts:
            r = await measure(routes, args, bench, keys, telegram.ready)
            print(f"  {routes} route(s): {r['per_min']:.0f} checks/min, peak weight per IP {r['peaks']}")
            results.append(r)
        return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    share = args.limit / 2
    base = results[0]["per_min"] / results[0]["routes"] or float("nan")
    print(
        f"\negress: {args.users} users; the local Binance allows {args.limit} weight/min per IP, we use 50 %"
    )
    print("  routes  checks/min  target (N x limit/2)  x one route  peak weight/IP in a window  CPU ms/check")
    for r in results:
        peak = max(r["peaks"].values())
        print(
            f"  {r['routes']:>6}  {r['per_min']:>10.0f}  {r['routes'] * share:>20.0f}"
            f"  {r['per_min'] / base:>11.2f}  {peak:>10} / {args.limit} per IP     {r['cpu_ms']:.3f}"
        )
    print("\ntargets")
    for r in results:
        n, peak = r["routes"], max(r["peaks"].values())
        rows = [
            (
                f"{n} route(s): every IP inside 50 % of its budget",
                f"peak {peak} <= {share:.0f}",
                peak <= share,
            ),
            (
                f"{n} route(s): checks/min >= 0.9 x N x limit/2",
                f"{r['per_min']:.0f} >= {0.9 * n * share:.0f}",
                r["per_min"] >= 0.9 * n * share,
            ),
            (
                f"{n} route(s): linear in routes (>= 0.9 x N x one route)",
                f"{r['per_min'] / base:.2f} x",
                r["per_min"] >= 0.9 * n * base,
            ),
        ]
        if n > 1:
            rows.append(
                (
                    f"{n} route(s): proxies used",
                    f"{r['through_proxies']} connections",
                    r["through_proxies"] > 0,
                )
            )
        for label, value, ok in rows:
            print(f"  {verdict(ok)}  {label:58s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default="1,2,4")
    parser.add_argument("--limit", type=int, default=600, help="weight per minute the exchange allows one IP")
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--window", type=float, default=60)
    args = parser.parse_args()
    began = time.perf_counter()
    results = asyncio.run(run(args))
    report(results, args)
    print(f"\nbench took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
