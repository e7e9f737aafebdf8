"""CallbackData factories.

Buttons carry short ids of stored rows only — never order ids, symbols or secrets — so every
payload stays far below Telegram's 64-byte limit and is re-checked against the database.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

# A stored row's id, in the range of the id columns (INTEGER on PostgreSQL). Forged data outside it
# fails to unpack, so no handler matches, instead of the database driver raising on the lookup.
RowId = Annotated[int, Field(ge=0, le=2**31 - 1)]


class LanguageCb(CallbackData, prefix="lang"):
    code: str


class StartLinkCb(CallbackData, prefix="golink"):
    pass


class ConnAction(StrEnum):
    REFRESH = "refresh"
    UPDATE = "update"
    REMOVE = "remove"
    REMOVE_CONFIRMED = "rm_yes"
    ORDERS = "orders"
    MUTE = "mute"


class ConnCb(CallbackData, prefix="c"):
    """An action on one connection."""

    action: ConnAction
    cid: RowId


class StatusPageCb(CallbackData, prefix="sp"):
    """A page of /status."""

    page: int


class ExchangeCb(CallbackData, prefix="lx"):
    """/link: the exchange chosen (ccxt ids are short)."""

    exchange: str


class ExchangePageCb(CallbackData, prefix="lxp"):
    """/link: a page of the "More…" exchange list; 0 is the short list of the big three."""

    page: int


class LinkStep(StrEnum):
    SKIP = "skip"  # the label
    CANCEL = "cancel"  # the wizard
    REPLACE = "replace"  # the new key goes into the user's failing connection of that exchange
    SEPARATE = "new"  # the new key becomes a connection of its own


class LinkStepCb(CallbackData, prefix="lxs"):
    """/link wizard buttons without a payload."""

    step: LinkStep


class OrdersAction(StrEnum):
    """What ``OrdersCb.id`` names depends on the action: a list for pages, refresh and "all"."""

    PAGE = "pg"  # list id
    REFRESH = "rf"  # list id
    CANCEL = "x"  # orphan row id
    ASK_UNKNOWN = "u"  # unknown row id
    CANCEL_UNKNOWN = "uy"  # unknown row id, confirmed
    ASK_ALL = "all"  # list id
    CANCEL_ALL = "ally"  # list id, confirmed


class OrdersCb(CallbackData, prefix="o"):
    """/orders: an action on a stored listing or one of its rows (see :class:`OrdersAction`)."""

    action: OrdersAction
    id: RowId
    page: int = 0


class RecreateAction(StrEnum):
    SHOW = "show"  # the exact parameters
    GO = "go"  # after confirmation


class RecreateCb(CallbackData, prefix="rc"):
    """Recreate failed deal row ``id``."""

    action: RecreateAction
    id: RowId


class TcMapCb(CallbackData, prefix="tcm"):
    """3Commas account link row ``link`` trades on exchange connection ``cid`` (0 = skip)."""

    link: RowId
    cid: RowId


class TcRepairAction(StrEnum):
    GO = "go"  # start the key wizard
    CHECK = "check"  # re-read the account after the user fixed it in 3Commas' web app
    LIST = "list"  # open the recovery checklist


class TcRepairCb(CallbackData, prefix="tcr"):
    """Repair 3Commas account ``acc`` (3Commas' own id) of 3Commas connection ``cid``."""

    action: TcRepairAction
    cid: RowId
    acc: int


class ChecklistAction(StrEnum):
    REFRESH = "rf"
    ASK_RECREATE = "ra"
    RECREATE = "ray"  # confirmed
    ASK_CANCEL = "co"
    CANCEL = "coy"  # confirmed; ``list`` names the listing whose orphans go
    OLD_KEY_DELETED = "old"


class ChecklistCb(CallbackData, prefix="rcl"):
    """Recovery checklist ``id`` (see :class:`ChecklistAction`)."""

    action: ChecklistAction
    id: RowId
    list: int = 0


class MuteCb(CallbackData, prefix="m"):
    """Mute one connection (cid > 0) or everything (cid = 0) for ``hours``; 0 hours unmutes."""

    cid: RowId
    hours: int


class HistoryPageCb(CallbackData, prefix="hp"):
    """A page of /history (0 = newest)."""

    page: int


class ForgetCb(CallbackData, prefix="forget"):
    """/forget: delete everything (confirm) or keep it."""

    confirm: bool
