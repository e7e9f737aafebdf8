"""Messages that may carry a key, secret or passphrase: checked without echoing, then deleted."""

from __future__ import annotations

import re

from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

KEY_MAX = 256
# Keys and secrets are printable ASCII without spaces on every exchange; passphrases may hold spaces.
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")
_PASSPHRASE_CHARS = re.compile(r"[\x20-\x7e]+")


def key_problem(text: str | None, *, passphrase: bool = False) -> str | None:
    """Why ``text`` cannot be a key/secret/passphrase, in words for the user; None if it can.

    Checked before the value reaches any request header, and the words never quote it.
    """
    if not text or not text.strip():
        return _("Send it as a plain text message.")
    value = text.strip()
    if len(value) > KEY_MAX:
        return _("That is too long for an API key (at most {n} characters).").format(n=KEY_MAX)
    pattern = _PASSPHRASE_CHARS if passphrase else _KEY_CHARS
    if not pattern.fullmatch(value):
        return _("API keys are letters, digits and symbols only: no spaces, emoji or other characters.")
    return None


async def forget_secret_message(message: Message) -> None:
    """Delete a message that may hold a secret; if Telegram refuses, ask the user to do it."""
    try:
        await message.delete()
    except TelegramAPIError:
        await message.answer(_("I could not delete your message with the key: please delete it yourself."))
