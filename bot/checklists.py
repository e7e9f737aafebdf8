"""The recovery checklist message, redrawn from live data on a tap and between taps.

A tap on the checklist (handlers/repair.py) redraws it at once. Between taps the world moves on
without the user: 3Commas starts using the key the user fixed in its web app, a failed deal is
recreated from its own alert, an orphan order is cancelled on the exchange or fills. A job of each
worker's own (beside the poll tick, never holding it) runs :class:`ChecklistRefresher`, which
claims the open checklists due for a redraw, so that of all the workers sharing the database one
recomputes each from 3Commas and the exchange once per poll interval, and edits the message when
its text differs from the one stored as shown; the message in the chat never shows a step as
pending that is done. "Everything is done" is said once whoever sees it first
(:func:`services.threecommas.checklist.claim_done`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from bot.context import AppContext
from bot.views import threecommas as views
from services.orders.listing import Deps
from services.threecommas import checklist as recovery

log = logging.getLogger(__name__)

# Telegram did not get the edit: the next round tries again. Any other refusal (text unchanged,
# message deleted) leaves nothing to retry.
_TRY_AGAIN = (TelegramNetworkError, TelegramRetryAfter, TelegramServerError)


async def redraw(
    bot: Bot,
    deps: Deps,
    checklist_id: int,
    user_id: int,
    *,
    unless_shown: bool = False,
    listed_within: timedelta | None = None,
) -> None:
    """Edit the checklist message with what is true now; say "done" once when it is.

    ``unless_shown`` skips the edit when the message already shows this text (its digest is stored
    with the checklist, so any worker knows); a tap edits regardless, answering with a fresh view.
    ``listed_within`` reuses a stored listing that recent instead of listing the exchange.
    """
    where = await recovery.checklist_message(deps, checklist_id, user_id)
    if where is None:  # no message to redraw: nothing to read from 3Commas or the exchange
        return
    state = await recovery.checklist_state(deps, checklist_id, user_id, listed_within=listed_within)
    if state is None:
        return
    text, markup = views.checklist(state)
    if not (unless_shown and where.shows(text)):
        try:
            await bot.edit_message_text(
                text, chat_id=where.chat_id, message_id=where.message_id, reply_markup=markup
            )
        except _TRY_AGAIN as error:
            log.info("checklist %s not redrawn: %s", checklist_id, type(error).__name__)
        except TelegramBadRequest as error:
            if "not modified" in error.message:  # it shows this text already
                await recovery.remember_shown(deps, checklist_id, where.message_id, text)
            # otherwise the user deleted the message: the checklist itself is what counts
        except TelegramAPIError:
            pass
        else:
            await recovery.remember_shown(deps, checklist_id, where.message_id, text)
    await say_done_once(bot, deps, state, where.chat_id)


async def say_done_once(bot: Bot, deps: Deps, state: recovery.ChecklistState, chat_id: int) -> None:
    if state.complete and await recovery.claim_done(deps, state.checklist_id, deps.clock.now()):
        await bot.send_message(chat_id, views.all_done(state))


ORDERS_EVERY = timedelta(minutes=15)
"""How old a stored listing of the exchange's orders a round may reuse instead of listing again."""


@dataclass
class ChecklistRefresher:
    """Keeps open checklist messages current; run by a scheduler job of its own in every worker.

    Workers share the checklists through the database: a round claims those due
    (:func:`services.threecommas.checklist.claim_due_checklists`), a few at a time, each for one
    ``every`` (the poll interval), and redraws them; whatever another worker claimed is its own.
    So each checklist costs one 3Commas account read per interval however many workers run, and
    one a worker took before dying is due again an interval later. The exchange's orders are
    listed again only when the newest stored listing is older than ``orders_every`` (a Binance
    listing weighs ~100 of the IP's 6000 a minute, and a mass reset opens many checklists at
    once); a tap on the checklist always lists.
    """

    app: AppContext
    bot: Bot
    every: timedelta
    orders_every: timedelta = ORDERS_EVERY
    batch: int = recovery.CLAIM_BATCH

    async def run_once(self) -> int:
        """Redraw every checklist due now that no other worker took; how many this one redrew."""
        deps = self.app.order_deps
        allowed = self.app.settings.allowed_user_ids
        redrawn = 0
        while True:
            claimed = await recovery.claim_due_checklists(
                deps.sessions, self.app.clock.now(), self.every, allowed_user_ids=allowed, limit=self.batch
            )
            for item in claimed:
                try:
                    with self.app.i18n.context(), self.app.i18n.use_locale(item.language):
                        await redraw(
                            self.bot,
                            deps,
                            item.id,
                            item.user_id,
                            unless_shown=True,
                            listed_within=self.orders_every,
                        )
                except Exception:  # one checklist's trouble must not stop the others or the poller
                    log.exception("refreshing checklist %s failed", item.id)
            redrawn += len(claimed)
            if len(claimed) < self.batch:
                return redrawn
