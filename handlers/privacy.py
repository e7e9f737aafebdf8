"""/export, /forget and /history: the user's control over what keysentry keeps about them."""

from __future__ import annotations

import json
from html import escape

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import ForgetCb
from bot.views.editing import edit_in_place
from services.storage import audit
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
    entries = await audit.history(sessions, user.id, limit=20)
    if not entries:
        await message.answer(_("No actions were taken on your behalf yet."))
        return
    lines = [
        f"{e.created_at:%Y-%m-%d %H:%M} · {escape(e.action)}"
        + (f" · #{e.connection_id}" if e.connection_id else "")
        + (f" · {escape(_detail(e.detail))}" if e.detail else "")
        for e in entries
    ]
    await message.answer(_("<b>Last actions taken for you</b>") + "\n" + "\n".join(lines))


def _detail(detail: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items())[:120]


def build_router() -> Router:
    router = Router(name="privacy")
    router.message.register(export, Command("export"))
    router.message.register(forget, Command("forget"))
    router.callback_query.register(forget_confirmed, ForgetCb.filter(F.confirm))
    router.callback_query.register(forget_cancelled, ForgetCb.filter(~F.confirm))
    router.message.register(history, Command("history"))
    return router
