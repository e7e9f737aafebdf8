"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production).

SQLite runs in WAL mode with a busy timeout so the bot's readers never block on the poller's
writes; PostgreSQL gets a normal pool. Migrations run through Alembic at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_directory(url: str) -> None:
    """Create the directory of a file-based SQLite database so a fresh clone just runs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        ensure_sqlite_directory(url)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True
    )


Sessions = async_sessionmaker[AsyncSession]
"""The session factory every service takes: ``sessions()`` reads, ``sessions.begin()`` writes."""


def session_factory(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def run_migrations(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to call from several processes at once on PostgreSQL."""
    from alembic import command

    def upgrade(sync_connection: Any) -> None:
        config = _alembic_config(str(engine.url))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    sqlite = is_sqlite(str(engine.url))
    async with engine.connect() as connection:
        if sqlite:
            # SQLite changes a table by rebuilding it, and dropping the old copy with foreign keys on
            # would cascade-delete every child row. So, as sqlite.org/lang_altertable.html prescribes:
            # keys off before the transaction (the pragma is ignored inside one), checked before commit.
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        else:
            # One migrator at a time across processes.
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        await connection.run_sync(upgrade)
        if sqlite:
            broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
            if broken:
                raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
        await connection.commit()
        if sqlite:
            await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.commit()


async def migrations_current(engine: AsyncEngine) -> bool:
    """True when the database is at the newest revision (used by readiness checks)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(str(engine.url)))

    def current(sync_connection: Any) -> set[str]:
        return set(MigrationContext.configure(sync_connection).get_current_heads())

    async with engine.connect() as connection:
        heads = await connection.run_sync(current)
    return heads == set(script.get_heads())
