"""Checks a user asks for: refresh a linked key now, or save a key that just passed verification.

The poller owns scheduled checks and every alert: its incident machine decides when a failure
is worth a message. A user who presses Refresh or links a key is already looking at the answer,
so these paths only write what the probe found to the connection row and pull the next poll
forward (``next_poll_at = now``), so the poller confirms soon and alerts or recovers as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services import audit
from services.checkers import verify_key
from services.clock import Clock
from services.connections import new_connection, owned_connection, replace_credentials
from services.exchanges import ExchangeHub
from services.models import Connection
from services.probes import ProbeResult
from services.vault import Credentials, Vault, VaultError
from services.verdicts import Verdict

_DETAIL_MAX = 300  # length of Connection.verdict_detail


@dataclass(frozen=True)
class RefreshOutcome:
    """``found`` is False when the connection is not this user's (or was removed meanwhile)."""

    found: bool
    verdict: Verdict = Verdict.UNKNOWN
    detail: str = ""


def apply_probe(connection: Connection, result: ProbeResult, now: datetime) -> None:
    """Write a probe's findings to the row, exactly the columns the poller writes, minus incidents."""
    connection.verdict = result.verdict.value
    connection.verdict_detail = result.detail[:_DETAIL_MAX]
    connection.last_check_at = now
    if result.verdict is Verdict.OK:
        connection.last_ok_at = now
    if result.key_info is not None:
        connection.key_info = result.key_info.to_json()
    if result.balances is not None:
        connection.balances = result.balances
        connection.balances_at = now
    connection.next_poll_at = now
    connection.updated_at = now


async def refresh_connection(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    hub: ExchangeHub,
    clock: Clock,
    connection_id: int,
    user_id: int,
) -> RefreshOutcome:
    """Probe one of the user's connections now and record the result; never alerts.

    The probe runs outside any transaction (it can take seconds), so ownership is checked
    again before writing: a connection removed meanwhile is reported as not found.
    """
    async with sessions() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome(found=False)
        exchange, sealed = connection.exchange, connection.credentials
    try:
        credentials = vault.open(sealed)
    except VaultError as error:
        return await _record_failure(sessions, connection_id, user_id, str(error), clock.now())
    result = await verify_key(hub, exchange, credentials, clock)
    async with sessions.begin() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome(found=False)
        apply_probe(connection, result, clock.now())
    return RefreshOutcome(found=True, verdict=result.verdict, detail=result.detail)


async def _record_failure(
    sessions: async_sessionmaker[AsyncSession], connection_id: int, user_id: int, detail: str, now: datetime
) -> RefreshOutcome:
    """A blob the vault cannot open is the operator's problem, not the key's: recorded as unknown."""
    async with sessions.begin() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome(found=False)
        connection.verdict = Verdict.UNKNOWN.value
        connection.verdict_detail = detail[:_DETAIL_MAX]
        connection.last_check_at = now
        connection.updated_at = now
    return RefreshOutcome(found=True, verdict=Verdict.UNKNOWN, detail=detail)


async def save_new_connection(
    session: AsyncSession,
    vault: Vault,
    *,
    user_id: int,
    exchange: str,
    label: str,
    credentials: Credentials,
    result: ProbeResult,
    now: datetime,
) -> Connection:
    """Store a key that passed :func:`verify_key`, with what the probe learnt, and audit it."""
    connection = new_connection(
        vault, user_id=user_id, exchange=exchange, label=label, credentials=credentials, now=now
    )
    connection.state = "ok"  # matches the fresh incident the poller starts from
    apply_probe(connection, result, now)
    session.add(connection)
    await session.flush()
    audit.record(
        session,
        user_id,
        "connection_linked",
        now,
        connection_id=connection.id,
        exchange=exchange,
        key_hint=connection.key_hint,
    )
    return connection


async def save_new_credentials(
    session: AsyncSession,
    vault: Vault,
    *,
    user_id: int,
    connection_id: int,
    credentials: Credentials,
    result: ProbeResult,
    now: datetime,
) -> Connection | None:
    """Swap a verified key into the user's connection in place; None if it is not theirs (any more)."""
    connection = await owned_connection(session, user_id, connection_id)
    if connection is None:
        return None
    old_hint = connection.key_hint
    await replace_credentials(session, vault, connection, credentials, now)
    apply_probe(connection, result, now)
    audit.record(
        session,
        user_id,
        "key_updated",
        now,
        connection_id=connection.id,
        exchange=connection.exchange,
        old_key_hint=old_hint,
        key_hint=connection.key_hint,
    )
    return connection
