"""The recovery checklist message, redrawn from live data on a tap and between taps.

A tap on the checklist (handlers/repair.py) redraws it at once. Between taps the world moves on
without the user: 3Commas starts using the key the user fixed in its web app, a failed deal is
recreated from its own alert, an orphan order is cancelled on the exchange or fills. A job of the
worker's own (beside the poll tick, never holding it) runs :class:`ChecklistRefresher`, which
recomputes every open checklist from 3Commas and the exchange once per poll interval and edits
the message when its text changed, so the message in the chat never shows a step as pending that
is done. "Everything is done" is said once whoever sees it first
(:func:`services.threecommas.checklist.claim_done`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def redraw(
    bot: Bot,
    deps: Deps,
    checklist_id: int,
    user_id: int,
    shown: dict[int, str] | None = None,
    *,
    listed_within: timedelta | None = None,
) -> None:
    """Edit the checklist message with what is true now; say "done" once when it is.

    ``shown`` (checklist id → digest of the text on screen) skips edits that change nothing; None
    edits regardless (a tap always answers with a fresh view). ``listed_within`` reuses a stored
    listing that recent instead of listing the exchange.
    """
    where = await recovery.checklist_message(deps, checklist_id, user_id)
    if where is None:  # no message to redraw: nothing to read from 3Commas or the exchange
        return
    state = await recovery.checklist_state(deps, checklist_id, user_id, listed_within=listed_within)
    if state is None:
        return
    chat_id, message_id = where
    text, markup = views.checklist(state)
    digest = _digest(text)
    if shown is None or shown.get(checklist_id) != digest:
        try:
            await bot.edit_message_text(text, chat_id=chat_id, message_id=message_id, reply_markup=markup)
        except _TRY_AGAIN as error:
            log.info("checklist %s not redrawn: %s", checklist_id, type(error).__name__)
        except TelegramAPIError:
            pass  # unchanged, or the user deleted the message: the checklist itself is what counts
        else:
            if shown is not None:
                shown[checklist_id] = digest
    await say_done_once(bot, deps, state, chat_id)


async def say_done_once(bot: Bot, deps: Deps, state: recovery.ChecklistState, chat_id: int) -> None:
    if state.complete and await recovery.claim_done(deps, state.checklist_id, deps.clock.now()):
        await bot.send_message(chat_id, views.all_done(state))


ORDERS_EVERY = timedelta(minutes=15)
"""How old a stored listing of the exchange's orders a round may reuse instead of listing again."""


@dataclass
class ChecklistRefresher:
    """Keeps open checklist messages current; run by a scheduler job of its own in the worker.

    A round runs at most once per ``every`` (the poll interval) and costs, per open checklist, one
    3Commas account read. The exchange's orders are listed again only when the newest stored
    listing is older than ``orders_every`` (a Binance listing weighs ~100 of the IP's 6000 a
    minute, and a mass reset opens many checklists at once); a tap on the checklist always lists.
    """

    app: AppContext
    bot: Bot
    every: timedelta
    orders_every: timedelta = ORDERS_EVERY
    shown: dict[int, str] = field(default_factory=dict)
    next_round: datetime | None = None

    async def run_once(self) -> None:
        now = self.app.clock.now()
        if self.next_round is not None and now < self.next_round:
            return
        self.next_round = now + self.every
        allowed = self.app.settings.allowed_user_ids
        deps = self.app.order_deps
        for item in await recovery.shown_checklists(deps):
            if allowed and item.user_id not in allowed:
                continue
            try:
                with self.app.i18n.context(), self.app.i18n.use_locale(item.language):
                    await redraw(
                        self.bot, deps, item.id, item.user_id, self.shown, listed_within=self.orders_every
                    )
            except Exception:  # one checklist's trouble must not stop the others or the poller
                log.exception("refreshing checklist %s failed", item.id)
