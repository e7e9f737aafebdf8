"""/start: what keysentry does, in three lines, and the next step."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import CommandStart
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import StartLinkCb
from services.storage.db import Sessions
from services.storage.models import User
from services.storage.users import unblock


async def start(message: Message, sessions: Sessions, user: User) -> None:
    if user.blocked:
        await unblock(sessions, user.id)
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("🔑 Link an exchange key"), callback_data=StartLinkCb())
    await message.answer(
        _(
            "<b>keysentry</b> watches your exchange API keys and trading-bot accounts.\n"
            "When a key is revoked, expires or loses a permission, you hear it here at once, "
            "with what to do.\n"
            "It also finds open orders of finished deals that lock your funds."
        )
        + "\n\n"
        + _("Start by linking a key: /link. Every command: /help."),
        reply_markup=keyboard.as_markup(),
    )


def build_router() -> Router:
    router = Router(name="start")
    router.message.register(start, CommandStart())
    return router
