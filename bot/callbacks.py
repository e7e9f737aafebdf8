"""CallbackData factories.

Buttons carry short ids of stored rows only — never order ids, symbols or secrets — so every
payload stays far below Telegram's 64-byte limit. A button that names an object also carries
``v``, the object's version token as it was drawn (:mod:`services.storage.button_tokens`), and
says so through ``pressed()``: ``bot.middlewares.ButtonCheck`` re-reads the object before any
handler runs and answers "out of date" when it is gone, someone else's or changed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Protocol, runtime_checkable

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

from services.pressed import Kind, Pressed
from services.storage.button_tokens import TOKEN_PATTERN

# A stored row's id, in the range of the id columns (INTEGER on PostgreSQL). Forged data outside it
# fails to unpack, so no handler matches, instead of the database driver raising on the lookup.
RowId = Annotated[int, Field(ge=0, le=2**31 - 1)]
# A version token; forged data of another shape fails to unpack like an out-of-range id.
Token = Annotated[str, Field(pattern=TOKEN_PATTERN)]


@runtime_checkable
class NamesObject(Protocol):
    """A button that names a stored object: checked before its handler runs."""

    RESEND: ClassVar[str]

    def pressed(self) -> Pressed | None: ...


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

    RESEND: ClassVar[str] = "/status"  # what to send for a fresh copy of an out-of-date button

    action: ConnAction
    cid: RowId
    v: Token

    def pressed(self) -> Pressed:
        return Pressed(Kind.CONNECTION, self.cid, self.v)


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

    RESEND: ClassVar[str] = "/orders"

    action: OrdersAction
    id: RowId
    page: int
    v: Token

    def pressed(self) -> Pressed:
        rows = {OrdersAction.CANCEL, OrdersAction.ASK_UNKNOWN, OrdersAction.CANCEL_UNKNOWN}
        return Pressed(Kind.LISTED_ORDER if self.action in rows else Kind.LISTING, self.id, self.v)


class RecreateAction(StrEnum):
    SHOW = "show"  # the exact parameters
    GO = "go"  # after confirmation


class RecreateCb(CallbackData, prefix="rc"):
    """Recreate failed deal row ``id``."""

    RESEND: ClassVar[str] = "/status"

    action: RecreateAction
    id: RowId
    v: Token

    def pressed(self) -> Pressed:
        return Pressed(Kind.FAILED_DEAL, self.id, self.v)


class TcMapCb(CallbackData, prefix="tcm"):
    """3Commas account link row ``link`` trades on exchange connection ``cid`` (0 = skip)."""

    RESEND: ClassVar[str] = "/link3c"

    link: RowId
    cid: RowId
    v: Token

    def pressed(self) -> Pressed:
        return Pressed(Kind.MAPPING, self.link, self.v, other=self.cid)


class TcRepairAction(StrEnum):
    GO = "go"  # start the key wizard
    CHECK = "check"  # re-read the account after the user fixed it in 3Commas' web app
    LIST = "list"  # open the recovery checklist


class TcRepairCb(CallbackData, prefix="tcr"):
    """Repair 3Commas account ``acc`` (3Commas' own id) of 3Commas connection ``cid``."""

    RESEND: ClassVar[str] = "/status"

    action: TcRepairAction
    cid: RowId
    acc: int
    v: Token

    def pressed(self) -> Pressed:
        return Pressed(Kind.TC_ACCOUNT, self.cid, self.v, other=self.acc)


class ChecklistAction(StrEnum):
    REFRESH = "rf"
    ASK_RECREATE = "ra"
    RECREATE = "ray"  # confirmed
    ASK_CANCEL = "co"
    CANCEL = "coy"  # confirmed; ``list`` names the listing whose orphans go
    OLD_KEY_DELETED = "old"


class ChecklistCb(CallbackData, prefix="rcl"):
    """Recovery checklist ``id`` (see :class:`ChecklistAction`). ``v`` is the checklist's token, but
    the trades' for Recreate (what the confirmation listed) and the listing's for Cancel."""

    RESEND: ClassVar[str] = "/status"

    action: ChecklistAction
    id: RowId
    list: RowId = 0
    v: Token

    def pressed(self) -> Pressed:
        if self.action is ChecklistAction.RECREATE:
            return Pressed(Kind.CHECKLIST_DEALS, self.id, self.v)
        if self.action is ChecklistAction.CANCEL:
            return Pressed(Kind.LISTING, self.list, self.v)
        return Pressed(Kind.CHECKLIST, self.id, self.v)


class MuteCb(CallbackData, prefix="m"):
    """Mute one connection (cid > 0) or everything (cid = 0) for ``hours``; 0 hours unmutes."""

    RESEND: ClassVar[str] = "/mute"

    cid: RowId
    hours: int
    v: Token = ""

    def pressed(self) -> Pressed | None:
        """Muting everything names no object; one connection is checked like any of its buttons."""
        return Pressed(Kind.CONNECTION, self.cid, self.v) if self.cid else None


class HistoryPageCb(CallbackData, prefix="hp"):
    """A page of /history (0 = newest)."""

    page: int


class ForgetCb(CallbackData, prefix="forget"):
    """/forget: delete everything (confirm) or keep it."""

    confirm: bool
