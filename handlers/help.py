"""/help: every command with one line each."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from bot.commands import command_lines
from bot.settings import Settings
from bot.texts import egress_line


async def help_command(message: Message, settings: Settings) -> None:
    lines = [f"/{name} — {description}" for name, description in command_lines()]
    text = _("<b>Commands</b>") + "\n" + "\n".join(lines)
    if settings.egress_ips:
        text += "\n\n" + egress_line(settings.egress_ips)
    await message.answer(text)


def build_router() -> Router:
    router = Router(name="help")
    router.message.register(help_command, Command("help"))
    return router
