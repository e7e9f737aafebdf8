"""Giving 3Commas a new exchange key for one account, on the trader's behalf.

This is what 3Commas' own "Update API Key" button does, through its API: ``POST
/ver1/accounts/update`` with the account id and the new key (docs
``account/4_edit_exchange_account``, ACCOUNTS_WRITE), then ``load_balances`` so 3Commas talks to
the exchange with it, then re-reading the account until ``api_key_invalid`` is false. The new
exchange key passes through memory only: it is never stored, logged or echoed; the audit row
records the outcome and the masked key.

keysentry does not probe the new key itself: a key whitelisted for 3Commas' IPs fails from
ours, which is expected and says nothing about whether 3Commas can use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from services.core.vault import Credentials, Vault, mask
from services.storage import audit, money_actions
from services.storage.button_tokens import connection_token
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import ThreeCommasAccountLink
from services.storage.money_actions import ActionState, Unverifiable
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.entities import Account, market_of
from services.threecommas.errors import NotFound, PermissionDenied, ThreeCommasError

REREADS = 3
"""How often the account is read back after the update before keysentry reports what 3Commas
shows: 3Commas checks the key while answering ``load_balances``, so one read normally settles it."""


_PASSPHRASE_EXCHANGES = frozenset({"okx", "kucoin", "bitget"})


def needs_passphrase(market_code: str | None) -> bool:
    """3Commas asks a passphrase for OKX, KuCoin and Bitget keys (docs account/4_edit_exchange_account)."""
    market = market_of(market_code)
    return market is not None and market.exchange in _PASSPHRASE_EXCHANGES


class RepairOutcome(StrEnum):
    FIXED = "fixed"
    STILL_BROKEN = "still_broken"  # 3Commas took the key but still cannot use it
    NO_PERMISSION = "no_permission"  # the 3Commas key lacks ACCOUNTS_WRITE
    REFUSED = "refused"  # 3Commas refused the request (its words in ``error``)
    UNAVAILABLE = "unavailable"  # no answer: nothing is known, nothing to retry blindly
    IN_PROGRESS = "in_progress"  # this very key is being sent to 3Commas by another tap right now
    GONE = "gone"


@dataclass(frozen=True)
class RepairResult:
    outcome: RepairOutcome
    account: Account | None = None
    error: str | None = None
    key_hint: str = ""


def _words(error: ThreeCommasError) -> str:
    attributes = "; ".join(f"{name}: {', '.join(msgs)}" for name, msgs in error.attributes.items())
    return " — ".join(part for part in (error.error, error.message, attributes) if part)[:300]


async def update_account_key(
    access: ThreeCommasAccess,
    tc_credentials: Credentials,
    account_id: int,
    new_key: Credentials,
    *,
    rereads: int = REREADS,
) -> RepairResult:
    """Send ``new_key`` to 3Commas for ``account_id`` and report whether 3Commas can use it now."""
    hint = mask(new_key.api_key)
    try:
        async with access.open(tc_credentials) as client:
            account = await client.update_account_keys(
                account_id, new_key.api_key, new_key.secret, new_key.passphrase or None
            )
            for _ in range(rereads):
                try:
                    account = await client.load_balances(account_id)
                except ThreeCommasError as error:
                    if error.verdict.is_transient:
                        raise
                    account = await client.account(account_id)
                if not account.key_broken:
                    return RepairResult(RepairOutcome.FIXED, account, key_hint=hint)
            return RepairResult(RepairOutcome.STILL_BROKEN, account, key_hint=hint)
    except PermissionDenied as denied:
        return RepairResult(RepairOutcome.NO_PERMISSION, error=_words(denied), key_hint=hint)
    except NotFound:
        return RepairResult(RepairOutcome.GONE, key_hint=hint)
    except ThreeCommasError as error:
        outcome = RepairOutcome.UNAVAILABLE if error.verdict.is_transient else RepairOutcome.REFUSED
        return RepairResult(outcome, error=_words(error), key_hint=hint)


async def account_now(
    access: ThreeCommasAccess, tc_credentials: Credentials, account_id: int
) -> Account | None:
    """The account as 3Commas shows it right now (None when it is gone); used to confirm a fix
    the trader made in 3Commas' web app."""
    async with access.open(tc_credentials) as client:
        try:
            return await client.account(account_id)
        except NotFound:
            return None


@dataclass(frozen=True)
class RepairTarget:
    """One of the user's 3Commas accounts and the 3Commas key that reaches it."""

    tc_connection_id: int
    account_id: int
    name: str
    market_code: str
    tc_credentials: Credentials
    version: str
    """The 3Commas connection's version token, which its repair buttons carry."""


async def repair_target(
    sessions: Sessions, vault: Vault, user_id: int, cid: int, acc: int
) -> RepairTarget | None:
    """The account when it is this user's (re-checked at every tap), else None."""
    async with sessions() as session:
        connection = await owned_connection(session, user_id, cid)
        if connection is None:
            return None
        link = await session.scalar(
            select(ThreeCommasAccountLink).where(
                ThreeCommasAccountLink.tc_connection_id == cid,
                ThreeCommasAccountLink.account_id == acc,
                ThreeCommasAccountLink.user_id == user_id,
            )
        )
        if link is None:
            return None
        return RepairTarget(
            cid,
            acc,
            link.account_name,
            link.market_code,
            vault.open(connection.credentials),
            connection_token(connection),
        )


ACTION = "tc_key_update"


def _action_target(target: RepairTarget, new_key: Credentials) -> str:
    """One money action per account and new key: the same key sent twice is one action. The key is
    named by a digest of its public half, never by the key itself."""
    digest = hashlib.sha256(new_key.api_key.encode()).hexdigest()[:16]
    return f"{target.tc_connection_id}:{target.account_id}:{digest}"


_SETTLED = {
    RepairOutcome.FIXED: ActionState.DONE,
    RepairOutcome.STILL_BROKEN: ActionState.DONE,  # 3Commas took the key; it just cannot use it
    RepairOutcome.UNAVAILABLE: ActionState.UNKNOWN,  # sent, no answer: ask before sending again
}


async def repair_account(
    sessions: Sessions,
    access: ThreeCommasAccess,
    target: RepairTarget,
    new_key: Credentials,
    *,
    user_id: int,
    now: datetime,
) -> RepairResult:
    """:func:`update_account_key` as a money action (safety's :mod:`~services.storage.money_actions`):
    claimed before it is sent, settled with its outcome and audited (outcome and masked key only).
    A repeat of an action in flight or already carried out sends nothing: it re-reads the account."""
    claim = await money_actions.claim(
        sessions, user_id=user_id, kind=ACTION, target=_action_target(target, new_key), now=now
    )
    action = claim.action
    if not claim.claimed and action.state is ActionState.UNKNOWN:

        async def ask() -> dict[str, Any] | None:
            try:
                account = await account_now(access, target.tc_credentials, target.account_id)
            except ThreeCommasError as error:
                raise Unverifiable(error.error) from error
            return {"api_key_invalid": False} if account is not None and not account.key_broken else None

        action = await money_actions.reconcile(sessions, action, now, ask)
        if action.state is ActionState.FAILED:
            claim = await money_actions.claim(
                sessions, user_id=user_id, kind=ACTION, target=action.target, now=now
            )
            action = claim.action
    if not claim.claimed:
        return await _as_it_is(access, target, new_key, in_flight=action.in_flight)
    await money_actions.mark_sent(sessions, action, now)
    result = await update_account_key(access, target.tc_credentials, target.account_id, new_key)
    async with sessions.begin() as session:
        await money_actions.settle(
            session,
            action,
            _SETTLED.get(result.outcome, ActionState.FAILED),
            now,
            result={"outcome": result.outcome.value},
            error=result.error or "",
        )
        audit.record(
            session,
            user_id,
            "tc_account_key_update",
            now,
            connection_id=target.tc_connection_id,
            account_id=target.account_id,
            outcome=result.outcome.value,
            key=result.key_hint,
            error=result.error,
        )
    return result


async def _as_it_is(
    access: ThreeCommasAccess, target: RepairTarget, new_key: Credentials, *, in_flight: bool
) -> RepairResult:
    """This key was already given to 3Commas (or is being given right now): say what 3Commas shows."""
    hint = mask(new_key.api_key)
    if in_flight:
        return RepairResult(RepairOutcome.IN_PROGRESS, key_hint=hint)
    try:
        account = await account_now(access, target.tc_credentials, target.account_id)
    except ThreeCommasError as error:
        return RepairResult(RepairOutcome.UNAVAILABLE, error=error.error, key_hint=hint)
    if account is None:
        return RepairResult(RepairOutcome.GONE, key_hint=hint)
    outcome = RepairOutcome.STILL_BROKEN if account.key_broken else RepairOutcome.FIXED
    return RepairResult(outcome, account, key_hint=hint)
