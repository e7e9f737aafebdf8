"""What one probe costs us, next to bare ccxt, with N connections on one local exchange.

    .venv/bin/python -m bench.probe_cost [binance|bybit|okx] [--connections 2000] [--rounds 3]

The local exchange runs in a child process, so ``time.process_time()`` in this process measures
only our side: ccxt signing, aiohttp, our limiter, classification and parsing. Printed:

* CPU ms per probe (key check only, and with balances), and probes per second (wall clock);
* memory per connection client (tracemalloc) next to a full ccxt instance per connection;
* the same signed call through one bare ccxt instance (its own session, no limiter): CPU ms per
  call and calls per second, and the ratio ours / bare.

``--gc-freeze`` moves everything alive after warm-up (templates, markets, the clients) out of the
cyclic garbage collector's reach (``gc.freeze()``), as a long-running worker can do after start-up;
without it a large share of the CPU goes to full collections over the long-lived heap.

Every probe must come back ``ok``: with 2000 keys in flight at once, a client signing with
another connection's key or secret would fail the server's signature check.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import multiprocessing
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import ccxt.async_support as ccxt

from sandbox.exchanges import LOCAL_EXCHANGES
from services.core.clock import SystemClock
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.exchanges.budget import BudgetRegistry
from services.exchanges.hub import ExchangeClient, ExchangeHub, rebase_urls
from services.exchanges.probes import probe

CONCURRENCY = 64  # in-flight requests, for ours and bare ccxt alike (= the hub's per-host pool)
CHECK_CALL = {
    "binance": "sapiGetAccountApiRestrictions",
    "bybit": "privateGetV5UserQueryApi",
    "okx": "privateGetAccountConfig",
}


def serve(exchange_id: str, connections: int, pipe: Connection) -> None:
    """Child process: the local exchange with ``connections`` keys and no weight limits."""

    async def main() -> None:
        server = LOCAL_EXCHANGES[exchange_id]()
        for pool in server.limits:
            server.limits[pool] = None
        # The bare-ccxt baseline signs with one key thousands of times a second; lift the
        # per-key caps (Bybit/OKX style) so it measures CPU rather than those limits.
        server.lift_key_limits()
        url = await server.start(port=0)
        keys = [server.add_key() for _ in range(connections)]
        pipe.send((url, [(k.api_key, k.secret, k.passphrase) for k in keys]))
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until the parent is done
        await server.close()

    asyncio.run(main())


async def timed(batch: Callable[[], Awaitable[list[Any]]], count: int, rounds: int) -> tuple[float, float]:
    """(median CPU ms per item, median items per second) over ``rounds`` batches."""
    cpu, rate = [], []
    for _ in range(rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await batch()
        cpu.append((time.process_time() - cpu0) * 1000 / count)
        rate.append(count / (time.perf_counter() - wall0))
    return statistics.median(cpu), statistics.median(rate)


async def bounded(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def run(exchange_id: str, connections: int, rounds: int, freeze: bool) -> None:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(exchange_id, connections, child), daemon=True)
    server.start()
    url, keys = parent.recv()
    credentials = [Credentials(*key) for key in keys]
    clock = SystemClock()
    hub = ExchangeHub(url_overrides={exchange_id: url}, budgets=BudgetRegistry({exchange_id: 1e12}))
    bare = getattr(ccxt, exchange_id)(
        {"apiKey": keys[0][0], "secret": keys[0][1], "password": keys[0][2] or "", "enableRateLimit": False}
    )
    bare.urls["api"] = rebase_urls(bare.urls["api"], url)
    try:
        await hub.client(exchange_id, credentials[0])  # builds the template outside the measurement
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        clients: list[ExchangeClient] = [await hub.client(exchange_id, c) for c in credentials]
        after = tracemalloc.take_snapshot()
        per_client = sum(s.size_diff for s in after.compare_to(before, "filename")) / connections
        full = [getattr(ccxt, exchange_id)({"enableRateLimit": False}) for _ in range(20)]
        per_instance = (
            sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(after, "filename")) / 20
        )
        tracemalloc.stop()
        del full

        async def probes(with_balances: bool) -> list[Any]:
            results = await bounded(
                [functools.partial(probe, c, clock=clock, with_balances=with_balances) for c in clients]
            )
            failed = [r for r in results if r.verdict is not Verdict.OK]
            assert not failed, failed[:3]
            return results

        async def bare_calls() -> list[Any]:
            method = getattr(bare, CHECK_CALL[exchange_id])
            return await bounded([method for _ in range(connections)])

        await probes(False)  # warm-up: connections pooled, code paths hot
        await bare_calls()
        if freeze:
            gc.collect()
            gc.freeze()
        check_cpu, check_rate = await timed(lambda: probes(False), connections, rounds)
        full_cpu, full_rate = await timed(lambda: probes(True), connections, rounds)
        bare_cpu, bare_rate = await timed(bare_calls, connections, rounds)

        frozen = ", gc frozen after warm-up" if freeze else ""
        print(f"{exchange_id}: {connections} connections, {rounds} rounds, {CONCURRENCY} in flight{frozen}")
        print(f"  probe (key check)       {check_cpu:6.3f} ms CPU/probe  {check_rate:8.0f} probes/s")
        print(
            f"  probe (+ balances)      {full_cpu:6.3f} ms CPU/probe  {full_rate:8.0f} probes/s (2 requests)"
        )
        print(f"  bare ccxt, same call    {bare_cpu:6.3f} ms CPU/call   {bare_rate:8.0f} calls/s")
        print(f"  ratio ours/bare (check) {check_cpu / bare_cpu:6.2f} x CPU")
        print(f"  memory per client       {per_client / 1024:6.1f} KiB", end="")
        print(f"  (a full ccxt instance: {per_instance / 1024:.0f} KiB)")
    finally:
        await bare.close()
        await hub.close()
        parent.send("done")
        server.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exchange", nargs="?", default="binance", choices=sorted(CHECK_CALL))
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gc-freeze", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.exchange, args.connections, args.rounds, args.gc_freeze))


if __name__ == "__main__":
    main()
