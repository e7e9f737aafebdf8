"""One place where every handler error ends: a friendly word for the user, details for the log."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiogram import Router
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import gettext as _

from bot.context import AppContext

log = logging.getLogger(__name__)
router = Router(name="errors")


@router.errors()
async def on_error(event: ErrorEvent, app: AppContext | None = None, user: Any = None) -> bool:
    reference = secrets.token_hex(4)
    log.error("handler failed ref=%s: %r", reference, event.exception, exc_info=event.exception)
    if app is None:  # the failure happened before the gate middleware ran
        return True
    # aiogram catches errors outside our middlewares, so the user's language is set again here.
    with app.i18n.context(), app.i18n.use_locale(getattr(user, "language", app.i18n.default_locale)):
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
