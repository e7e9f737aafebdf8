"""/help: every command with one line each."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from bot.commands import command_lines


async def help_command(message: Message) -> None:
    lines = [f"/{name} — {description}" for name, description in command_lines()]
    await message.answer(_("<b>Commands</b>") + "\n" + "\n".join(lines))


def build_router() -> Router:
    router = Router(name="help")
    router.message.register(help_command, Command("help"))
    return router
