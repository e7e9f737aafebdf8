"""Everything keysentry holds sealed by the vault: connection credentials and wizard fragments.

A wrong ``VAULT_KEY`` must be found before it does harm: at start-up :func:`vault_opens_stored`
tries a few stored blobs of each kind, and the process refuses to start when none opens (every check
would otherwise fail and users would be told their keys are broken). :func:`reseal_everything`
re-encrypts both kinds under the newest key for a rotation (and renews the key fingerprints, which
are keyed by it), or fails whole on a blob no key opens.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.vault import Vault, VaultError
from services.storage.db import Sessions
from services.storage.models import Connection, ConversationState

SEALED_FIELD = "sealed"
"""The key of a wizard's FSM data holding the credentials collected so far, sealed."""

SAMPLE = 5
"""Blobs of each kind tried at start-up; one that opens proves the configured keys are right."""


def _opens_any(vault: Vault, blobs: Sequence[bytes]) -> bool:
    for blob in blobs:
        try:
            vault.open(blob)
        except VaultError:
            continue
        return True
    return not blobs  # nothing stored: nothing to prove


async def _fragments(session: AsyncSession, limit: int | None = None) -> list[ConversationState]:
    rows = await session.scalars(
        select(ConversationState).order_by(ConversationState.updated_at.desc()).limit(limit)
    )
    return [row for row in rows if isinstance((row.data or {}).get(SEALED_FIELD), str)]


async def vault_opens_stored(sessions: Sessions, vault: Vault) -> str | None:
    """None when the configured keys open stored credentials and wizard fragments; else what does not."""
    async with sessions() as session:
        credentials = list(
            await session.scalars(select(Connection.credentials).order_by(Connection.id.desc()).limit(SAMPLE))
        )
        fragments = [row.data[SEALED_FIELD].encode() for row in await _fragments(session, SAMPLE * 4)][
            :SAMPLE
        ]
    if not _opens_any(vault, credentials):
        return "stored credentials"
    if not _opens_any(vault, fragments):
        return "sealed wizard state"
    return None


async def reseal_everything(session: AsyncSession, vault: Vault) -> int:
    """Re-encrypt every sealed blob under the newest key; VaultError (nothing written) if one won't open."""
    count = 0
    for connection in await session.scalars(select(Connection)):
        connection.credentials = vault.reseal(connection.credentials)
        connection.key_fingerprint = vault.fingerprint(vault.open(connection.credentials).api_key)
        count += 1
    for row in await _fragments(session):
        resealed = vault.reseal(row.data[SEALED_FIELD].encode()).decode()
        row.data = {**row.data, SEALED_FIELD: resealed}
        count += 1
    return count
