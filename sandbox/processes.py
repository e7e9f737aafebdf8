"""Real ``python -m bot`` processes for the multi-process tests and the benches: one harness.

A run hosts the far ends itself (the local Telegram and a local exchange, in its own process or
in a child), creates a scratch database, seeds users through the services, and starts workers
as separate OS processes configured only through their environment, exactly as
``docs/deployment.md`` runs them. Each worker's log goes to a file; its ``/metrics`` port (it
listens on ``WEB_PORT=0``) and its worker id are read from the log. Its CPU and memory are read
from ``/proc``, so far ends in other processes never count against it.

Used by ``tests/processes.py`` (PostgreSQL fault tests) and ``bench/`` (mass revocation,
scale-out, egress); nothing here is imported by the bot itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.vault import Credentials, Vault
from services.storage.connections import new_connection
from services.storage.models import Connection
from services.storage.users import get_or_create_user

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("KEYSENTRY_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
_LISTENING = re.compile(r"http listening on [^\s:]+:(\d+)")
_STARTED = re.compile(r"worker (\S+) started")
_SKIPPED = "maximum number of running instances"
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


# ------------------------------------------------------------------------------------------ databases


async def _run_on_admin_database(statement: str) -> None:
    """Run one statement on the test server's admin database: CREATE and DROP DATABASE cannot
    run inside the database they name."""
    import asyncpg

    admin = make_url(PG_ADMIN_URL)
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port, user=admin.username, database=admin.database
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_pg_database(template: str | None = None) -> str:
    """A fresh PostgreSQL database on the test server, empty or a copy of the database ``template``
    names (which nobody may be connected to); returns its URL."""
    name = f"ks_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await _run_on_admin_database(f'CREATE DATABASE "{name}"{copy}')
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    await _run_on_admin_database(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@dataclass(frozen=True)
class Seeded:
    user_id: int
    connection_id: int
    api_key: str


async def seed_users(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    exchange: str,
    keys: Iterable[Credentials],
    *,
    now: datetime,
    first_user: int = 1001,
    spread_s: float = 0.0,
    key_info: Mapping[str, Any] | None = None,
    prepare: Callable[[int, Connection], None] | None = None,
    chunk: int = 2000,
) -> list[Seeded]:
    """One user with one connection per key, through the services that the link wizard uses.

    ``balances_at`` is set to now, so checks are only the key check (weight 1) for the next 30
    minutes, as in steady state; with ``key_info`` (what the wizard's probe stored) the first
    check is a steady-state check too. Connections fall due now or, with ``spread_s``, evenly
    over the next ``spread_s`` seconds (a cluster that has been running for a while).
    ``prepare(index, connection)`` adjusts a row before it is stored (a bench gives some users
    funds locked in open orders).
    """
    keys = list(keys)
    seeded: list[Seeded] = []
    for start in range(0, len(keys), chunk):
        rows = []
        async with sessions.begin() as session:
            for index in range(start, min(start + chunk, len(keys))):
                user_id = first_user + index
                await get_or_create_user(session, user_id, "en", now)
                connection = new_connection(
                    vault, user_id=user_id, exchange=exchange, label="Main", credentials=keys[index], now=now
                )
                connection.balances_at = now
                if key_info is not None:
                    connection.key_info = dict(key_info)
                connection.next_poll_at = now + timedelta(seconds=spread_s * index / len(keys))
                if prepare is not None:
                    prepare(index, connection)
                session.add(connection)
                rows.append((user_id, connection, keys[index].api_key))
        seeded += [Seeded(user_id, connection.id, api_key) for user_id, connection, api_key in rows]
    return seeded


# ------------------------------------------------------------------------------------------ workers


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL the worker if the parent dies, so no orphan keeps polling."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def worker_env(
    *,
    token: str,
    telegram_url: str,
    database_url: str,
    vault_key: str,
    exchange_urls: Mapping[str, str],
    home: Path,
    **overrides: Any,
) -> dict[str, str]:
    """A clean environment: only what the worker needs, nothing inherited that could change it.
    ``overrides`` are further settings by name (``poll_interval_seconds=10``)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(home)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "BOT_TOKEN": token,
        "TELEGRAM_API_URL": telegram_url,
        "DATABASE_URL": database_url,
        "VAULT_KEY": vault_key,
        "EXCHANGE_URL_OVERRIDES": _json(exchange_urls),
        "WEB_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    env.update({name.upper(): _json(value) for name, value in overrides.items()})
    return env


def _json(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class WorkerProcess:
    """One ``python -m bot <role>`` OS process."""

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

    def skipped_ticks(self, job: str = "") -> int:
        """APScheduler's "skipped: maximum number of running instances reached" lines (a tick that
        overran its interval), of the job whose name contains ``job`` (``"Worker.send"``)."""
        return sum(1 for line in self.log().splitlines() if _SKIPPED in line and job in line)

    async def wait_ready(self, timeout: float = 120.0) -> None:  # noqa: ASYNC109
        """Until the log says the HTTP side listens and the worker's scheduler started.

        Importing aiogram alone costs ~7 s of CPU (pydantic rebuilds its models), so on a busy
        2-core machine a start-up can take far longer than on an idle one; the bound only stops
        a worker that will never be ready."""
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

    async def _get(self, path: str) -> aiohttp.ClientResponse:
        assert self.port is not None, "wait_ready() first"
        async with aiohttp.ClientSession() as session:
            reply = await session.get(f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(5))
            await reply.read()
            return reply

    async def metrics(self) -> str:
        reply = await self._get("/metrics")
        reply.raise_for_status()
        return await reply.text()

    async def ready(self) -> bool:
        """``/readyz``: the process reaches the database through its pool and migrations are current."""
        return (await self._get("/readyz")).status == 200

    async def counter(self, name: str) -> float:
        """A Prometheus counter summed over its labels (``keysentry_checks_total``)."""
        return metric_sum(await self.metrics(), name)

    async def checks_done(self) -> int:
        """``keysentry_checks_total`` summed over exchanges and verdicts: this process's checks."""
        return int(await self.counter("keysentry_checks_total"))

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

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


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (any labels) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def start_worker(
    name: str, env: Mapping[str, str], log_path: Path, *, role: str = "worker"
) -> WorkerProcess:
    """``python -m bot <role>`` with exactly ``env``, its output into ``log_path``. The working
    directory is the log's, so no stray ``.env`` is read. ``role="all"`` for SQLite, where
    separate workers are refused."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            role,
            env=dict(env),
            cwd=log_path.parent,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return WorkerProcess(name, proc, log_path, time.monotonic())


async def stop_workers(workers: Iterable[WorkerProcess], *, graceful_s: float = 0.0) -> None:
    """SIGTERM and wait up to ``graceful_s`` (0: straight to SIGKILL), then SIGKILL what is left."""
    workers = list(workers)
    if graceful_s:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.wait_exit(graceful_s)
    for worker in workers:
        worker.kill()
    for worker in workers:
        with contextlib.suppress(Exception):
            await worker.wait_exit(10)


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
