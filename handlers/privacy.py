"""/export, /forget and /history: the user's control over what keysentry keeps about them."""

from __future__ import annotations

import json
from html import escape

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.context import AppContext
from services.storage import audit
from services.storage.models import User
from services.storage.user_data import export_user, forget_user

router = Router(name="privacy")


class ForgetCb(CallbackData, prefix="forget"):
    confirm: bool


@router.message(Command("export"))
async def export(message: Message, app: AppContext, user: User) -> None:
    async with app.sessions() as session:
        data = await export_user(session, user.id)
    document = BufferedInputFile(
        json.dumps(data, ensure_ascii=False, indent=2).encode(), filename="keysentry-export.json"
    )
    await message.answer_document(
        document, caption=_("Everything keysentry stores about you, without secrets.")
    )


@router.message(Command("forget"))
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


@router.callback_query(ForgetCb.filter(F.confirm))
async def forget_confirmed(query: CallbackQuery, app: AppContext, user: User) -> None:
    async with app.sessions.begin() as session:
        removed = await forget_user(session, user.id)
    await query.answer()
    if query.message:
        await query.message.edit_text(
            _("Done: your data is deleted ({n} connections). Send /start to begin again.").format(n=removed)
        )


@router.callback_query(ForgetCb.filter(~F.confirm))
async def forget_cancelled(query: CallbackQuery) -> None:
    await query.answer()
    if query.message:
        await query.message.edit_text(_("Nothing was deleted."))


@router.message(Command("history"))
async def history(message: Message, app: AppContext, user: User) -> None:
    async with app.sessions() as session:
        entries = await audit.recent(session, user.id, limit=20)
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
