"""Real worker processes for multi-process tests: ``python -m bot worker`` against PostgreSQL.

The test process hosts the far ends (a :class:`LocalTelegram` and a :class:`LocalBinance`), creates
and migrates a fresh PostgreSQL database, seeds users and connections through the services, and
starts workers as separate OS processes configured only through their environment, exactly as
``docs/deployment.md`` runs them. Each worker's log goes to a file; its ``/metrics`` port (it
listens on ``WEB_PORT=0``) is read from the log.

Everything is torn down in ``finally``: every process still alive is SIGKILLed (and, on Linux,
the kernel kills them too if the test process itself dies), the servers close, the database is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sandbox.exchanges import LocalBinance, LocalExchange, RequestRecord
from sandbox.telegram import LocalTelegram, RateLimits
from services.core.clock import utcnow
from services.core.vault import Credentials, Vault, generate_key
from services.storage.connections import new_connection
from services.storage.db import create_engine, run_migrations, session_factory
from services.storage.models import Connection
from services.storage.users import get_or_create_user
from tests.conftest import create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:WORKERS-PG-TOKEN"
# The probe's key check on Binance (services/exchanges/probes.py, recipe "binance"):
# exactly one per health check of a connection, whatever the verdict.
KEY_CHECK_PATH = "/sapi/v1/account/apiRestrictions"
_LISTENING = re.compile(r"http listening on [^\s:]+:(\d+)")
_STARTED = re.compile(r"worker (\S+) started")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL the worker if the test process dies, so no orphan keeps polling."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class WorkerProcess:
    """One ``python -m bot worker`` OS process."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    started_at: float
    port: int | None = None
    ident: str | None = None  # the worker id it writes into lease_owner / claimed_by (host:pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the log says the HTTP side listens and the worker's scheduler started."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            port, started = _LISTENING.search(log), _STARTED.search(log)
            if port and started:
                self.port, self.ident = int(port.group(1)), started.group(1)
                return
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.returncode} before it was ready:\n{log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def started_phase(self) -> float:
        """Fraction of a second at which the worker logged "worker … started" (its tick phase)."""
        for line in self.log().splitlines():
            if _STARTED.search(line):
                return int(line[20:23]) / 1000  # "2026-11-25 19:55:09,370 INFO ..."
        raise AssertionError(f"{self.name} has not started")

    async def metrics(self) -> str:
        assert self.port is not None, "wait_ready() first"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics", timeout=aiohttp.ClientTimeout(5)) as reply,
        ):
            reply.raise_for_status()
            return await reply.text()

    async def ready(self) -> bool:
        """``/readyz``: the process reaches the database through its pool and migrations are current."""
        assert self.port is not None, "wait_ready() first"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/readyz", timeout=aiohttp.ClientTimeout(5)) as reply,
        ):
            return reply.status == 200

    async def checks_done(self) -> int:
        """``keysentry_checks_total`` summed over exchanges and verdicts: this process's checks."""
        total = 0.0
        for line in (await self.metrics()).splitlines():
            if line.startswith("keysentry_checks_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def kill(self) -> None:
        """``kill -9``: no handler runs, leases and claims stay behind."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


@dataclass(frozen=True)
class Seeded:
    user_id: int
    connection_id: int
    api_key: str


@dataclass
class Cluster:
    """A fresh database, the local far ends, and the worker processes started against them."""

    tmp_path: Path
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault_key: str
    tg: LocalTelegram
    exchange: LocalExchange
    workers: list[WorkerProcess] = field(default_factory=list)
    seeded: list[Seeded] = field(default_factory=list)

    @property
    def database_name(self) -> str:
        return self.engine.url.database or ""

    # ---- population -------------------------------------------------------------------------------

    async def seed(self, count: int, *, first_user: int = 1001, spread_s: float = 0.0) -> list[Seeded]:
        """``count`` users with one healthy Binance key each, due for a check right away or, with
        ``spread_s``, evenly over the next ``spread_s`` seconds (as in a cluster that has been
        running for a while, instead of one herd that every worker claims at once).

        ``balances_at`` is set to now, so checks are only the key check (weight 1) for the next
        30 minutes, as in steady state; otherwise the first round would be 20x heavier and the
        local exchange's IP weight limit, not the workers, would decide the timing.
        """
        vault = Vault([self.vault_key])
        now = utcnow()
        rows: list[tuple[int, Connection, str]] = []
        async with self.sessions.begin() as session:
            for index, user_id in enumerate(range(first_user, first_user + count)):
                key = self.exchange.add_key()
                self.tg.add_user(user_id)
                await get_or_create_user(session, user_id, "en", now)
                connection = new_connection(
                    vault,
                    user_id=user_id,
                    exchange="binance",
                    label="Main",
                    credentials=Credentials(key.api_key, key.secret, key.passphrase),
                    now=now,
                )
                connection.balances_at = now
                connection.next_poll_at = now + timedelta(seconds=spread_s * index / count)
                session.add(connection)
                rows.append((user_id, connection, key.api_key))
        seeded = [Seeded(user_id, connection.id, api_key) for user_id, connection, api_key in rows]
        self.seeded += seeded
        return seeded

    def revoke(self, keys: Iterable[Seeded]) -> None:
        for item in keys:
            self.exchange.set_key_state(item.api_key, "revoked")

    # ---- processes --------------------------------------------------------------------------------

    def env(self, **overrides: Any) -> dict[str, str]:
        """A clean environment: only what the worker needs, nothing inherited that could change it."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.tmp_path)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.tg.url,
            "DATABASE_URL": self.database_url,
            "VAULT_KEY": self.vault_key,
            "POLL_INTERVAL_SECONDS": "10",
            "LEASE_SECONDS": "5",
            "EXCHANGE_URL_OVERRIDES": f'{{"binance": "{self.exchange.url}"}}',
            "WEB_PORT": "0",
            "LOG_LEVEL": "INFO",
        }
        env.update({name.upper(): str(value) for name, value in overrides.items()})
        return env

    async def start_worker(self, **env: Any) -> WorkerProcess:
        name = f"worker{len(self.workers) + 1}"
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "worker",
                env=self.env(**env),
                cwd=self.tmp_path,  # no stray .env is read
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        worker = WorkerProcess(name, proc, log_path, time.monotonic())
        self.workers.append(worker)
        return worker

    async def start_workers(self, count: int, **env: Any) -> list[WorkerProcess]:
        started = [await self.start_worker(**env) for _ in range(count)]
        await asyncio.gather(*(w.wait_ready() for w in started))
        return started

    def logs(self) -> str:
        return "\n".join(
            f"----- {w.name} (pid {w.pid}, rc {w.returncode}) -----\n{w.log_tail()}" for w in self.workers
        )

    # ---- what the far ends saw -----------------------------------------------------------------------

    def key_checks(self, since: float = 0.0) -> list[RequestRecord]:
        return [r for r in list(self.exchange.requests) if r.path == KEY_CHECK_PATH and r.at >= since]

    def check_times(self, since: float = 0.0) -> dict[str, list[float]]:
        """api key → monotonic times its key was checked, in order."""
        times: dict[str, list[float]] = {item.api_key: [] for item in self.seeded}
        for record in self.key_checks(since):
            if record.api_key in times:
                times[record.api_key].append(record.at)
        return times

    def sent_to(self, user_id: int) -> list[str]:
        return [m.text for m in self.tg.bot_messages(user_id)]

    # ---- database ---------------------------------------------------------------------------------

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return (await connection.execute(text(sql), params)).scalar()

    async def leases(self) -> list[tuple[int, str, datetime]]:
        """(connection id, lease owner, lease until) of every leased connection."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Connection.id, Connection.lease_owner, Connection.lease_until).where(
                    Connection.lease_owner.is_not(None)
                )
            )
            return [(row[0], row[1], row[2]) for row in rows.all()]


async def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,  # noqa: ASYNC109
    every: float = 0.25,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            text_ = message() if callable(message) else message
            raise AssertionError(f"not met within {timeout:.0f}s: {text_}")
        await asyncio.sleep(every)


def gaps(times: list[float], until: float | None = None) -> list[float]:
    """Gaps between consecutive checks, plus (with ``until``) the time since the last one."""
    out = [b - a for a, b in itertools.pairwise(times)]
    if until is not None and times:
        out.append(until - times[-1])
    return out


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, *, telegram_limits: bool | RateLimits = True) -> AsyncIterator[Cluster]:
    """A migrated fresh PostgreSQL database, a LocalTelegram and a LocalBinance; workers via
    :meth:`Cluster.start_workers`. Everything is killed, closed and dropped on exit."""
    database_url = await create_pg_database()
    engine: AsyncEngine | None = None
    tg = LocalTelegram(token=TOKEN, rate_limits=telegram_limits)
    exchange = LocalBinance()
    state: Cluster | None = None
    try:
        engine = create_engine(database_url, pool_size=2)
        await run_migrations(engine)
        await tg.start()
        await exchange.start()
        state = Cluster(tmp_path, database_url, engine, session_factory(engine), generate_key(), tg, exchange)
        yield state
    finally:
        if state is not None:
            for worker in state.workers:
                worker.kill()
            for worker in state.workers:
                with contextlib.suppress(Exception):
                    await worker.wait_exit(10)
        await exchange.close()
        await tg.close()
        if engine is not None:
            await engine.dispose()
        await drop_pg_database(database_url)
