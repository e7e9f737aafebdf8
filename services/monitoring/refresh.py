"""Connection changes a user makes from the chat: refresh now, link or update a key, remove.

Keys are stored only after the exchange accepted them (:func:`verify_and_store`), and every
change is written to the audit log in the same transaction.

The poller owns scheduled checks and every alert: its incident machine decides when a failure
is worth a message. A user who presses Refresh or links a key is already looking at the answer,
so these paths only write what the probe found to the connection row and pull the next poll
forward (``next_poll_at = now``), so the poller confirms soon and alerts or recovers as usual.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.clock import Clock
from services.core.single_flight import SingleFlight
from services.core.vault import Credentials, Vault
from services.core.verdicts import Verdict
from services.exchanges.budget import OverShare
from services.exchanges.egress import whitelist_of
from services.exchanges.hub import ExchangeHub
from services.exchanges.probes import KeyInfo, ProbeResult, probe
from services.monitoring.checkers import verify_key
from services.monitoring.polling import CheckResult, check_columns
from services.storage import audit
from services.storage.connections import (
    failing_connection,
    linked_with_key,
    new_connection,
    owned_connection,
    remove_connection,
    replace_credentials,
)
from services.storage.db import Sessions
from services.storage.models import Connection


@dataclass(frozen=True)
class StoreOutcome:
    """``saved`` is the stored connection's label; None when the exchange refused the key
    (see ``result``) or the connection to update is gone."""

    result: ProbeResult
    saved: str | None = None


@dataclass(frozen=True)
class RemoveOutcome:
    """``removed`` is False when nothing was left to remove (a replayed confirmation)."""

    removed: bool
    exchange: str = ""
    label: str = ""
    key_hint: str = ""


@dataclass(frozen=True)
class RefreshOutcome:
    """What a Refresh did; the page it redraws reads the result from the connection's row."""

    checked: bool = True
    """False for kinds without an exchange probe (3Commas): only the poller's next check was pulled in."""
    retry_after_s: float | None = None
    """The user's share of the exchange's budget is spent: nothing was checked or written; the
    tap may be tried again after this many seconds."""


def apply_probe(connection: Connection, result: ProbeResult, now: datetime) -> None:
    """Write a probe's findings to the row, the poller's own check columns, minus incidents; the
    poller's next check (pulled to now) confirms and alerts."""
    for column, value in check_columns(CheckResult.from_probe(result), now).items():
        setattr(connection, column, value)
    connection.next_poll_at = now


async def refresh_connection(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    hub: ExchangeHub,
    clock: Clock,
    connection_id: int,
    user_id: int,
) -> RefreshOutcome:
    """Probe one of the user's connections now and record the result; never alerts.

    Like the poller's checker it passes the last known key info to the probe, which tells an
    expired key from a revoked one. The probe runs outside any transaction (it can take
    seconds), so ownership is checked again before writing: a connection removed meanwhile is
    left as it is.
    """
    async with sessions() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome()
        if connection.kind != "exchange":
            return await _poll_soon(sessions, connection_id, user_id, clock.now())
        exchange, sealed = connection.exchange, connection.credentials
        known = KeyInfo.from_json(connection.key_info) if connection.key_info else None
        egress = hub.egress_for(user_id, whitelist_of(connection.key_info))
    credentials = vault.open(sealed)  # VaultError: the operator's error, told as such by the bot
    # The user's tap: it draws on their fair share of the budget, not on what scheduled checks keep.
    client = await hub.client(exchange, credentials, egress=egress, interactive_for=user_id)
    try:
        result = await probe(client, clock=clock, with_key_info=True, with_balances=True, known=known)
    except OverShare as over:
        return RefreshOutcome(checked=False, retry_after_s=over.retry_after_s)
    async with sessions.begin() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome()
        apply_probe(connection, result, clock.now())
    return RefreshOutcome()


async def _poll_soon(
    sessions: async_sessionmaker[AsyncSession], connection_id: int, user_id: int, now: datetime
) -> RefreshOutcome:
    async with sessions.begin() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            return RefreshOutcome()
        connection.next_poll_at = now
        return RefreshOutcome(checked=False)


async def _save_new_connection(
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


async def _save_new_credentials(
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


async def verify_and_store(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    hub: ExchangeHub,
    clock: Clock,
    *,
    user_id: int,
    exchange: str,
    label: str,
    credentials: Credentials,
    connection_id: int | None = None,
) -> StoreOutcome:
    """Probe the key in full; only if the exchange accepts it, link it (or, with ``connection_id``,
    swap it into that connection in place). A refused key leaves the database untouched."""
    result = await verify_key(hub, exchange, credentials, clock, user_id=user_id)
    if result.verdict is not Verdict.OK:
        return StoreOutcome(result)
    now = clock.now()
    async with sessions.begin() as session:
        connection: Connection | None
        if connection_id is None:
            connection = await _save_new_connection(
                session,
                vault,
                user_id=user_id,
                exchange=exchange,
                label=label,
                credentials=credentials,
                result=result,
                now=now,
            )
        else:
            connection = await _save_new_credentials(
                session,
                vault,
                user_id=user_id,
                connection_id=connection_id,
                credentials=credentials,
                result=result,
                now=now,
            )
        return StoreOutcome(result, connection.label if connection is not None else None)


async def remove_owned_connection(
    sessions: Sessions, user_id: int, connection_id: int, now: datetime
) -> RemoveOutcome | None:
    """Delete the user's connection (its sealed credentials and incidents with it) and audit it.

    None when the connection exists but is someone else's: refused, untouched. A connection
    that no longer exists is "already removed", so replaying a confirmation is harmless.
    """
    async with sessions.begin() as session:
        connection = await owned_connection(session, user_id, connection_id)
        if connection is None:
            gone = await session.get(Connection, connection_id) is None
            return RemoveOutcome(removed=False) if gone else None
        details = {"exchange": connection.exchange, "key_hint": connection.key_hint}
        outcome = RemoveOutcome(
            removed=True, exchange=connection.exchange, label=connection.label, key_hint=connection.key_hint
        )
        if not await remove_connection(session, connection):
            return RemoveOutcome(removed=False)  # a concurrent confirmation removed it first
        audit.record(session, user_id, "connection_removed", now, connection_id=connection_id, **details)
        return outcome


@dataclass(frozen=True)
class KeyStore:
    """Verifying and saving keys (the link wizard's service): :func:`verify_and_store` with its
    long-lived dependencies bound."""

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    hub: ExchangeHub
    clock: Clock

    async def verify_and_store(
        self, *, user_id: int, exchange: str, label: str, credentials: Credentials, connection_id: int | None
    ) -> StoreOutcome:
        return await verify_and_store(
            self.sessions,
            self.vault,
            self.hub,
            self.clock,
            user_id=user_id,
            exchange=exchange,
            label=label,
            credentials=credentials,
            connection_id=connection_id,
        )

    async def linked_as(self, *, user_id: int, exchange: str, api_key: str) -> Connection | None:
        """The user's connection that holds this key already (a key is linked once)."""
        async with self.sessions.begin() as session:  # may fill fingerprints of older rows
            return await linked_with_key(session, self.vault, user_id, exchange, api_key)

    async def failing(self, *, user_id: int, exchange: str) -> Connection | None:
        """The user's connection of ``exchange`` whose key is refused: a new key may replace it."""
        async with self.sessions() as session:
            return await failing_connection(session, user_id, exchange)


@dataclass
class Refreshes:
    """Refresh taps in flight in this process, per connection and user.

    Taps that arrive while a refresh runs wait for its result instead of each probing the
    exchange: 50 taps make one probe, not 50. One instance lives as long as the Dispatcher.
    """

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    hub: ExchangeHub
    clock: Clock
    _flights: SingleFlight[tuple[int, int], RefreshOutcome] = field(default_factory=SingleFlight)

    def start(self, connection_id: int, user_id: int) -> asyncio.Task[RefreshOutcome]:
        """The refresh of this connection for this user: the one running, or a new one."""
        task, _ = self._flights.start(
            (connection_id, user_id),
            lambda: refresh_connection(
                self.sessions, self.vault, self.hub, self.clock, connection_id, user_id
            ),
        )
        return task
