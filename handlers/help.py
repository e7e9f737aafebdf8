"""/help: every command with one line each."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from bot.commands import command_lines

router = Router(name="help")


@router.message(Command("help"))
async def help_command(message: Message) -> None:
    lines = [f"/{name} — {description}" for name, description in command_lines()]
    await message.answer(_("<b>Commands</b>") + "\n" + "\n".join(lines))
