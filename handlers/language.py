"""/language: pick the bot's language with a button; stored per user."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import LanguageCb
from bot.i18n import LANGUAGES
from services.storage.db import Sessions
from services.storage.models import User
from services.storage.users import save_language


async def choose_language(message: Message, user: User) -> None:
    keyboard = InlineKeyboardBuilder()
    for code, name in LANGUAGES.items():
        mark = "✓ " if code == user.language else ""
        keyboard.button(text=f"{mark}{name}", callback_data=LanguageCb(code=code))
    await message.answer(_("Choose your language:"), reply_markup=keyboard.as_markup())


async def language_chosen(
    query: CallbackQuery, callback_data: LanguageCb, sessions: Sessions, i18n: I18n, user: User
) -> None:
    await query.answer()
    await save_language(sessions, user.id, callback_data.code)
    with i18n.use_locale(callback_data.code):
        text = _("Language set: English.")
    if query.message:
        await query.message.answer(text)


def build_router() -> Router:
    router = Router(name="language")
    router.message.register(choose_language, Command("language"))
    router.callback_query.register(language_chosen, LanguageCb.filter(F.code.in_(LANGUAGES)))
    return router
