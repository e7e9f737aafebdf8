"""The recovery checklist after a 3Commas account's key incident: what is left, from live data.

3Commas' own guide after a key reset: update the key, recreate the deals and SmartTrades that
failed, delete the orders finished deals left open (they lock funds), delete the old key on the
exchange. Each item here is computed afresh from what 3Commas and the exchange show now, never
from what keysentry did, so the message the bot keeps editing cannot claim a step that did not
happen. Only "old key deleted" is the user's word: no API shows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.orders.cancel import CancelResult, cancel_all_orphans
from services.orders.listing import Deps, Listing, row_lock
from services.orders.listing_gate import COOLDOWN, listing_ticket
from services.storage.button_tokens import checklist_token, failed_deals_token
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import (
    FailedDeal,
    Incident,
    RecoveryChecklist,
    ThreeCommasAccountLink,
    User,
)
from services.threecommas.errors import ThreeCommasError
from services.threecommas.recreate import RecreateResult, recreate_failed_deal
from services.threecommas.repair import account_now


@dataclass(frozen=True)
class ChecklistState:
    """One rendering's worth of facts. ``key_ok`` None: 3Commas did not answer just now;
    ``orphans`` None: the exchange side could not be listed (no mapped connection, or it failed)."""

    checklist_id: int
    account_id: int
    account_name: str
    market_code: str
    key_ok: bool | None
    pending: Sequence[FailedDeal]
    recreated: int
    orphans: int | None
    locked: dict[str, Decimal]
    list_id: int | None
    old_key_deleted: bool
    done_at: datetime | None
    version: str = ""
    """Version tokens its buttons carry: the checklist, the trades "Recreate all" names, the listing."""
    deals_version: str = ""
    list_version: str = ""

    @property
    def pending_deals(self) -> int:
        return sum(1 for row in self.pending if row.kind != "smart_trade")

    @property
    def pending_smart_trades(self) -> int:
        return sum(1 for row in self.pending if row.kind == "smart_trade")

    @property
    def complete(self) -> bool:
        return bool(self.key_ok) and not self.pending and self.orphans == 0 and self.old_key_deleted


async def open_checklist(
    session: AsyncSession,
    *,
    user_id: int,
    tc_connection_id: int,
    account_id: int,
    since: datetime,
    now: datetime,
) -> RecoveryChecklist:
    """The account's open checklist, or the one finished since ``since`` (the same incident: asked
    again, it shows its ticks and its "done", and is not done a second time), or a new one for the
    incident that began at ``since``."""
    existing = await session.scalar(
        select(RecoveryChecklist)
        .where(
            RecoveryChecklist.user_id == user_id,
            RecoveryChecklist.tc_connection_id == tc_connection_id,
            RecoveryChecklist.account_id == account_id,
            or_(RecoveryChecklist.done_at.is_(None), RecoveryChecklist.done_at >= since),
        )
        .order_by(RecoveryChecklist.id.desc())
    )
    if existing is not None:
        if existing.done_at is None:
            existing.since = min(existing.since, since)
        return existing
    checklist = RecoveryChecklist(
        user_id=user_id, tc_connection_id=tc_connection_id, account_id=account_id, since=since, created_at=now
    )
    session.add(checklist)
    await session.flush()
    return checklist


RECENT_WITHOUT_INCIDENT = timedelta(days=1)
"""How far back "failed since the incident" looks when the incident already closed."""


async def start_checklist(deps: Deps, *, user_id: int, tc_connection_id: int, account_id: int) -> int:
    """Open (or reuse) the checklist of the account's key incident; "failed since" counts from the
    incident's start."""
    now = deps.clock.now()
    async with deps.sessions.begin() as session:
        incident = await session.scalar(
            select(Incident).where(
                Incident.connection_id == tc_connection_id, Incident.check_kind == f"tc_account:{account_id}"
            )
        )
        began = incident.pending_since or incident.failing_since if incident else None
        checklist = await open_checklist(
            session,
            user_id=user_id,
            tc_connection_id=tc_connection_id,
            account_id=account_id,
            since=began or now - RECENT_WITHOUT_INCIDENT,
            now=now,
        )
        return checklist.id


def text_digest(text: str) -> str:
    """What ``shown_digest`` stores of a checklist message's text."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ChecklistMessage:
    """Where the checklist message is, and the digest of the text last put on it (None: unknown)."""

    chat_id: int
    message_id: int
    shown_digest: str | None

    def shows(self, text: str) -> bool:
        return self.shown_digest == text_digest(text)


async def checklist_message(deps: Deps, checklist_id: int, user_id: int) -> ChecklistMessage | None:
    """Where the checklist message is, if it was sent and is the user's."""
    async with deps.sessions() as session:
        checklist = await owned_checklist(session, checklist_id, user_id)
        if checklist is None or checklist.chat_id is None or checklist.message_id is None:
            return None
        return ChecklistMessage(checklist.chat_id, checklist.message_id, checklist.shown_digest)


@dataclass(frozen=True)
class ShownChecklist:
    """An open checklist whose message is in the user's chat: one the worker keeps current."""

    id: int
    user_id: int
    language: str


CLAIM_BATCH = 10
"""Checklists one claim takes: a worker redraws them before it claims more, so the others share
the rest (each costs a 3Commas read, and now and then a listing of the exchange)."""


async def claim_due_checklists(
    sessions: Sessions,
    now: datetime,
    every: timedelta,
    *,
    allowed_user_ids: Collection[int] = (),
    limit: int = CLAIM_BATCH,
) -> list[ShownChecklist]:
    """Take up to ``limit`` shown checklists whose background redraw is due, for this worker alone.

    Shown: open (not done), with a message, of a user who has not blocked the bot (and is allowed,
    when ``allowed_user_ids`` is set). Due: ``refresh_due_at`` NULL or past. One compare-and-set
    UPDATE moves ``refresh_due_at`` one ``every`` ahead for the rows it takes, so workers claiming at
    once get disjoint sets, and a row whose worker died is due again after ``every``.
    """
    due = or_(RecoveryChecklist.refresh_due_at.is_(None), RecoveryChecklist.refresh_due_at <= now)
    candidates = (
        select(RecoveryChecklist.id)
        .join(User, User.id == RecoveryChecklist.user_id)
        .where(
            RecoveryChecklist.done_at.is_(None),
            RecoveryChecklist.message_id.is_not(None),
            User.blocked.is_(False),
            due,
        )
        .order_by(RecoveryChecklist.refresh_due_at.asc().nulls_first(), RecoveryChecklist.id)
        .limit(limit)
    )
    if allowed_user_ids:
        candidates = candidates.where(User.id.in_(allowed_user_ids))
    if sessions.kw["bind"].dialect.name == "postgresql":
        candidates = candidates.with_for_update(of=RecoveryChecklist, skip_locked=True)
    async with sessions.begin() as session:
        ids = list(
            await session.scalars(
                update(RecoveryChecklist)
                .where(RecoveryChecklist.id.in_(candidates.scalar_subquery()), due)
                .values(refresh_due_at=now + every)
                .returning(RecoveryChecklist.id)
                .execution_options(synchronize_session=False)
            )
        )
        if not ids:
            return []
        rows = await session.execute(
            select(RecoveryChecklist.id, RecoveryChecklist.user_id, User.language)
            .join(User, User.id == RecoveryChecklist.user_id)
            .where(RecoveryChecklist.id.in_(ids))
            .order_by(RecoveryChecklist.id)
        )
        return [ShownChecklist(*row) for row in rows.all()]


async def owned_checklist(session: AsyncSession, checklist_id: int, user_id: int) -> RecoveryChecklist | None:
    checklist = await session.get(RecoveryChecklist, checklist_id)
    return checklist if checklist is not None and checklist.user_id == user_id else None


async def failed_since(session: AsyncSession, checklist: RecoveryChecklist) -> list[FailedDeal]:
    """The failed deals and SmartTrades of the checklist's account since its incident began."""
    rows = await session.scalars(
        select(FailedDeal)
        .where(
            FailedDeal.tc_connection_id == checklist.tc_connection_id,
            FailedDeal.created_at >= checklist.since,
        )
        .order_by(FailedDeal.id)
    )
    # A SmartTrade plan names its account; a DCA plan names its bot, which the account runs.
    return [
        row
        for row in rows
        if row.kind != "smart_trade"
        or int(row.params.get("body", {}).get("account_id", 0)) == checklist.account_id
    ]


async def checklist_state(
    deps: Deps, checklist_id: int, user_id: int, *, listed_within: timedelta | None = None
) -> ChecklistState | None:
    """Everything the checklist message shows, read now (one 3Commas call, one listing).

    ``listed_within``: take the orders from the connection's newest stored listing when it is at
    most that old (a tap's listing, and what was cancelled from it, included) instead of listing
    the exchange again: a listing weighs ~100 on Binance, the key and recreate lines cost nothing.
    """
    async with deps.sessions() as session:
        checklist = await owned_checklist(session, checklist_id, user_id)
        if checklist is None:
            return None
        tc = await owned_connection(session, user_id, checklist.tc_connection_id)
        if tc is None:
            return None
        link = await session.scalar(
            select(ThreeCommasAccountLink).where(
                ThreeCommasAccountLink.tc_connection_id == checklist.tc_connection_id,
                ThreeCommasAccountLink.account_id == checklist.account_id,
            )
        )
        failed = await failed_since(session, checklist)
        credentials = deps.vault.open(tc.credentials)
        exchange_connection = link.exchange_connection_id if link else None
        name, market = (link.account_name, link.market_code) if link else ("", "")
        facts = (checklist.id, checklist.account_id, checklist.old_key_deleted, checklist.done_at)
        versions = checklist_token(checklist), failed_deals_token(failed)
    try:
        account = await account_now(deps.threecommas, credentials, facts[1])
        key_ok: bool | None = account is not None and not account.key_broken
    except ThreeCommasError:
        key_ok = None
    orphans, list_id, list_version = None, None, ""
    locked: dict[str, Decimal] = {}
    if exchange_connection is not None:
        # Through the gate: a listing within the cooldown (a tap's) or ``listed_within`` (the
        # worker's redraw) already shows what our own cancels did to it; a running one is joined.
        cooldown = COOLDOWN if listed_within is None else listed_within
        ticket = await listing_ticket(deps, user_id, exchange_connection, cooldown=cooldown)
        listing = await ticket.result()
        if isinstance(listing, Listing):
            rows = listing.orphan_rows
            orphans, list_id, list_version = len(rows), listing.list_id, listing.version
            for row in rows:
                lock = row_lock(row)
                if lock.amount is not None:
                    locked[lock.currency] = locked.get(lock.currency, Decimal(0)) + lock.amount
    return ChecklistState(
        checklist_id=facts[0],
        account_id=facts[1],
        account_name=name,
        market_code=market,
        key_ok=key_ok,
        pending=[row for row in failed if row.recreated_at is None],
        recreated=sum(1 for row in failed if row.recreated_at is not None),
        orphans=orphans,
        locked=locked,
        list_id=list_id,
        old_key_deleted=facts[2],
        done_at=facts[3],
        version=versions[0],
        deals_version=versions[1],
        list_version=list_version,
    )


async def recreate_all(deps: Deps, checklist_id: int, user_id: int) -> list[RecreateResult]:
    """Recreate every failed deal and SmartTrade still pending: one confirmation for all, each
    row claimed before its request, so a second tap (or a retry) never creates a trade twice."""
    async with deps.sessions() as session:
        checklist = await owned_checklist(session, checklist_id, user_id)
        rows = [row.id for row in await failed_since(session, checklist)] if checklist else []
    return [
        await recreate_failed_deal(
            deps.sessions, deps.vault, deps.threecommas, row_id=row_id, user_id=user_id, now=deps.clock.now()
        )
        for row_id in rows
    ]


async def cancel_orphans(deps: Deps, user_id: int, list_id: int) -> list[CancelResult]:
    """Cancel the orphans of the checklist's listing; each one is re-verified at cancel time."""
    return await cancel_all_orphans(deps, user_id, list_id)


async def tick_old_key(deps: Deps, checklist_id: int, user_id: int) -> bool:
    """The user says the old key is deleted on the exchange; False when it is not theirs."""
    async with deps.sessions.begin() as session:
        checklist = await owned_checklist(session, checklist_id, user_id)
        if checklist is None:
            return False
        checklist.old_key_deleted = True
        return True


async def claim_done(deps: Deps, checklist_id: int, now: datetime) -> bool:
    """True exactly once: the first time the checklist is seen complete (it then says so)."""
    async with deps.sessions.begin() as session:
        claimed = await session.execute(
            update(RecoveryChecklist)
            .where(RecoveryChecklist.id == checklist_id, RecoveryChecklist.done_at.is_(None))
            .values(done_at=now)
        )
        return getattr(claimed, "rowcount", 0) == 1


async def remember_message(deps: Deps, checklist_id: int, chat_id: int, message_id: int, text: str) -> None:
    """The checklist's message is now this one, showing ``text``."""
    async with deps.sessions.begin() as session:
        checklist = await session.get(RecoveryChecklist, checklist_id)
        if checklist is not None:
            checklist.chat_id, checklist.message_id = chat_id, message_id
            checklist.shown_digest = text_digest(text)


async def remember_shown(deps: Deps, checklist_id: int, message_id: int, text: str) -> None:
    """The checklist message ``message_id`` shows ``text`` now (unless another message replaced it)."""
    async with deps.sessions.begin() as session:
        await session.execute(
            update(RecoveryChecklist)
            .where(RecoveryChecklist.id == checklist_id, RecoveryChecklist.message_id == message_id)
            .values(shown_digest=text_digest(text))
        )
