"""One place where every handler error ends: a friendly word for the user, details for the log.

A stored credential that will not open (VAULT_KEY changed without rotating) is the operator's
error: the operator hears it (:class:`bot.operator.VaultAlarm`), the user gets a neutral
"temporarily unavailable", never a word about their key.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _

from bot.operator import VaultAlarm
from services.core.vault import VaultError

log = logging.getLogger(__name__)


async def on_error(
    event: ErrorEvent, i18n: I18n, bot: Bot, vault_alarm: VaultAlarm, user: Any = None
) -> bool:
    unopened = isinstance(event.exception, VaultError)
    reference = secrets.token_hex(4)
    if unopened:
        await vault_alarm.raised(bot, "request")
    else:
        log.error("handler failed ref=%s: %r", reference, event.exception, exc_info=event.exception)
    # aiogram catches errors outside our middlewares, so the user's language is set again here;
    # without a user (the failure came before the gate middleware made one) the default language.
    with i18n.context(), i18n.use_locale(getattr(user, "language", i18n.default_locale)):
        if unopened:
            text = _("This is temporarily unavailable on our side. Please try again later.")
        else:
            text = _(
                "Something went wrong on our side. Reference: {ref}. Please try again in a minute."
            ).format(ref=reference)
    await _tell(event, bot, text, reference)
    return True


async def _tell(event: ErrorEvent, bot: Bot, text: str, reference: str) -> None:
    """As the tap's alert; a tap answered already (handlers answer first, then work) gets a message."""
    update = event.update
    query = update.callback_query
    try:
        if query is not None:
            try:
                await query.answer(text, show_alert=True)
            except TelegramAPIError:
                if query.message is None:
                    raise
                await bot.send_message(query.message.chat.id, text)
        elif update.message:
            await update.message.answer(text)
    except Exception:  # the user may have blocked us meanwhile; the log already has the details
        log.warning("could not tell the user about ref=%s", reference)


def build_router() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
