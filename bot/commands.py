"""The command menu: one list drives /help and Telegram's command menu in every language."""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeAllPrivateChats
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import lazy_gettext as __

from bot.i18n import LANGUAGES

COMMANDS = (
    ("start", __("what keysentry does and how to begin")),
    ("help", __("every command in one line each")),
    ("language", __("choose the language of the bot")),
    ("link", __("link an exchange API key, step by step")),
    ("status", __("all your connections: health, balance, last check")),
    ("cancel", __("leave the current step")),
    ("orders", __("open orders, what they lock, and cancelling orphans")),
    ("link3c", __("link a 3Commas API key and map its accounts")),
    ("mute", __("pause alerts for a connection or for everything")),
    ("history", __("the last 20 actions taken for you")),
    ("export", __("download what keysentry stores about you")),
    ("forget", __("delete all your data from keysentry")),
)


_NAMES = frozenset(name for name, _ in COMMANDS)


def is_known_command(text: str | None) -> bool:
    """Whether ``text`` starts with one of our commands (``/cancel``, ``/status@bot ...``).

    A wizard waiting for a secret takes everything else, since a base64 secret may start with "/".
    """
    if not text or not text.startswith("/"):
        return False
    name = text[1:].split(maxsplit=1)[0] if len(text) > 1 else ""
    return name.split("@", 1)[0].lower() in _NAMES


def command_lines() -> list[tuple[str, str]]:
    """(command, description) in the current locale."""
    return [(name, str(description)) for name, description in COMMANDS]


async def register_commands(bot: Bot, i18n: I18n) -> None:
    """Set the menu for private chats in each shipped language, English also as the default."""
    scope = BotCommandScopeAllPrivateChats()
    for code in LANGUAGES:
        with i18n.context(), i18n.use_locale(code):
            commands = [BotCommand(command=name, description=text) for name, text in command_lines()]
        await bot.set_my_commands(commands, scope=scope, language_code=code)
        if code == i18n.default_locale:
            await bot.set_my_commands(commands, scope=scope)
