"""A new test database gets its schema by copying one that the real migrations built once per test
process: a SQLite file copied, a PostgreSQL database created from a migrated template database.

Every bot rig and storage test needs the full schema; running the eleven Alembic migrations for each
one cost ~0.25 s of CPU a test (a few hundred tests), while a copy costs ~1 ms. The template is made
by :func:`services.storage.db.run_migrations` itself, so the schema is exactly production's; the
tests of the migrations themselves (tests/test_storage.py) still run them step by step.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from sandbox.processes import create_pg_database, drop_pg_database
from services.storage.db import create_engine, is_sqlite, run_migrations

_template: list[Path] = []
_pg_template: list[str] = []


async def _template_file() -> Path:
    if not _template:
        folder = Path(tempfile.mkdtemp(prefix="keysentry-schema-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "migrated.db"
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()  # the last connection's close folds the WAL into the file
        _template.append(path)
    return _template[0]


def _new_sqlite_file(database_url: str) -> Path | None:
    if not is_sqlite(database_url):
        return None
    path = Path(make_url(database_url).database or "")
    return path if path.name and not path.exists() else None


async def with_schema(database_url: str) -> None:
    """Give a SQLite database that does not exist yet the migrated schema; anything else as it is."""
    path = _new_sqlite_file(database_url)
    if path is not None:
        shutil.copyfile(await _template_file(), path)


async def migrated_pg_database() -> str:
    """A new PostgreSQL database with the migrated schema: a copy of this process's template
    (``CREATE DATABASE … TEMPLATE``, ~5x faster than running the migrations), made on first use
    and dropped when the process exits."""
    if not _pg_template:
        url = await create_pg_database()
        engine = create_engine(url, pool_size=1)
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()  # a template must have no connections when it is copied
        atexit.register(lambda: asyncio.run(drop_pg_database(url)))
        _pg_template.append(make_url(url).database or "")
    return await create_pg_database(template=_pg_template[0])
