"""3Commas on the user's behalf: linked keys and which exchange connection each 3Commas account
trades on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.vault import Credentials, Vault
from services.storage.connections import new_connection, owned_connection
from services.storage.db import Sessions
from services.storage.models import Connection, ThreeCommasAccountLink
from services.threecommas.entities import (
    Account,
)

THREECOMMAS = "threecommas"


# -- linking a 3Commas key and mapping its accounts ----------------------------------------------


def add_threecommas_connection(
    session: AsyncSession, vault: Vault, *, user_id: int, credentials: Credentials, label: str, now: datetime
) -> Connection:
    """A validated 3Commas key as a connection (``kind="threecommas"``), in the caller's transaction."""
    connection = new_connection(
        vault,
        user_id=user_id,
        exchange=THREECOMMAS,
        label=label,
        credentials=credentials,
        now=now,
        kind=THREECOMMAS,
    )
    session.add(connection)
    return connection


def suggest_connection(account: Account, connections: list[Connection]) -> Connection | None:
    """The user's exchange connection on the account's exchange, when exactly one exists.

    Two Binance keys cannot be told apart from 3Commas' side, so then the user picks.
    """
    exchange = account.exchange_id
    matches = [c for c in connections if c.kind == "exchange" and c.exchange == exchange]
    return matches[0] if len(matches) == 1 else None


async def exchange_connections(session: AsyncSession, user_id: int) -> list[Connection]:
    rows = await session.scalars(
        select(Connection)
        .where(Connection.user_id == user_id, Connection.kind == "exchange")
        .order_by(Connection.id)
    )
    return list(rows)


async def save_account_link(
    session: AsyncSession,
    *,
    user_id: int,
    tc_connection_id: int,
    account: Account,
    exchange_connection_id: int | None,
    now: datetime,
) -> ThreeCommasAccountLink:
    """Create or update the mapping of one 3Commas account (None = the user skipped it)."""
    link = await session.scalar(
        select(ThreeCommasAccountLink).where(
            ThreeCommasAccountLink.tc_connection_id == tc_connection_id,
            ThreeCommasAccountLink.account_id == account.id,
        )
    )
    if link is None:
        link = ThreeCommasAccountLink(
            user_id=user_id, tc_connection_id=tc_connection_id, account_id=account.id, updated_at=now
        )
        session.add(link)
    link.account_name = account.name[:128]
    link.market_code = (account.market_code or "")[:48]
    link.exchange_connection_id = exchange_connection_id
    link.updated_at = now
    return link


@dataclass(frozen=True)
class NewThreeCommasKey:
    """A linked 3Commas key: one unmapped link row per account, and the connections to map onto."""

    link_ids: list[int]
    candidates: list[Connection]


async def link_threecommas_key(
    sessions: Sessions,
    vault: Vault,
    *,
    user_id: int,
    credentials: Credentials,
    accounts: list[Account],
    now: datetime,
) -> NewThreeCommasKey:
    """Store a validated key and its accounts (each still unmapped) in one transaction."""
    async with sessions.begin() as session:
        connection = add_threecommas_connection(
            session, vault, user_id=user_id, credentials=credentials, label="", now=now
        )
        await session.flush()
        links = [
            await save_account_link(
                session,
                user_id=user_id,
                tc_connection_id=connection.id,
                account=account,
                exchange_connection_id=None,
                now=now,
            )
            for account in accounts
        ]
        candidates = await exchange_connections(session, user_id)
        return NewThreeCommasKey([link.id for link in links], candidates)


@dataclass(frozen=True)
class MappedAccount:
    """``target`` is None when the user skipped the account."""

    account_name: str
    target: Connection | None


async def link_account(
    sessions: Sessions, *, user_id: int, link_id: int, connection_id: int | None, now: datetime
) -> MappedAccount | None:
    """Map the user's 3Commas account link onto one of their connections (None: skip it).

    None when the link is not this user's, or the connection was removed since the prompt or is
    someone else's: that is not the same as Skip, so nothing changes.
    """
    async with sessions.begin() as session:
        link = await session.get(ThreeCommasAccountLink, link_id)
        if link is None or link.user_id != user_id:
            return None
        target = None
        if connection_id is not None:
            target = await owned_connection(session, user_id, connection_id)
            if target is None:
                return None
        link.exchange_connection_id = target.id if target is not None else None
        link.updated_at = now
        return MappedAccount(link.account_name, target)


@dataclass(frozen=True)
class LinkedAccount:
    """A 3Commas account mapped onto an exchange connection, with the key to read it."""

    tc_connection_id: int
    account_id: int
    credentials: Credentials
    market_code: str | None = None
    """3Commas' ``market_code`` (``binance_futures``): which of the key's APIs holds the orders."""


async def accounts_for_connection(
    session: AsyncSession, vault: Vault, user_id: int, exchange_connection_id: int
) -> list[LinkedAccount]:
    """3Commas accounts the user said trade on this exchange connection (their own rows only)."""
    rows = await session.execute(
        select(ThreeCommasAccountLink, Connection)
        .join(Connection, Connection.id == ThreeCommasAccountLink.tc_connection_id)
        .where(
            ThreeCommasAccountLink.exchange_connection_id == exchange_connection_id,
            ThreeCommasAccountLink.user_id == user_id,
            Connection.user_id == user_id,
        )
        .order_by(ThreeCommasAccountLink.id)
    )
    return [
        LinkedAccount(link.tc_connection_id, link.account_id, vault.open(tc.credentials), link.market_code)
        for link, tc in rows
    ]
