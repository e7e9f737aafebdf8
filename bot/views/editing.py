"""Answering a button by redrawing the message it sits on."""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message


async def edit_in_place(
    query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Edit the pressed message; one Telegram no longer lets us touch gets a fresh message instead.

    Pressing a button whose page already shows the same content is not an error.
    """
    message = query.message
    if not isinstance(message, Message):
        await bot.send_message(query.from_user.id, text, reply_markup=markup)
        return
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise
