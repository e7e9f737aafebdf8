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
