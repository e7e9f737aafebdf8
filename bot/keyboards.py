"""Buttons that more than one part of the Telegram side sends (handlers and notifications)."""

from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import RecreateAction, RecreateCb


def recreate_button(row_id: int, version: str) -> InlineKeyboardMarkup:
    """The button a deal_failed alert carries; the row is ``threecommas.recreate.store_failed_deal``'s."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text="♻️ " + _("Recreate…"), callback_data=RecreateCb(action=RecreateAction.SHOW, id=row_id, v=version)
    )
    return keyboard.as_markup()
