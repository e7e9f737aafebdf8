"""Shared set-up for the benches: local exchange, local Telegram and workers in child processes.

Every far end runs in a process of its own (``spawn``, so nothing of the parent leaks in), and
each process's CPU is read from ``/proc`` by the parent. That keeps the worker's own
``time.process_time()`` honest: the exchange fake and the Telegram fake never count against it.

* :class:`Child` — a process driven through a pipe (``call("stats")``), answering from its loop.
* :func:`exchange_main` — a local exchange with N keys, the weight limit of every pool raised,
  optional latency on private calls; folds its request log into status counts as it goes.
* :func:`telegram_main` — a :class:`~sandbox.telegram.LocalTelegram` with Telegram's flood
  limits on, recording when each ``sendMessage`` was delivered and every 429.
* :func:`worker_main` — the real :class:`bot.worker.Worker` (APScheduler ticking the real
  Poller and Sender) with one change from production wiring: the hub's
  ``BudgetRegistry(overrides=...)``, so the machine is measured rather than Binance's budget.
* :func:`bare_main` — the same signed call through one bare ccxt instance, many in flight.
* :func:`seed` — users and connections by bulk insert, credentials sealed with one vault.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CTX = multiprocessing.get_context("spawn")
TOKEN = "123456:BENCH-telegram-token"
CHECK_CALL = {
    "binance": "sapiGetAccountApiRestrictions",
    "bybit": "privateGetV5UserQueryApi",
    "okx": "privateGetAccountConfig",
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def postgres_cpu() -> float:
    """CPU of every process named ``postgres`` on this machine (server, backends, writers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


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
            try:
                self.call("stop")
            except (EOFError, BrokenPipeError, OSError):
                pass
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
) -> None:
    """The local exchange with ``keys``, every pool's weight limit set to ``weight_limit``."""
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

        def fold() -> None:
            for record in server.requests:
                statuses[record.status] += 1
            server.requests.clear()

        async def folding() -> None:
            while True:
                await asyncio.sleep(1)
                fold()

        task = asyncio.create_task(folding())

        def revoke_all() -> float:
            for api_key in server.keys:
                server.set_key_state(api_key, "revoked")
            return time.time()

        def stats() -> dict[str, Any]:
            fold()
            return {"statuses": dict(statuses), "requests": sum(statuses.values())}

        async def stop() -> None:
            task.cancel()
            await server.close()

        pipe.send(url)
        await _serve_commands(pipe, {"revoke_all": revoke_all, "stats": stats, "stop": stop})

    asyncio.run(main())


def new_keys(count: int) -> list[tuple[str, str, str | None]]:
    """Binance-shaped keys (64 alphanumerics) made quickly in the parent."""
    return [(secrets.token_hex(32), secrets.token_hex(32), None) for _ in range(count)]


# ------------------------------------------------------------------------------------------ telegram


def telegram_main(pipe: Pipe, user_ids: list[int]) -> None:
    """The local Telegram with flood limits on; records every sendMessage outcome."""
    _quiet_logging()
    from sandbox.telegram import LocalTelegram, RecordedRequest

    class RecordingTelegram(LocalTelegram):
        def __init__(self) -> None:
            super().__init__(token=TOKEN, rate_limits=True)
            self.delivered: list[tuple[int, float, bool]] = []  # chat, when, mentions "revoked"
            self.outcomes: Counter[int] = Counter()

        def _record(self, recorded: RecordedRequest) -> None:
            if recorded.method == "sendMessage":
                self.outcomes[recorded.status] += 1
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
            }

        pipe.send(url)
        await _serve_commands(pipe, {"stats": stats, "stop": tg.close})

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ worker


def worker_main(pipe: Pipe, config: dict[str, Any]) -> None:
    """The real Worker (scheduler, Poller, Sender) wired as ``bot.app.build_context`` does, except
    for the exchange budget override. Commands: start, stats, gc_freeze, stop."""
    _quiet_logging()
    if config.get("uvloop"):
        import uvloop

        uvloop.install()
    from bot.app import build_bot
    from bot.context import AppContext
    from bot.i18n import build_i18n
    from bot.settings import Settings
    from bot.worker import Worker
    from services.budget import BudgetRegistry
    from services.clock import SystemClock
    from services.db import create_engine, session_factory
    from services.deals_store import ThreeCommasAccess
    from services.exchanges import ExchangeHub
    from services.vault import Credentials, Vault

    async def main() -> None:
        settings = Settings(
            _env_file=None,
            bot_token=TOKEN,
            telegram_api_url=config["telegram_url"],
            database_url=config["database_url"],
            vault_key=[config["vault_key"]],
            poll_interval_seconds=config["poll_interval_s"],
            exchange_url_overrides=config["exchange_urls"],
        )
        clock = SystemClock()
        engine = create_engine(settings.database_url)
        app = AppContext(
            settings=settings,
            clock=clock,
            engine=engine,
            sessions=session_factory(engine),
            vault=Vault(settings.vault_key),
            i18n=build_i18n(),
            hub=ExchangeHub(
                url_overrides=settings.exchange_url_overrides,
                clock=clock,
                budgets=BudgetRegistry(overrides=config["budget_per_minute"]),
            ),
            threecommas=ThreeCommasAccess(settings.threecommas_api_url),
        )
        bot = build_bot(settings)
        worker = Worker(app, bot)
        for name, value in config.get("poller", {}).items():
            setattr(worker.poller.config, name, value)
        rss_context = rss_bytes()
        assert app.hub is not None
        for exchange_id in config["exchange_urls"]:
            # The shared template (and its session) is a fixed cost, built before the count starts.
            await app.hub.client(exchange_id, Credentials("x" * 64, "y" * 64))
        rss_ready = rss_bytes()

        def stats() -> dict[str, Any]:
            s = worker.sender.stats
            return {
                "t": time.time(),
                "checked": worker.poller.checked,
                "sent": s.sent,
                "telegram_429": s.rate_limited,
                "send_retried": s.retried,
                "send_failed": s.failed,
                "cpu": time.process_time(),
                "rss": rss_bytes(),
            }

        def freeze() -> None:
            gc.collect()
            gc.freeze()

        async def stop() -> None:
            await worker.stop()
            await bot.session.close()
            assert app.hub is not None
            await app.hub.close()
            await engine.dispose()

        pipe.send({"rss_context": rss_context, "rss_ready": rss_ready, "id": worker.ident})
        await _serve_commands(pipe, {"start": worker.start, "stats": stats, "gc_freeze": freeze, "stop": stop})

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ bare ccxt


def bare_main(
    pipe: Pipe, exchange_id: str, url: str, key: tuple[str, str, str | None], in_flight: int, seconds: float
) -> None:
    """One bare ccxt instance (own session, no limiter, no bot) making the probe's signed call with
    ``in_flight`` requests outstanding for ``seconds``. Replies (calls/s, CPU ms per call)."""
    import aiohttp
    import ccxt.async_support as ccxt

    from services.exchanges import rebase_urls

    async def main() -> tuple[float, float]:
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

        try:
            for duration, measured in ((2.0, False), (seconds, True)):  # warm-up, then the count
                counts = [0]
                cpu0, wall0 = time.process_time(), time.perf_counter()
                deadline = wall0 + duration
                await asyncio.gather(*(loop(deadline, counts) for _ in range(in_flight)))
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            return counts[0] / wall, cpu * 1000 / counts[0]
        finally:
            exchange.session = None
            await session.close()

    pipe.send("ready")
    pipe.recv()
    pipe.send(asyncio.run(main()))


def bare_ccxt(
    exchange_id: str, url: str, key: tuple[str, str, str | None], in_flight: int, seconds: float
) -> tuple[float, float, float]:
    """Run :func:`bare_main` in a fresh process; returns (calls/s, CPU ms/call, process CPU s)."""
    child = Child(bare_main, exchange_id, url, key, in_flight, seconds, name="bare-ccxt")
    child.pipe.send("go")
    rate, cpu_ms = child.pipe.recv()
    total = child.cpu()
    child.process.join(10)
    return rate, cpu_ms, total


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
    chunk: int = 5000,
) -> list[int]:
    """One user with one connection per key, by bulk insert; returns the user ids.

    Connections look as the link wizard leaves them: key info and balances stored, balances
    fresh (so checks are key checks, as in steady state), all due now.
    """
    from sqlalchemy import insert

    from services.db import create_engine, run_migrations, session_factory
    from services.models import Connection, User
    from services.vault import Credentials, Vault, mask

    vault = Vault([vault_key])
    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
        sessions = session_factory(engine)
        user_ids = [first_user_id + i for i in range(len(keys))]
        for start in range(0, len(keys), chunk):
            part = range(start, min(start + chunk, len(keys)))
            users = [
                {"id": user_ids[i], "language": "en", "blocked": False, "created_at": now} for i in part
            ]
            connections = [
                {
                    "user_id": user_ids[i],
                    "kind": "exchange",
                    "exchange": exchange_id,
                    "label": "Main",
                    "credentials": vault.seal(Credentials(*keys[i])),
                    "key_hint": mask(keys[i][0]),
                    "state": "ok",
                    "verdict": "ok",
                    "verdict_detail": "",
                    "last_check_at": now,
                    "last_ok_at": now,
                    "key_info": key_info,
                    "balances": {"USDT": {"free": 1000.0, "total": 1000.0}},
                    "balances_at": now,
                    "check_state": {},
                    "next_poll_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in part
            ]
            async with sessions.begin() as session:
                await session.execute(insert(User), users)
                await session.execute(insert(Connection), connections)
        return user_ids
    finally:
        await engine.dispose()


async def probe_key_info(exchange_id: str, url: str, key: tuple[str, str, str | None]) -> dict[str, Any]:
    """What the link wizard stores for a healthy key: the key info of one real probe."""
    from services.budget import BudgetRegistry
    from services.clock import SystemClock
    from services.exchanges import ExchangeHub
    from services.probes import probe
    from services.vault import Credentials
    from services.verdicts import Verdict

    hub = ExchangeHub(url_overrides={exchange_id: url}, budgets=BudgetRegistry({exchange_id: 1e9}))
    try:
        result = await probe(
            await hub.client(exchange_id, Credentials(*key)), clock=SystemClock(), with_key_info=True
        )
    finally:
        await hub.close()
    assert result.verdict is Verdict.OK and result.key_info is not None, result
    return result.key_info.to_json()


# ------------------------------------------------------------------------------------------ sampling


class Sampler:
    """Timeline of worker counters, for a steady-state window that skips ramp-up and tail."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def add(self, sample: dict[str, Any]) -> None:
        self.samples.append(sample)

    def window(self, low: float, high: float, key: str = "checked") -> tuple[dict[str, Any], dict[str, Any]]:
        """First sample at or above ``low`` and last one at or below ``high`` of ``key``."""
        start = next(s for s in self.samples if s[key] >= low)
        end = [s for s in self.samples if s[key] <= high][-1]
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
    "Child",
    "Sampler",
    "bare_ccxt",
    "cpu_seconds",
    "exchange_main",
    "new_keys",
    "pct",
    "postgres_cpu",
    "probe_key_info",
    "rss_bytes",
    "seed",
    "stop_all",
    "telegram_main",
    "timedelta",
    "utc",
    "verdict",
    "wait_until",
    "worker_main",
]
