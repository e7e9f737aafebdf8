"""One place where every handler error ends: a friendly word for the user, details for the log."""

from __future__ import annotations

import logging
import secrets

from aiogram import Router
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import gettext as _

log = logging.getLogger(__name__)
router = Router(name="errors")


@router.errors()
async def on_error(event: ErrorEvent) -> bool:
    reference = secrets.token_hex(4)
    log.error("handler failed ref=%s: %r", reference, event.exception, exc_info=event.exception)
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
