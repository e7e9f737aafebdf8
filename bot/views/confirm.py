"""A yes/no question's buttons: the action (carrying the token of what the question showed) and a
way back that changes nothing. /orders, /status and the recovery checklist ask alike."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder


def confirmation(
    yes_text: str, yes: CallbackData, back_text: str, back: CallbackData
) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=yes_text, callback_data=yes)
    keyboard.button(text=back_text, callback_data=back)
    return keyboard.as_markup()
