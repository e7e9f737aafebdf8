"""Shared fixtures: databases on SQLite and PostgreSQL, the vault and a clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from sandbox.exchanges import LOCAL_EXCHANGES, LocalExchange
from sandbox.processes import PG_ADMIN_URL, drop_pg_database
from sandbox.threecommas import LocalThreeCommas
from services.core.clock import FakeClock
from services.core.vault import Vault, generate_key
from services.storage.db import create_engine, run_migrations, session_factory
from tests.production_net import ProductionNet
from tests.schema import migrated_pg_database, with_schema

_pg_state: dict[str, str | None] = {}


def postgres_unreachable_reason() -> str | None:
    """None when the test PostgreSQL answers; otherwise why not (shown in the skip reason)."""
    if "reason" not in _pg_state:

        async def probe() -> None:
            import asyncpg

            url = make_url(PG_ADMIN_URL)
            conn = await asyncpg.connect(
                host=url.host, port=url.port, user=url.username, database=url.database, timeout=3
            )
            await conn.close()

        try:
            # A thread of its own: callers may already be inside an event loop.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, probe()).result()
            _pg_state["reason"] = None
        except Exception as error:  # any failure means: not reachable here
            _pg_state["reason"] = f"PostgreSQL at {PG_ADMIN_URL} not reachable: {error!r}"
    return _pg_state["reason"]


# -- the attack table: every test marked ``attack("…")`` is one attack tried; it held if the test passed.

_attacks: dict[str, list[str]] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("attack")
    if marker is not None:  # user_properties travel from xdist workers to the controller
        item.user_properties.append(("attack", marker.args[0]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = dict(report.user_properties).get("attack")
    if name is None or report.skipped or (report.when != "call" and report.passed):
        return
    _attacks.setdefault(str(name), []).append("held" if report.passed else "broke")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _attacks:
        return
    terminalreporter.section("attacks (issue 11)")
    for name, results in sorted(_attacks.items()):
        held = results.count("held")
        terminalreporter.write_line(
            f"{'held ' if held == len(results) else 'BROKE'} {held}/{len(results)}  {name}"
        )
    tried = sum(len(r) for r in _attacks.values())
    held = sum(r.count("held") for r in _attacks.values())
    terminalreporter.write_line(f"attacks tried: {tried}, held: {held}")


def pytest_report_header(config: pytest.Config) -> str:
    reason = postgres_unreachable_reason()
    return "postgresql: " + (
        "reachable, storage tests run on SQLite and PostgreSQL" if reason is None else reason
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """Each storage test runs once per backend; PostgreSQL is skipped, visibly, only when unreachable."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'keysentry.db'}"
        return
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    url = await migrated_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def engine(database_url: str):
    await with_schema(database_url)
    engine = create_engine(database_url)
    await run_migrations(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def vault() -> Vault:
    return Vault([generate_key()])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# The moment the 3Commas fixtures date their deals from; rigs start their clocks after it.
T0 = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def net() -> ProductionNet:
    """The services' real hostnames routed to local TLS servers; give keysentry ``net.transport``."""
    return ProductionNet()


@pytest.fixture
async def exchanges(net: ProductionNet) -> AsyncIterator[dict[str, LocalExchange]]:
    """Local Binance, Bybit and OKX servers for one test, answering as ``api.binance.com``,
    ``api.bybit.com``, ``www.okx.com``… over TLS through ``net.transport``."""
    servers = {name: cls() for name, cls in LOCAL_EXCHANGES.items()}
    for server in servers.values():
        await net.serve_exchange(server)
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.close()


@pytest.fixture
async def tc() -> AsyncIterator[LocalThreeCommas]:
    """A local 3Commas whose deals are dated by a clock standing at ``T0``."""
    server = LocalThreeCommas(FakeClock(T0))
    await server.start()
    try:
        yield server
    finally:
        await server.close()
