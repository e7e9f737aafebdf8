"""/export, /forget and /history: the user's control over what keysentry keeps about them."""

from __future__ import annotations

import json

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import ForgetCb, HistoryPageCb
from bot.views.editing import edit_in_place
from bot.views.history import history_text
from services.monitoring.history import history_page
from services.storage.db import Sessions
from services.storage.models import User
from services.storage.user_data import export_user_data, forget_user


async def export(message: Message, sessions: Sessions, user: User) -> None:
    data = await export_user_data(sessions, user.id)
    document = BufferedInputFile(
        json.dumps(data, ensure_ascii=False, indent=2).encode(), filename="keysentry-export.json"
    )
    await message.answer_document(
        document, caption=_("Everything keysentry stores about you, without secrets.")
    )


async def forget(message: Message) -> None:
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Delete everything"), callback_data=ForgetCb(confirm=True))
    keyboard.button(text=_("Keep my data"), callback_data=ForgetCb(confirm=False))
    await message.answer(
        _(
            "This deletes all your connections and their encrypted keys, incidents, pending messages "
            "and history. Monitoring stops at once. Continue?"
        ),
        reply_markup=keyboard.as_markup(),
    )


async def forget_confirmed(query: CallbackQuery, sessions: Sessions, user: User, bot: Bot) -> None:
    await query.answer()
    removed = await forget_user(sessions, user.id)
    await edit_in_place(
        query,
        bot,
        ngettext(
            "Done: your data is deleted ({n} connection). Send /start to begin again.",
            "Done: your data is deleted ({n} connections). Send /start to begin again.",
            removed,
        ).format(n=removed),
    )


async def forget_cancelled(query: CallbackQuery, bot: Bot) -> None:
    await query.answer()
    await edit_in_place(query, bot, _("Nothing was deleted."))


async def history(message: Message, sessions: Sessions, user: User) -> None:
    text, markup = history_text(await history_page(sessions, user.id, 0))
    await message.answer(text, reply_markup=markup)


async def history_turned(
    query: CallbackQuery, callback_data: HistoryPageCb, sessions: Sessions, user: User, bot: Bot
) -> None:
    """Prev/Next: the page is read again for whoever pressed (the buttons carry a page number of the
    presser's own history, so they name no object and ``ButtonCheck`` lets them through)."""
    await query.answer()
    text, markup = history_text(await history_page(sessions, user.id, callback_data.page))
    await edit_in_place(query, bot, text, markup)


def build_router() -> Router:
    router = Router(name="privacy")
    router.message.register(export, Command("export"))
    router.message.register(forget, Command("forget"))
    router.callback_query.register(forget_confirmed, ForgetCb.filter(F.confirm))
    router.callback_query.register(forget_cancelled, ForgetCb.filter(~F.confirm))
    router.message.register(history, Command("history"))
    router.callback_query.register(history_turned, HistoryPageCb.filter())
    return router
