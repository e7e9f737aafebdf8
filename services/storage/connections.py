"""Linked connections: create, replace credentials, remove, re-seal; ownership checked here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.vault import Credentials, Vault, VaultError, mask
from services.core.verdicts import Verdict
from services.storage.db import Sessions
from services.storage.models import Connection, Incident


async def owned_connection(session: AsyncSession, user_id: int, connection_id: int) -> Connection | None:
    """The connection if it exists and belongs to this user; None otherwise (never another's row)."""
    row = await session.get(Connection, connection_id)
    return row if row is not None and row.user_id == user_id else None


async def load_owned_connection(sessions: Sessions, user_id: int, connection_id: int) -> Connection | None:
    """:func:`owned_connection` in a read of its own."""
    async with sessions() as session:
        return await owned_connection(session, user_id, connection_id)


def new_connection(
    vault: Vault,
    *,
    user_id: int,
    exchange: str,
    label: str,
    credentials: Credentials,
    now: datetime,
    kind: str = "exchange",
) -> Connection:
    return Connection(
        user_id=user_id,
        kind=kind,
        exchange=exchange,
        label=label,
        credentials=vault.seal(credentials),
        key_hint=mask(credentials.api_key),
        key_fingerprint=vault.fingerprint(credentials.api_key),
        state="unknown",
        verdict="unknown",
        key_info={},
        balances={},
        next_poll_at=now,
        created_at=now,
        updated_at=now,
    )


async def replace_credentials(
    session: AsyncSession, vault: Vault, connection: Connection, credentials: Credentials, now: datetime
) -> None:
    """Swap in a new key, keeping the connection's id, history and settings; the old blob is overwritten."""
    connection.credentials = vault.seal(credentials)
    connection.key_hint = mask(credentials.api_key)
    connection.key_fingerprint = vault.fingerprint(credentials.api_key)
    connection.updated_at = now
    connection.next_poll_at = now
    connection.lease_owner = None
    connection.lease_until = None


async def _connections_of(session: AsyncSession, user_id: int, exchange: str) -> list[Connection]:
    """The user's connections of ``exchange``: an exchange's keys, or with ``"threecommas"`` the
    3Commas keys (stored under that name, so the two kinds never mix)."""
    rows = await session.scalars(
        select(Connection)
        .where(Connection.user_id == user_id, Connection.exchange == exchange)
        .order_by(Connection.id)
    )
    return list(rows)


def _fill_fingerprint(vault: Vault, connection: Connection) -> None:
    """Rows linked before migration 0009: fingerprint (and the hint, in today's form) from the key."""
    try:
        api_key = vault.open(connection.credentials).api_key
    except VaultError:
        return  # the operator's problem (start-up checks the vault): such a row matches no key
    connection.key_fingerprint = vault.fingerprint(api_key)
    connection.key_hint = mask(api_key)


async def linked_with_key(
    session: AsyncSession, vault: Vault, user_id: int, exchange: str, api_key: str
) -> Connection | None:
    """The user's connection of ``exchange`` (or 3Commas) that holds ``api_key`` already, compared by
    fingerprint; rows without one yet get it now (the caller's transaction stores it)."""
    wanted = set(vault.fingerprints(api_key))
    for connection in await _connections_of(session, user_id, exchange):
        if connection.key_fingerprint is None:
            _fill_fingerprint(vault, connection)
        if connection.key_fingerprint in wanted:
            return connection
    return None


async def failing_connection(session: AsyncSession, user_id: int, exchange: str) -> Connection | None:
    """The user's connection of ``exchange`` whose key the exchange refuses (a new key would fix it);
    an outage is no reason to replace a key."""
    for connection in await _connections_of(session, user_id, exchange):
        if connection.verdict in Verdict._value2member_map_ and Verdict(connection.verdict).is_key_problem:
            return connection
    return None


async def remove_connection(session: AsyncSession, connection: Connection) -> bool:
    """Delete the row; the encrypted credentials go with it, and so do its incidents.

    False when the row was already gone: a concurrent transaction (a double tap, another
    process) deleted it after ``connection`` was read, so the caller must not report a removal.
    """
    incidents = await session.scalars(select(Incident).where(Incident.connection_id == connection.id))
    for incident in incidents:
        await session.delete(incident)
    deleted = await session.execute(delete(Connection).where(Connection.id == connection.id))
    session.expunge(connection)
    return getattr(deleted, "rowcount", 0) == 1
