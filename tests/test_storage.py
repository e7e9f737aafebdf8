"""Storage round trips on both backends; secrets never stored in plaintext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import make_url

from services.core.vault import Credentials, Vault, generate_key
from services.storage import audit
from services.storage.connections import new_connection, owned_connection, replace_credentials
from services.storage.db import (
    _alembic_config,
    create_engine,
    migrations_current,
    run_migrations,
    session_factory,
)
from services.storage.models import Connection, Incident, OutboxMessage, RecoveryChecklist
from services.storage.sealed import reseal_everything
from services.storage.users import claim_chat_notice, get_or_create_user, set_language
from tests.schema import with_schema

SECRET = "Zx9SuperSecretValue0123456789abcdefABCDEF0123456789xyz"


async def test_migrations_are_current(engine):
    assert await migrations_current(engine)


async def test_user_connection_incident_outbox_audit_round_trip(sessions, vault, clock):
    now = clock.now()
    async with sessions.begin() as session:
        await get_or_create_user(session, 42, "en", now)
        await set_language(session, 42, "es")
        connection = new_connection(
            vault,
            user_id=42,
            exchange="binance",
            label="Main",
            credentials=Credentials("k" * 64, SECRET),
            now=now,
        )
        session.add(connection)
        await session.flush()
        session.add(Incident(connection_id=connection.id, check_kind="key", state="failing", updated_at=now))
        session.add(
            OutboxMessage(
                user_id=42, kind="alert", payload={"x": 1}, event_at=now, not_before=now, created_at=now
            )
        )
        audit.record(session, 42, "cancel_order", now, connection_id=connection.id, order="o1")
    async with sessions() as session:
        user = await get_or_create_user(session, 42, "en", now)
        assert user.language == "es"
        stored = (await session.scalars(select(Connection))).one()
        assert stored.created_at == now  # aware UTC round trip
        assert vault.open(stored.credentials).secret == SECRET
        assert stored.key_hint == "kkkk…kkkk"
        assert (await session.scalars(select(Incident))).one().state == "failing"
        assert (await session.scalars(select(OutboxMessage))).one().payload == {"x": 1}
        assert [e.action for e in await audit.recent(session, 42)] == ["cancel_order"]


async def test_another_users_connection_is_invisible(sessions, vault, clock):
    now = clock.now()
    async with sessions.begin() as session:
        await get_or_create_user(session, 1, "en", now)
        connection = new_connection(
            vault,
            user_id=1,
            exchange="okx",
            label="",
            credentials=Credentials("a" * 32, SECRET, "pp"),
            now=now,
        )
        session.add(connection)
    async with sessions() as session:
        assert await owned_connection(session, 2, connection.id) is None
        assert await owned_connection(session, 1, connection.id) is not None


async def test_replace_credentials_keeps_identity(sessions, vault, clock):
    now = clock.now()
    async with sessions.begin() as session:
        await get_or_create_user(session, 7, "en", now)
        connection = new_connection(
            vault,
            user_id=7,
            exchange="bybit",
            label="Sub",
            credentials=Credentials("old" * 8, SECRET),
            now=now,
        )
        session.add(connection)
    async with sessions.begin() as session:
        row = await session.get(Connection, connection.id)
        await replace_credentials(session, vault, row, Credentials("new" * 8, "n" * 40), clock.advance(60))
    async with sessions() as session:
        row = await session.get(Connection, connection.id)
        assert row.label == "Sub" and row.created_at == now
        assert vault.open(row.credentials).api_key == "new" * 8


async def test_group_notice_claimed_once(sessions, clock):
    async with sessions.begin() as session:
        assert await claim_chat_notice(session, -100, clock.now())
    async with sessions.begin() as session:
        assert not await claim_chat_notice(session, -100, clock.now())


async def test_no_plaintext_secret_in_sqlite_file(tmp_path, clock):
    from services.storage.db import create_engine, run_migrations, session_factory

    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    engine = create_engine(url)
    await run_migrations(engine)
    vault = Vault([generate_key()])
    async with session_factory(engine).begin() as session:
        await get_or_create_user(session, 5, "en", clock.now())
        session.add(
            new_connection(
                vault,
                user_id=5,
                exchange="binance",
                label="x",
                credentials=Credentials("PUBLICKEY" * 4, SECRET, "Passphrase-Very-Secret-123"),
                now=clock.now(),
            )
        )
    await engine.dispose()
    raw = b"".join(p.read_bytes() for p in Path(make_url(url).database).parent.glob("plain.db*"))
    assert SECRET.encode() not in raw
    assert b"Passphrase-Very-Secret-123" not in raw


async def test_rotation_reseals_under_newest_key(sessions, clock):
    old_key, new_key = generate_key(), generate_key()
    old_vault = Vault([old_key])
    async with sessions.begin() as session:
        await get_or_create_user(session, 9, "en", clock.now())
        session.add(
            new_connection(
                old_vault,
                user_id=9,
                exchange="binance",
                label="",
                credentials=Credentials("k" * 30, SECRET),
                now=clock.now(),
            )
        )
    rotating = Vault([new_key, old_key])
    async with sessions.begin() as session:
        assert await reseal_everything(session, rotating) == 1
    async with sessions() as session:
        blob = (await session.scalars(select(Connection))).one().credentials
    assert Vault([new_key]).open(blob).secret == SECRET


async def test_ids_of_deleted_rows_are_never_reused_and_migration_keeps_every_row(tmp_path, vault, clock):
    """0004 rebuilds SQLite tables for AUTOINCREMENT; children of a rebuilt table must survive it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)

    def to_0003(sync_connection: Any) -> None:
        config = _alembic_config(url)
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "0003")

    async with engine.begin() as connection:
        await connection.run_sync(to_0003)
    now = clock.now()
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        await get_or_create_user(session, 42, "en", now)
        for label in ("a", "b"):
            row = new_connection(
                vault,
                user_id=42,
                exchange="binance",
                label=label,
                credentials=Credentials("k" * 64, SECRET),
                now=now,
            )
            # only the columns the schema had at 0003 (later revisions add columns to connections)
            later = {"id", "key_fingerprint"}
            values = {c.key: getattr(row, c.key) for c in Connection.__table__.columns if c.key not in later}
            values = {key: value for key, value in values.items() if value is not None}  # the rest: defaults
            await session.execute(insert(Connection).values(**values))
        session.add(Incident(connection_id=1, check_kind="key", state="failing", updated_at=now))
    await run_migrations(engine)
    async with sessions.begin() as session:
        assert (await session.scalars(select(Incident))).one().state == "failing"  # no cascade
        await session.execute(text("DELETE FROM connections WHERE id = 2"))
    async with sessions.begin() as session:
        fresh = new_connection(
            vault, user_id=42, exchange="okx", label="c", credentials=Credentials("k" * 64, SECRET), now=now
        )
        session.add(fresh)
        await session.flush()
        assert fresh.id == 3
        assert (await session.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    await engine.dispose()


async def test_checklist_refresh_migration_goes_down_and_up_keeping_rows(engine, vault, clock):
    """0011 adds when a checklist's next background redraw is due and the digest of what it shows."""
    sessions = session_factory(engine)
    now = clock.now()
    async with sessions.begin() as session:
        await get_or_create_user(session, 42, "en", now)
        connection = new_connection(
            vault, user_id=42, exchange="binance", label="a", credentials=Credentials("k" * 64, SECRET),
            now=now,
        )  # fmt: skip
        session.add(connection)
        await session.flush()
        session.add(
            RecoveryChecklist(
                user_id=42, tc_connection_id=connection.id, account_id=7, since=now, created_at=now,
                refresh_due_at=now, shown_digest="d" * 64,
            )
        )  # fmt: skip
    sqlite = engine.dialect.name == "sqlite"

    def columns(sync_connection: Any) -> set[str]:
        return {c["name"] for c in inspect(sync_connection).get_columns("recovery_checklists")}

    def indexes(sync_connection: Any) -> set[str]:
        return {str(i["name"]) for i in inspect(sync_connection).get_indexes("recovery_checklists")}

    def to_0010(sync_connection: Any) -> None:
        config = _alembic_config(str(engine.url))
        config.attributes["connection"] = sync_connection
        command.downgrade(config, "0010")

    async with engine.connect() as connection:
        indexed = await connection.run_sync(indexes)
        assert "ix_recovery_checklists_account" in indexed
    async with engine.connect() as connection:
        if sqlite:  # as run_migrations does: SQLite rebuilds the table with foreign keys off
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        await connection.run_sync(to_0010)
        await connection.commit()
        assert {"refresh_due_at", "shown_digest"}.isdisjoint(await connection.run_sync(columns))
        rows = (await connection.execute(text("SELECT user_id, account_id FROM recovery_checklists"))).all()
        assert [tuple(row) for row in rows] == [(42, 7)]
        assert await connection.run_sync(indexes) == indexed
        if sqlite:  # the rebuilt table still never reuses ids
            ddl = await connection.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = 'recovery_checklists'")
            )
            assert "AUTOINCREMENT" in ddl
            await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.commit()
    await run_migrations(engine)
    assert await migrations_current(engine)
    async with sessions() as session:
        row = (await session.scalars(select(RecoveryChecklist))).one()
        assert (row.account_id, row.refresh_due_at, row.shown_digest) == (7, None, None)  # due now


async def test_downgrading_past_the_key_fingerprints_keeps_ids_never_reused(tmp_path):
    """0009's downgrade rebuilds ``connections`` and ``listed_orders`` on SQLite; the rebuilt tables
    keep AUTOINCREMENT, so a downgrade cannot bring back reused ids (issue 11 §1). SQLite only:
    dropping a column leaves PostgreSQL's sequences alone."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'down.db'}"
    await with_schema(url)
    engine = create_engine(url)

    def to_0008(sync_connection: Any) -> None:
        config = _alembic_config(str(engine.url))
        config.attributes["connection"] = sync_connection
        command.downgrade(config, "0008")

    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await connection.run_sync(to_0008)
            await connection.commit()
            for table in ("connections", "listed_orders"):
                ddl = await connection.scalar(
                    text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}
                )
                assert "AUTOINCREMENT" in ddl, table
            await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            await connection.commit()
        await run_migrations(engine)
        assert await migrations_current(engine)
    finally:
        await engine.dispose()
