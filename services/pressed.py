"""The one check every button goes through: is the object it names still the user's, as it showed it?

A button carries a :class:`Pressed`: the kind of object, its id (and a second id where a button
names two things) and the version token it was drawn with (:mod:`services.storage.button_tokens`).
:func:`still_as_shown` reads the object now, in one short read and no network, and compares owner
and token. Missing, someone else's and changed all give the same False, so the answer cannot tell
whether another user's id exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.orders.listing import owned_listing
from services.storage.button_tokens import (
    checklist_token,
    connection_token,
    failed_deal_token,
    failed_deals_token,
    listed_order_token,
    mapping_token,
    same_version,
)
from services.storage.connections import owned_connection
from services.storage.db import Sessions
from services.storage.models import ListedOrder, ThreeCommasAccountLink
from services.threecommas.checklist import failed_since, owned_checklist
from services.threecommas.recreate import failed_deal


class Kind(StrEnum):
    CONNECTION = "connection"
    TC_ACCOUNT = "tc_account"  # a 3Commas connection (id) and one of its accounts (other)
    LISTING = "listing"
    LISTED_ORDER = "listed_order"
    FAILED_DEAL = "failed_deal"
    MAPPING = "mapping"  # a 3Commas account link (id) onto a connection (other; 0 = skip)
    CHECKLIST = "checklist"
    CHECKLIST_DEALS = "checklist_deals"  # the failed trades a checklist's "Recreate all" listed


@dataclass(frozen=True)
class Pressed:
    """What a pressed button names and the version it showed."""

    kind: Kind
    id: int
    token: str
    other: int = 0


Reader = Callable[[AsyncSession, int, Pressed], Awaitable[str | None]]


async def _connection(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    connection = await owned_connection(session, user_id, pressed.id)
    return None if connection is None else connection_token(connection)


async def _tc_account(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    connection = await owned_connection(session, user_id, pressed.id)
    linked = await session.scalar(
        select(ThreeCommasAccountLink.id).where(
            ThreeCommasAccountLink.tc_connection_id == pressed.id,
            ThreeCommasAccountLink.account_id == pressed.other,
            ThreeCommasAccountLink.user_id == user_id,
        )
    )
    return None if connection is None or linked is None else connection_token(connection)


async def _listing(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    listing = await owned_listing(session, user_id, pressed.id)
    return None if listing is None else listing.version


async def _listed_order(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    row = await session.get(ListedOrder, pressed.id)
    return listed_order_token(row) if row is not None and row.user_id == user_id else None


async def _failed_deal(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    row = await failed_deal(session, pressed.id, user_id)
    return None if row is None else failed_deal_token(row)


async def _mapping(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    link = await session.get(ThreeCommasAccountLink, pressed.id)
    if link is None or link.user_id != user_id:
        return None
    target = await owned_connection(session, user_id, pressed.other) if pressed.other else None
    if pressed.other and target is None:
        return None
    return mapping_token(link.id, link.account_id, target)


async def _checklist(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    checklist = await owned_checklist(session, pressed.id, user_id)
    return None if checklist is None else checklist_token(checklist)


async def _checklist_deals(session: AsyncSession, user_id: int, pressed: Pressed) -> str | None:
    checklist = await owned_checklist(session, pressed.id, user_id)
    return None if checklist is None else failed_deals_token(await failed_since(session, checklist))


READERS: dict[Kind, Reader] = {
    Kind.CONNECTION: _connection,
    Kind.TC_ACCOUNT: _tc_account,
    Kind.LISTING: _listing,
    Kind.LISTED_ORDER: _listed_order,
    Kind.FAILED_DEAL: _failed_deal,
    Kind.MAPPING: _mapping,
    Kind.CHECKLIST: _checklist,
    Kind.CHECKLIST_DEALS: _checklist_deals,
}


async def still_as_shown(sessions: Sessions, user_id: int, pressed: Pressed) -> bool:
    """True when the object is the user's and its token now is the one the button carries."""
    async with sessions() as session:
        now = await READERS[pressed.kind](session, user_id, pressed)
    return same_version(pressed.token, now)
