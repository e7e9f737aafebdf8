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
    await edit_or_send(
        bot, query.from_user.id, message if isinstance(message, Message) else None, text, markup
    )


async def edit_or_send(
    bot: Bot, chat_id: int, message: Message | None, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Edit ``message`` to show ``text``, or send it to ``chat_id`` when there is none to edit.
    Showing what the message already shows is not an error."""
    if message is None:
        await bot.send_message(chat_id, text, reply_markup=markup)
        return
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as error:
        if "not modified" not in error.message:
            raise
