"""Shared set-up for the benches: the far ends in child processes, workers as real processes.

Every far end runs in a process of its own (``spawn``, so nothing of the parent leaks in), and
each process's CPU is read from ``/proc`` by the parent, so the worker's CPU per check is its
own: the exchange fake and the Telegram fake never count against it.

* :class:`Child` — a process driven through a pipe (``call("stats")``), answering from its loop.
* :func:`exchange_main` — a local exchange with N keys and a chosen weight limit per pool and
  IP, optional latency on private calls; folds its request log into status counts as it goes.
* :func:`telegram_main` — a :class:`~sandbox.telegram.LocalTelegram` with Telegram's flood
  limits on, recording when each ``sendMessage`` was delivered and every 429.
* :class:`BenchWorker` — ``python -m bot`` started by the harness the tests use
  (:mod:`sandbox.processes`), configured only through its environment; the raised exchange
  budget is the operator setting ``EXCHANGE_WEIGHT_PER_MINUTE``. Counters come from its
  ``/metrics``, CPU and memory from ``/proc``.
* :func:`bare_main` — the same signed call through one bare ccxt instance, many in flight.
* :func:`seed` — users and connections through the services (:func:`sandbox.processes.seed_users`).
* :class:`BenchRun` — what every bench sets up the same way: the local Binance probed once, the
  local Telegram, scratch databases, workers on the local Binance's budget; all of it stopped and
  removed when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from sandbox.processes import (
    WorkerProcess,
    cpu_seconds,
    create_pg_database,
    drop_pg_database,
    metric_sum,
    seed_users,
    start_worker,
    worker_env,
)

CTX = multiprocessing.get_context("spawn")
TOKEN = "123456:BENCH-telegram-token"
EXCHANGE = "binance"  # every bench runs against the local Binance (``new_keys`` makes its keys)
SAPI_POOL = "binance_sapi"  # the key check's own IP pool (services/exchanges/budget.py pool_of)
CHECK_CALL = {
    "binance": "sapiGetAccountApiRestrictions",
    "bybit": "privateGetV5UserQueryApi",
    "okx": "privateGetAccountConfig",
}
CORES = os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ /proc


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# ------------------------------------------------------------------------------------------ children


class Child:
    """A ``spawn``ed process that answers commands sent over a pipe."""

    def __init__(self, target: Callable[..., None], *args: Any, name: str) -> None:
        self.pipe, child = CTX.Pipe()
        self.process = CTX.Process(target=target, args=(child, *args), name=name, daemon=True)
        self.process.start()
        self.ready: Any = self.pipe.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def call(self, command: str, *args: Any) -> Any:
        self.pipe.send((command, args))
        reply = self.pipe.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30) -> None:
        if self.process.is_alive():
            with contextlib.suppress(EOFError, BrokenPipeError, OSError):
                self.call("stop")
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()


async def _serve_commands(pipe: Pipe, handlers: dict[str, Callable[..., Any]]) -> None:
    """Answer commands until ``stop``; a handler may be sync or async."""
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, pipe.recv)
        try:
            result = handlers[command](*args)
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as error:  # report to the parent instead of dying silently
            result = error
        pipe.send(result)
        if command == "stop":
            return


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(processName)s %(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------ exchange


def exchange_main(
    pipe: Pipe,
    exchange_id: str,
    keys: list[tuple[str, str, str | None]],
    latency_ms: int,
    weight_limit: int,
    watch_ips: tuple[str, ...] = (),
) -> None:
    """The local exchange with ``keys``, every pool's weight limit set to ``weight_limit`` per
    caller IP; for each of ``watch_ips`` the most weight it used in any window is tracked."""
    _quiet_logging()
    from sandbox.exchanges import LOCAL_EXCHANGES

    async def main() -> None:
        server = LOCAL_EXCHANGES[exchange_id]()
        # ``weight_limit`` sets only the primary pool; the probe's key check is in another
        # (Binance /sapi), so every pool gets the raised limit.
        for pool in server.limits:
            server.limits[pool] = weight_limit
        url = await server.start(port=0)
        for api_key, secret, passphrase in keys:
            server.add_key(api_key, secret, passphrase)
        if latency_ms:
            server.inject("latency", latency_ms=latency_ms, private_only=True)
        statuses: Counter[int] = Counter()
        peaks: Counter[str] = Counter()

        def fold() -> None:
            for record in server.requests:
                statuses[record.status] += 1
            server.requests.clear()
            for ip in watch_ips:
                used = max(server.used_weight_in(pool, ip) for pool in server.limits)
                peaks[ip] = max(peaks[ip], used)

        async def folding() -> None:
            while True:
                await asyncio.sleep(1)
                fold()

        task = asyncio.create_task(folding())

        def revoke_all() -> float:
            for api_key in server.keys:
                server.set_key_state(api_key, "revoked")
            return time.time()

        def revoke(api_keys: list[str]) -> float:
            for api_key in api_keys:
                server.set_key_state(api_key, "revoked")
            return time.time()

        def stats() -> dict[str, Any]:
            fold()
            return {"statuses": dict(statuses), "requests": sum(statuses.values()), "peaks": dict(peaks)}

        async def stop() -> None:
            task.cancel()
            await server.close()

        pipe.send(url)

        def reset_peaks() -> None:
            peaks.clear()

        await _serve_commands(
            pipe,
            {
                "revoke_all": revoke_all,
                "revoke": revoke,
                "stats": stats,
                "reset_peaks": reset_peaks,
                "stop": stop,
            },
        )

    asyncio.run(main())


def new_keys(count: int) -> list[tuple[str, str, str | None]]:
    """Binance-shaped keys (64 alphanumerics) made quickly in the parent."""
    return [(secrets.token_hex(32), secrets.token_hex(32), None) for _ in range(count)]


# ------------------------------------------------------------------------------------------ telegram


def telegram_main(pipe: Pipe, user_ids: list[int], latency_ms: int = 0) -> None:
    """The local Telegram with flood limits on; records every sendMessage outcome.

    ``latency_ms`` delays every answer (half before the request is handled, half after), like the
    round trip from a server to api.telegram.org; the local server otherwise answers in ~1 ms.
    """
    _quiet_logging()
    from aiohttp import web

    from sandbox.telegram import LocalTelegram, RecordedRequest

    class RecordingTelegram(LocalTelegram):
        def __init__(self) -> None:
            super().__init__(token=TOKEN, rate_limits=True)
            self.delivered: list[tuple[int, float, bool]] = []  # chat, when, mentions "revoked"
            self.outcomes: Counter[int] = Counter()
            self.refused: list[tuple[float, str]] = []  # when, why (429s and other errors)

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            if latency_ms:
                await asyncio.sleep(latency_ms / 2000)
            response = await super()._handle(request)
            if latency_ms:
                await asyncio.sleep(latency_ms / 2000)
            return response

        def _record(self, recorded: RecordedRequest) -> None:
            if recorded.method == "sendMessage":
                self.outcomes[recorded.status] += 1
                if recorded.status != 200:
                    chat = recorded.params.get("chat_id", "?")
                    self.refused.append(
                        (time.time(), f"{recorded.status} chat {chat}: {recorded.description}")
                    )
                if recorded.status == 200:
                    text = recorded.params.get("text", "")
                    self.delivered.append((int(recorded.params["chat_id"]), time.time(), "revoked" in text))
            # The base class keeps every request for assertions; a bench only needs the above.
            self._signal.notify()

    async def main() -> None:
        tg = RecordingTelegram()
        url = await tg.start()
        for user_id in user_ids:
            tg.add_user(user_id)

        def stats() -> dict[str, Any]:
            per_user = Counter(chat for chat, _, _ in tg.delivered)
            times = [when for _, when, _ in tg.delivered]
            return {
                "delivered": len(tg.delivered),
                "users_alerted": len(per_user),
                "users_without": len(set(user_ids) - set(per_user)),
                "users_with_more": sum(1 for n in per_user.values() if n > 1),
                "not_revoked_text": sum(1 for _, _, revoked in tg.delivered if not revoked),
                "first": min(times, default=None),
                "last": max(times, default=None),
                "outcomes": dict(tg.outcomes),
                "peak_per_second": _peak(sorted(times), 1.0),
                "refused": tg.refused[:5],
                "refused_after": [_peak_before(sorted(times), when) for when, _ in tg.refused[:5]],
            }

        def last_among(chats: list[int]) -> float | None:
            wanted = set(chats)
            return max((when for chat, when, _ in tg.delivered if chat in wanted), default=None)

        def first_alerts() -> dict[int, float]:
            """When each chat first received a message that says "revoked"."""
            first: dict[int, float] = {}
            for chat, when, revoked in tg.delivered:
                if revoked:
                    first.setdefault(chat, when)
            return first

        pipe.send(url)
        commands: dict[str, Callable[..., Any]] = {
            "stats": stats,
            "last_among": last_among,
            "first_alerts": first_alerts,
            "stop": tg.close,
        }
        await _serve_commands(pipe, commands)

    asyncio.run(main())


def _peak(times: list[float], span: float) -> int:
    """Most events within any ``span`` seconds (``times`` sorted)."""
    best, start = 0, 0
    for end, when in enumerate(times):
        while times[start] <= when - span:
            start += 1
        best = max(best, end - start + 1)
    return best


def _peak_before(times: list[float], moment: float) -> int:
    """Events in the second before ``moment``."""
    return sum(1 for when in times if moment - 1.0 < when <= moment)


# ------------------------------------------------------------------------------------------ worker


@dataclass
class BenchWorker:
    """One ``python -m bot`` process of the bench (role ``all`` on SQLite, ``worker`` on PostgreSQL)."""

    process: WorkerProcess

    @classmethod
    async def start(
        cls,
        tmp: Path,
        *,
        name: str,
        telegram_url: str,
        database_url: str,
        vault_key: str,
        exchange_urls: Mapping[str, str],
        weight_per_minute: Mapping[str, float],
        **settings: Any,
    ) -> BenchWorker:
        env = worker_env(
            token=TOKEN,
            telegram_url=telegram_url,
            database_url=database_url,
            vault_key=vault_key,
            exchange_urls=exchange_urls,
            home=tmp,
            exchange_weight_per_minute=dict(weight_per_minute),
            **settings,
        )
        role = "all" if database_url.startswith("sqlite") else "worker"
        process = await start_worker(name, env, tmp / f"{name}.log", role=role)
        await process.wait_ready(180)  # a shared, busy machine can take a minute to start one
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stats(self) -> dict[str, Any]:
        metrics = await self.process.metrics()
        return {
            "t": time.time(),
            "checked": metric_sum(metrics, "keysentry_checks_total"),
            "sent": metric_sum(metrics, "keysentry_messages_sent_total"),
            "telegram_429": metric_sum(metrics, "keysentry_telegram_429_total"),
            "cpu": self.process.cpu(),
            "rss": self.process.rss(),
            "skipped_sends": self.process.skipped_ticks("Worker.send"),
            "skipped_polls": self.process.skipped_ticks("Worker.poll"),
        }

    async def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(TimeoutError):
            await self.process.wait_exit(30)
        self.process.kill()


# ------------------------------------------------------------------------------------------ bare ccxt


def bare_main(
    pipe: Pipe,
    exchange_id: str,
    url: str,
    key: tuple[str, str, str | None],
    in_flight: int,
    seconds: float,
    rounds: int,
) -> None:
    """One bare ccxt instance (own session, no limiter, no bot) making the probe's signed call with
    ``in_flight`` requests outstanding: 2 s of warm-up, then ``rounds`` rounds over ``seconds``.
    Replies ``[(calls/s, CPU ms per call), ...]`` per round."""
    import aiohttp
    import ccxt.async_support as ccxt

    from services.exchanges.hub import rebase_urls

    async def main() -> list[tuple[float, float]]:
        # ccxt's own connector allows 100 connections; a larger pool lets the CPU be the limit.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight))
        exchange = getattr(ccxt, exchange_id)(
            {"apiKey": key[0], "secret": key[1], "password": key[2] or "", "enableRateLimit": False}
        )
        exchange.session = session
        exchange.urls["api"] = rebase_urls(exchange.urls["api"], url)
        method = getattr(exchange, CHECK_CALL[exchange_id])

        async def loop(deadline: float, counts: list[int]) -> None:
            while time.perf_counter() < deadline:
                await method()
                counts[0] += 1

        results = []
        try:
            for duration in (2.0, *[seconds / rounds] * rounds):
                counts = [0]
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(loop(wall0 + duration, counts) for _ in range(in_flight)))
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                results.append((counts[0] / wall, cpu * 1000 / counts[0]))
            return results[1:]
        finally:
            exchange.session = None
            await session.close()

    pipe.send("ready")
    pipe.recv()
    pipe.send(asyncio.run(main()))


def bare_ccxt(
    exchange_id: str,
    url: str,
    key: tuple[str, str, str | None],
    in_flight: int,
    seconds: float,
    rounds: int = 4,
    others: Iterable[Child] = (),
) -> dict[str, Any]:
    """Run :func:`bare_main` in a fresh process. The limit is the best round (other load on the
    machine can only slow a round down); ``busy`` is the machine's CPU use meanwhile, in cores,
    and ``other`` what processes outside this bench used."""
    child = Child(bare_main, exchange_id, url, key, in_flight, seconds, rounds, name="bare-ccxt")
    watched = list(others)
    before = [c.cpu() for c in watched], child.cpu(), machine_busy(), time.perf_counter()
    child.pipe.send("go")
    per_round = child.pipe.recv()
    after = [c.cpu() for c in watched], child.cpu(), machine_busy(), time.perf_counter()
    child.process.join(10)
    span = after[3] - before[3]
    cores = (after[2][0] - before[2][0]) / (after[2][1] - before[2][1]) * (os.cpu_count() or 1)
    ours = sum(a - b for a, b in zip(after[0], before[0], strict=True)) + after[1] - before[1]
    rate, cpu_ms = max(per_round)
    return {
        "rate": rate,
        "cpu_ms": cpu_ms,
        "rounds": [r for r, _ in per_round],
        "busy": cores,
        "other": max(cores - ours / span, 0.0),
        "watched": [(a - b) / span for a, b in zip(after[0], before[0], strict=True)],
    }


# ------------------------------------------------------------------------------------------ database


async def seed(
    database_url: str,
    vault_key: str,
    exchange_id: str,
    keys: list[tuple[str, str, str | None]],
    *,
    now: datetime,
    key_info: dict[str, Any],
    first_user_id: int = 1_000_001,
    prepare: Callable[[int, Any], None] | None = None,
    spread_s: float = 0.0,
) -> list[int]:
    """One user with one connection per key, stored as the link wizard leaves them (key info of
    a real probe, fresh balances), all due now or, with ``spread_s``, evenly over that many
    seconds; returns the user ids."""
    from services.core.vault import Credentials, Vault
    from services.storage.db import create_engine, run_migrations, session_factory

    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
        seeded = await seed_users(
            session_factory(engine),
            Vault([vault_key]),
            exchange_id,
            [Credentials(*key) for key in keys],
            now=now,
            first_user=first_user_id,
            key_info=key_info,
            prepare=prepare,
            spread_s=spread_s,
        )
        return [item.user_id for item in seeded]
    finally:
        await engine.dispose()


async def probe_key_info(exchange_id: str, url: str, key: tuple[str, str, str | None]) -> dict[str, Any]:
    """What the link wizard stores for a healthy key: the key info of one real probe."""
    from services.core.clock import SystemClock
    from services.core.vault import Credentials
    from services.core.verdicts import Verdict
    from services.exchanges.budget import BudgetRegistry
    from services.exchanges.hub import ExchangeHub
    from services.exchanges.probes import probe

    hub = ExchangeHub(url_overrides={exchange_id: url}, budgets=BudgetRegistry({exchange_id: 1e9}))
    try:
        result = await probe(
            await hub.client(exchange_id, Credentials(*key)), clock=SystemClock(), with_key_info=True
        )
    finally:
        await hub.close()
    assert result.verdict is Verdict.OK and result.key_info is not None, result
    return result.key_info.to_json()


# ------------------------------------------------------------------------------------------ one run


Key = tuple[str, str, str | None]


class BenchRun:
    """One run of a bench: its scratch folder, the local Binance and Telegram in their own
    processes, its databases and its workers, all configured alike. Leaving ``async with``
    stops every process it started, drops its PostgreSQL database and removes the folder."""

    def __init__(self, prefix: str) -> None:
        from services.core.vault import generate_key

        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.vault_key = generate_key()
        self.children: list[Child] = []
        self.workers: list[BenchWorker] = []
        self.pg_url: str | None = None
        self._exchange: Child | None = None
        self._key_info: dict[str, Any] | None = None

    async def __aenter__(self) -> BenchRun:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_workers()
        stop_all(self.children)
        if self.pg_url:
            await drop_pg_database(self.pg_url)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def exchange(self) -> Child:
        assert self._exchange is not None, "start_exchange first"
        return self._exchange

    async def start_exchange(
        self, keys: list[Key], weight_limit: int, *, latency_ms: int = 0, watch_ips: tuple[str, ...] = ()
    ) -> Child:
        """The local Binance with ``keys`` (see :func:`exchange_main`); the first key is probed
        once, as the link wizard does, for the key info :meth:`seed` stores."""
        self._exchange = Child(
            exchange_main, EXCHANGE, keys, latency_ms, weight_limit, watch_ips, name="exchange"
        )
        self.children.append(self._exchange)
        self._key_info = await probe_key_info(EXCHANGE, self._exchange.ready, keys[0])
        return self._exchange

    def start_telegram(self, user_ids: list[int], latency_ms: int = 0) -> Child:
        """The local Telegram (see :func:`telegram_main`) knowing ``user_ids``."""
        telegram = Child(telegram_main, user_ids, latency_ms, name="telegram")
        self.children.append(telegram)
        return telegram

    def sqlite_url(self, name: str = "bench") -> str:
        return f"sqlite+aiosqlite:///{self.tmp / f'{name}.db'}"

    async def postgres_url(self) -> str:
        """A fresh database on the test server, dropped when the run ends."""
        self.pg_url = await create_pg_database()
        return self.pg_url

    async def seed(
        self,
        database_url: str,
        keys: list[Key],
        *,
        now: datetime,
        prepare: Callable[[int, Any], None] | None = None,
        spread_s: float = 0.0,
    ) -> list[int]:
        """:func:`seed` with the key info of the probe and this run's vault key."""
        assert self._key_info is not None, "start_exchange first"
        return await seed(
            database_url,
            self.vault_key,
            EXCHANGE,
            keys,
            now=now,
            key_info=self._key_info,
            prepare=prepare,
            spread_s=spread_s,
        )

    async def start_worker(
        self,
        database_url: str,
        telegram_url: str,
        *,
        weight_limit: float,
        name: str = "worker",
        canary: Key | None = None,
        **settings: Any,
    ) -> BenchWorker:
        """A worker on the local Binance, ``weight_limit`` per minute in its general pool and in
        the key check's own one; ``canary`` becomes the operator's CANARY_KEYS for Binance."""
        if canary is not None:
            settings["canary_keys"] = {EXCHANGE: {"api_key": canary[0], "secret": canary[1]}}
        worker = await BenchWorker.start(
            self.tmp,
            name=name,
            telegram_url=telegram_url,
            database_url=database_url,
            vault_key=self.vault_key,
            exchange_urls={EXCHANGE: self.exchange.ready},
            weight_per_minute={EXCHANGE: weight_limit, SAPI_POOL: weight_limit},
            **settings,
        )
        self.workers.append(worker)
        return worker

    async def stop_workers(self) -> None:
        for worker in self.workers:
            await worker.stop()
        self.workers.clear()


# ------------------------------------------------------------------------------------------ sampling


class Sampler:
    """Timeline of worker counters, for a steady-state window that skips ramp-up and tail."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def add(self, sample: dict[str, Any]) -> None:
        self.samples.append(sample)

    def window(self, low: float, high: float, key: str = "checked") -> tuple[dict[str, Any], dict[str, Any]]:
        """First sample at or above ``low`` and last one at or below ``high`` of ``key``; the
        whole timeline when that leaves less than two samples (a short run)."""
        start = next(s for s in self.samples if s[key] >= low)
        end = [s for s in self.samples if s[key] <= high][-1]
        if end["t"] <= start["t"]:
            start, end = self.samples[0], next(s for s in self.samples if s[key] >= high)
        return start, end


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "  n/a"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def stop_all(children: Iterable[Child | None]) -> None:
    for child in children:
        if child is not None:
            child.stop()


def utc(ts: float) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(ts, UTC)


__all__ = [
    "CORES",
    "EXCHANGE",
    "BenchRun",
    "BenchWorker",
    "Child",
    "Sampler",
    "bare_ccxt",
    "cpu_seconds",
    "exchange_main",
    "new_keys",
    "pct",
    "probe_key_info",
    "seed",
    "stop_all",
    "telegram_main",
    "utc",
    "verdict",
    "wait_until",
]
