"""CallbackData factories.

Buttons carry short ids of stored rows only — never order ids, symbols or secrets — so every
payload stays far below Telegram's 64-byte limit and is re-checked against the database.
"""

from __future__ import annotations

from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from pydantic import Field

# A stored row's id, in the range of the id columns (INTEGER on PostgreSQL). Forged data outside it
# fails to unpack, so no handler matches, instead of the database driver raising on the lookup.
RowId = Annotated[int, Field(ge=0, le=2**31 - 1)]


class LanguageCb(CallbackData, prefix="lang"):
    code: str


class StartLinkCb(CallbackData, prefix="golink"):
    pass


class ConnCb(CallbackData, prefix="c"):
    """An action on one connection: refresh, update, remove, rm_yes, orders, mute."""

    action: str
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


class LinkStepCb(CallbackData, prefix="lxs"):
    """/link wizard buttons without a payload: ``skip`` the label, ``cancel`` the wizard."""

    step: str


class OrdersCb(CallbackData, prefix="o"):
    """/orders: ``pg`` page / ``rf`` refresh of list ``id``; ``x`` cancel orphan row ``id``;
    ``u``/``uy`` ask/confirm cancelling an unknown row; ``all``/``ally`` ask/confirm all orphans
    of list ``id``."""

    action: str
    id: RowId
    page: int = 0


class RecreateCb(CallbackData, prefix="rc"):
    """Recreate failed deal row ``id``: ``show`` the exact parameters, ``go`` after confirmation."""

    action: str
    id: RowId


class TcMapCb(CallbackData, prefix="tcm"):
    """3Commas account link row ``link`` trades on exchange connection ``cid`` (0 = skip)."""

    link: RowId
    cid: RowId


class MuteCb(CallbackData, prefix="m"):
    """Mute one connection (cid > 0) or everything (cid = 0) for ``hours``; 0 hours unmutes."""

    cid: RowId
    hours: int


def recreate_button(row_id: int) -> InlineKeyboardMarkup:
    """The button a deal_failed alert carries; the row is ``threecommas.recreate.store_failed_deal``'s."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text="♻️ " + _("Recreate…"), callback_data=RecreateCb(action="show", id=row_id))
    return keyboard.as_markup()
