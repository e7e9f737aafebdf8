"""A new SQLite test database gets its schema by copying one that the real migrations built once
per test process.

Every bot rig and storage test needs the full schema; running the eleven Alembic migrations for each
one cost ~0.25 s of CPU a test (a few hundred tests), while a copy costs ~1 ms. The template is made
by :func:`services.storage.db.run_migrations` itself, so the schema is exactly production's; the
tests of the migrations themselves (tests/test_storage.py) still run them step by step.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from services.storage.db import create_engine, is_sqlite, run_migrations

_template: list[Path] = []


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
