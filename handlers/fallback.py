"""Whatever no other handler took, in a private chat: one line pointing at /help.

Never echoes the text back: it may be a secret pasted at the wrong moment (a secret's message
is deleted by the link flow, not here), and repeating 5,000 characters helps nobody.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _


async def unknown_input(message: Message) -> None:
    if (message.text or "").startswith("/"):
        await message.answer(_("I don't know that command. Every command: /help."))
    else:
        await message.answer(_("I only understand commands and buttons. Every command: /help."))


async def ignore_edit(message: Message) -> None:
    """An edit is never input: the wizard waits for a new message. Edits are still received so the
    secret guard (bot.views.secrets) can delete one that adds a key to the chat."""


def build_router() -> Router:
    router = Router(name="fallback")
    router.message.register(unknown_input, F.chat.type == ChatType.PRIVATE)
    router.edited_message.register(ignore_edit)
    return router
