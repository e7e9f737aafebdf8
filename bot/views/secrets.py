"""Messages that may carry a key, secret or passphrase: checked without echoing, then deleted.

Both key wizards (/link and Update API key, /link3c) collect credentials with
:func:`take_secret_part`: one message per part, deleted on arrival, the parts so far kept in the
wizard data only as one vault-sealed blob.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.context import FSMContext
from aiogram.types import Message, TelegramObject
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext

from bot.views.html import Html, html
from services.core.vault import Credentials, Vault, carries_secret
from services.storage.sealed import SEALED_FIELD
from services.threecommas.client import is_rsa_secret, load_rsa_key

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
        return ngettext(
            "That is too long for an API key (at most {n} character).",
            "That is too long for an API key (at most {n} characters).",
            KEY_MAX,
        ).format(n=KEY_MAX)
    pattern = _PASSPHRASE_CHARS if passphrase else _KEY_CHARS
    if not pattern.fullmatch(value):
        return _("API keys are letters, digits and symbols only: no spaces, emoji or other characters.")
    return None


# Messages deleted while the current update is handled, so the guard never deletes one twice.
_forgotten: ContextVar[set[tuple[int, int]] | None] = ContextVar("forgotten_messages", default=None)


async def forget_secret_message(message: Message) -> None:
    """Delete a message that may hold a secret; if Telegram refuses, ask the user to do it."""
    forgotten = _forgotten.get()
    if forgotten is not None:
        if (message.chat.id, message.message_id) in forgotten:
            return
        forgotten.add((message.chat.id, message.message_id))
    try:
        await message.delete()
    except TelegramAPIError:
        await message.answer(_("I could not delete your message with the key: please delete it yourself."))


class SecretGuardMiddleware(BaseMiddleware):
    """Outer middleware on private messages and their edits: whatever a handler made of it (a wizard
    step, an unknown command, ``/link3c KEY SECRET``, ``/Link``, an edit adding a key), a message
    that looks like it carries a credential does not stay in the chat."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        token = _forgotten.set(set())
        try:
            result = await handler(event, data)
            text = (event.text or event.caption or "") if isinstance(event, Message) else ""
            if isinstance(event, Message) and carries_secret(text):
                await forget_secret_message(event)
            return result
        finally:
            _forgotten.reset(token)


async def expose_group_secret(message: Message, bot: Bot) -> None:
    """A group message that may carry a credential: delete it if the bot may (an administrator),
    and tell its sender the key is exposed and must be revoked on the exchange: privately, or in
    the group when the bot cannot write to them (they never started it). Never quotes the message."""
    try:
        await message.delete()
        deleted = True
    except TelegramAPIError:  # not an administrator there: Telegram refuses
        deleted = False
    sender = message.from_user
    if sender is None:
        return
    try:
        said = _("You posted what looks like an API key or secret in the group «{group}».")
        await bot.send_message(sender.id, _exposed(html(said, group=message.chat.title or "?"), deleted))
        return
    except TelegramAPIError:  # never wrote to the bot privately (403), or blocked it
        pass
    said = _("{name}, your message looked like it carried an API key or secret.")
    with contextlib.suppress(TelegramAPIError):  # the bot may not write in the group either
        await message.answer(_exposed(html(said, name=sender.full_name), deleted))


def _exposed(said: Html, deleted: bool) -> Html:
    removal = (
        _("I deleted it, but others in the group may have seen it.")
        if deleted
        else _("I could not delete it (I am not an administrator there): delete it yourself now.")
    )
    revoke = _(
        "Treat the key as exposed: delete it on the exchange (or 3Commas) now and create a new one. "
        "Send keys only to me, in a private chat."
    )
    return html("⚠️ {said} {removal}\n\n{revoke}", said=said, removal=removal, revoke=revoke)


class SecretPart(StrEnum):
    API_KEY = "api_key"
    SECRET = "secret"
    PASSPHRASE = "passphrase"


_SEALED = SEALED_FIELD  # the wizard data's key for the credentials collected so far


def _again(part: SecretPart) -> str:
    texts = {
        SecretPart.API_KEY: _("Send the API key again, or /cancel."),
        SecretPart.SECRET: _("Send the secret again, or /cancel."),
        SecretPart.PASSPHRASE: _("Send the passphrase again, or /cancel."),
    }
    return texts[part]


def _rsa_problem(text: str) -> str | None:
    try:
        load_rsa_key(text)
    except ValueError:
        return _("That is not an unencrypted RSA private key in PEM form (-----BEGIN … PRIVATE KEY-----).")
    return None


async def take_secret_part(
    message: Message,
    state: FSMContext,
    vault: Vault,
    part: SecretPart,
    *,
    restart: str,
    rsa_allowed: bool = False,
) -> Credentials | None:
    """One wizard step: delete the message, check it, add it to the sealed credentials.

    ``rsa_allowed``: the secret may be the PEM private key of a 3Commas self-generated RSA key
    (docs quick-start/4_how_to_create_an_rsa_key_pair), which spans lines.

    Returns the credentials collected so far; None when the message could not be used (the user
    was told what to send instead) or the earlier parts are gone (the wizard ends with ``restart``).
    """
    await forget_secret_message(message)
    text = message.text or ""
    if rsa_allowed and part is SecretPart.SECRET and is_rsa_secret(text):
        problem = _rsa_problem(text)
    else:
        problem = key_problem(message.text, passphrase=part is SecretPart.PASSPHRASE)
    if problem:
        await message.answer(problem + " " + _again(part))
        return None
    value = (message.text or "").strip()
    if part is SecretPart.API_KEY:
        credentials = Credentials(value, "")
    else:
        sealed = (await state.get_data()).get(_SEALED)
        if not sealed:
            await state.clear()
            await message.answer(restart)
            return None
        so_far = vault.open(sealed.encode())
        if part is SecretPart.SECRET:
            credentials = Credentials(so_far.api_key, value)
        else:
            credentials = Credentials(so_far.api_key, so_far.secret, value)
    await state.update_data({_SEALED: vault.seal(credentials).decode()})
    return credentials
