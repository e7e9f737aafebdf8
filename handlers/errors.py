"""One place where every handler error ends: a friendly word for the user, details for the log."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiogram import Router
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _

log = logging.getLogger(__name__)


async def on_error(event: ErrorEvent, i18n: I18n, user: Any = None) -> bool:
    reference = secrets.token_hex(4)
    log.error("handler failed ref=%s: %r", reference, event.exception, exc_info=event.exception)
    # aiogram catches errors outside our middlewares, so the user's language is set again here;
    # without a user (the failure came before the gate middleware made one) the default language.
    with i18n.context(), i18n.use_locale(getattr(user, "language", i18n.default_locale)):
        text = _("Something went wrong on our side. Reference: {ref}. Please try again in a minute.").format(
            ref=reference
        )
    update = event.update
    try:
        if update.callback_query:
            await update.callback_query.answer(text, show_alert=True)
        elif update.message:
            await update.message.answer(text)
    except Exception:  # the user may have blocked us meanwhile; the log already has the details
        log.warning("could not tell the user about ref=%s", reference)
    return True


def build_router() -> Router:
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
