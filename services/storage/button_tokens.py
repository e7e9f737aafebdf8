"""Version tokens: what a button showed, in eight characters.

A button names a stored object by id and carries the token of that object as it was drawn. At
press time the object is read again (:mod:`services.pressed`) and its token computed anew: a
different token means the object changed under the same id (a new key in the connection, other
orders in a listing, other parameters in a failed deal), so the button is out of date and does
nothing. Ids are never reused (migration 0004), so a token only has to tell versions of one object
apart.

Every function here is pure: it hashes the fields the button's message showed, never
``updated_at``-like columns the poller rewrites on every check (an alert's Refresh must keep
working after the next check). A connection's fingerprint is its sealed credentials blob, which
holds a random IV, so a token cannot be computed without the row and a re-entered key is a new
version too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from services.storage.models import FailedDeal, ListedOrder, RecoveryChecklist

TOKEN_LENGTH = 8
"""48 bits in base64url: far below the 64 bytes of callback data, beyond any guessing by taps."""

TOKEN_PATTERN = r"^[A-Za-z0-9_-]{0,16}$"
"""What a token in callback data may look like; anything else fails to unpack."""


def version_token(*parts: object) -> str:
    """The token of an object described by ``parts`` (their ``repr``, so ``1`` and ``"1"`` differ)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8, person=b"keysentry-btn").digest()
    return base64.urlsafe_b64encode(digest).decode()[:TOKEN_LENGTH]


def same_version(shown: str, now: str | None) -> bool:
    """Whether the token a button carries is the object's token now (None: the object is gone)."""
    return now is not None and hmac.compare_digest(shown.encode(), now.encode())


class ConnectionFields(Protocol):
    """What a connection's buttons show: the row, or the poller's claimed copy of it."""

    @property
    def id(self) -> int: ...
    @property
    def exchange(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def credentials(self) -> bytes: ...


def connection_token(connection: ConnectionFields) -> str:
    """Exchange, label and key: a new key (even the same one entered again) is a new version."""
    return version_token("conn", connection.id, connection.exchange, connection.label, connection.credentials)


def listed_order_token(row: ListedOrder) -> str:
    """The order a Cancel button names: exchange order id, market, side, amount and price.

    Its outcome is left out: a second tap on Cancel reports what the first one did.
    """
    return version_token(
        "order", row.id, row.connection_id, row.exchange_order_id, row.symbol, row.side, row.amount, row.price
    )


def listing_token(list_id: int, connection_id: int, listed_at: datetime, rows: Iterable[ListedOrder]) -> str:
    """A stored /orders listing: when it was made and every order in it."""
    return version_token(
        "list", list_id, connection_id, listed_at.isoformat(), *(listed_order_token(r) for r in rows)
    )


def failed_deal_token(row: FailedDeal) -> str:
    """A failed deal's Recreate buttons: 3Commas' id and the exact parameters that would be sent."""
    return version_token("deal", row.id, row.tc_connection_id, row.kind, row.tc_id, _canonical(row.params))


def failed_deals_token(rows: Iterable[FailedDeal]) -> str:
    """ "Recreate all": the set of trades the confirmation listed, each in its version."""
    return version_token("deals", *sorted(failed_deal_token(r) for r in rows))


def mapping_token(link_id: int, account_id: int, target: ConnectionFields | None) -> str:
    """ "3Commas account X is connection Y": the account link and the connection offered (None: Skip)."""
    return version_token("map", link_id, account_id, None if target is None else connection_token(target))


def checklist_token(checklist: RecoveryChecklist) -> str:
    """A recovery checklist: which 3Commas account of which 3Commas key it is about."""
    return version_token("checklist", checklist.id, checklist.tc_connection_id, checklist.account_id)


def _canonical(value: object) -> object:
    """A JSON value with its dicts in key order, so equal parameters always hash alike."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value
