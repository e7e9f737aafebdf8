"""CallbackData factories.

Buttons carry short ids of stored rows only — never order ids, symbols or secrets — so every
payload stays far below Telegram's 64-byte limit and is re-checked against the database.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class LanguageCb(CallbackData, prefix="lang"):
    code: str


class StartLinkCb(CallbackData, prefix="golink"):
    pass


class ConnCb(CallbackData, prefix="c"):
    """An action on one connection: refresh, update, remove, rm_yes, orders, mute."""

    action: str
    cid: int


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
