"""Real worker processes for multi-process tests: ``python -m bot worker`` against PostgreSQL.

The test process hosts the far ends (a :class:`LocalTelegram` and a :class:`LocalBinance`), creates
and migrates a fresh PostgreSQL database, seeds users and connections through the services, and
starts workers through the shared harness (:mod:`sandbox.processes`, also used by ``bench/``).

Everything is torn down in ``finally``: every process still alive is SIGKILLed (and, on Linux,
the kernel kills them too if the test process itself dies), the servers close, the database is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sandbox.exchanges import LocalBinance, LocalExchange, RequestRecord
from sandbox.processes import (
    Seeded,
    WorkerProcess,
    drop_pg_database,
    seed_users,
    start_worker,
    stop_workers,
    wait_until,
    worker_env,
)
from sandbox.telegram import LocalTelegram, RateLimits
from services.core.clock import utcnow
from services.core.vault import Credentials, Vault, generate_key
from services.storage.db import create_engine, session_factory
from services.storage.models import Connection
from tests.schema import migrated_pg_database

__all__ = ["Cluster", "WorkerProcess", "cluster", "gaps", "wait_until"]

TOKEN = "123456:WORKERS-PG-TOKEN"
# The probe's key check on Binance (services/exchanges/probes.py, recipe "binance"):
# exactly one per health check of a connection, whatever the verdict.
KEY_CHECK_PATH = "/sapi/v1/account/apiRestrictions"


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
        """``count`` users with one healthy Binance key each (:func:`sandbox.processes.seed_users`),
        due for a check right away or evenly over the next ``spread_s`` seconds."""
        keys = [self.exchange.add_key() for _ in range(count)]
        for user_id in range(first_user, first_user + count):
            self.tg.add_user(user_id)
        seeded = await seed_users(
            self.sessions,
            Vault([self.vault_key]),
            "binance",
            [Credentials(k.api_key, k.secret, k.passphrase) for k in keys],
            now=utcnow(),
            first_user=first_user,
            spread_s=spread_s,
        )
        self.seeded += seeded
        return seeded

    def revoke(self, keys: Iterable[Seeded]) -> None:
        for item in keys:
            self.exchange.set_key_state(item.api_key, "revoked")

    # ---- processes --------------------------------------------------------------------------------

    def env(self, **overrides: Any) -> dict[str, str]:
        assert self.exchange.url is not None
        settings = {"poll_interval_seconds": 10, "lease_seconds": 5, **overrides}
        return worker_env(
            token=TOKEN,
            telegram_url=self.tg.url,
            database_url=self.database_url,
            vault_key=self.vault_key,
            exchange_urls={"binance": self.exchange.url},
            home=self.tmp_path,
            **settings,
        )

    async def start_worker(self, **env: Any) -> WorkerProcess:
        name = f"worker{len(self.workers) + 1}"
        worker = await start_worker(name, self.env(**env), self.tmp_path / f"{name}.log")
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
    database_url = await migrated_pg_database()
    engine: AsyncEngine | None = None
    tg = LocalTelegram(token=TOKEN, rate_limits=telegram_limits)
    exchange = LocalBinance()
    state: Cluster | None = None
    try:
        engine = create_engine(database_url, pool_size=2)
        await tg.start()
        await exchange.start()
        state = Cluster(tmp_path, database_url, engine, session_factory(engine), generate_key(), tg, exchange)
        yield state
    finally:
        if state is not None:
            await stop_workers(state.workers)
        await exchange.close()
        await tg.close()
        if engine is not None:
            await engine.dispose()
        await drop_pg_database(database_url)
