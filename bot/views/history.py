"""/history in plain sentences: one line per entry, one sentence per kind of action or message.

Nothing here cuts a value in half: an entry is a whole sentence, and only the free text a far side
sent (an error) is shortened, at a word, with an ellipsis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import HistoryPageCb
from bot.texts import connection_title, deal_words, duration, verdict_reason
from bot.views.html import Html, bold, code, html, plain
from services.monitoring.events import Alert, Recovery, Target
from services.monitoring.history import Done, HistoryEntry, HistoryPage

ERROR_WORDS_MAX = 80


def history_text(page: HistoryPage) -> tuple[str, InlineKeyboardMarkup | None]:
    if not page.entries:
        return _("No actions were taken on your behalf yet."), None
    head = _("<b>Your history</b>, newest first")
    if page.page:
        head += " · " + _("page {n}").format(n=page.page + 1)
    lines = [f"{formatting.moment(e.at)}\n{entry_sentence(e)}" for e in page.entries]
    return "\n\n".join([head, *lines]), _pages(page)


def _pages(page: HistoryPage) -> InlineKeyboardMarkup | None:
    keyboard = InlineKeyboardBuilder()
    if page.page > 0:
        keyboard.button(text="‹ " + _("Previous"), callback_data=HistoryPageCb(page=page.page - 1))
    if page.more:
        keyboard.button(text=_("Next") + " ›", callback_data=HistoryPageCb(page=page.page + 1))
    return keyboard.as_markup() if page.page > 0 or page.more else None


def entry_sentence(entry: HistoryEntry) -> str:
    title = _title(entry.target)
    match entry.what:
        case Alert(verdict=verdict):
            return "🔴 " + html(
                _("{title} stopped working: {reason}."), title=title, reason=verdict_reason(verdict)
            )
        case Recovery(duration=span):
            return "🟢 " + html(
                _("{title} works again (it was down {span})."), title=title, span=duration(span)
            )
        case Done(action, detail):
            sentence = _SENTENCES.get(action)
            return (
                sentence(title, detail)
                if sentence
                else "• " + html(_("keysentry acted on {title}."), title=title)
            )
    raise TypeError(f"not a history entry: {entry!r}")


def _title(target: Target | None) -> Html:
    if target is None or not target.exchange:
        return plain(_("a connection you removed"))
    return bold(connection_title(target.exchange, target.label, target.key_hint))


def _linked(title: Html, detail: Mapping[str, Any]) -> str:
    return "🔗 " + html(_("You linked {title}."), title=title)


def _key_updated(title: Html, detail: Mapping[str, Any]) -> str:
    return "🔑 " + html(
        _("You gave {title} a new key ({new}, was {old})."),
        title=title,
        new=code(str(detail.get("key_hint") or "…")),
        old=code(str(detail.get("old_key_hint") or "…")),
    )


def _removed(title: Html, detail: Mapping[str, Any]) -> str:
    return "🗑 " + html(_("You removed {title}."), title=title)


def _order(detail: Mapping[str, Any]) -> Html:
    symbol = str(detail.get("symbol") or "")
    return html(_("the {symbol} order"), symbol=symbol) if symbol else plain(_("an order"))


def _freed(detail: Mapping[str, Any]) -> str:
    freed = detail.get("freed")
    if not isinstance(freed, list | tuple) or len(freed) != 2:
        return ""
    try:
        amount = Decimal(str(freed[1]))
    except InvalidOperation:
        return ""
    return " " + html(_("{amount} is free again."), amount=formatting.coin(amount, str(freed[0])))


def _cancelled(title: Html, detail: Mapping[str, Any]) -> str:
    outcome = detail.get("outcome")
    if outcome == "already_filled":
        text = _("{order} on {title} had filled before keysentry could cancel it.")
    elif outcome == "already_cancelled":
        text = _("{order} on {title} was cancelled already.")
    elif outcome == "not_found":
        text = _("{order} on {title} was gone from the exchange already.")
    else:
        text = _("keysentry cancelled {order} on {title}.")
    return "🧹 " + html(text, order=_order(detail), title=title) + _freed(detail)


def _cancel_repeated(title: Html, detail: Mapping[str, Any]) -> str:
    return "🧹 " + html(
        _("{order} on {title}: cancelled earlier, nothing sent again."), order=_order(detail), title=title
    )


def _cancel_refused(title: Html, detail: Mapping[str, Any]) -> str:
    return "⛔ " + html(_("keysentry did not cancel {order} on {title}."), order=_order(detail), title=title)


def _recreated(title: Html, detail: Mapping[str, Any]) -> str:
    outcome, source = detail.get("outcome"), deal_words(detail.get("source"))
    if outcome == "created":
        return "♻️ " + html(
            _("keysentry recreated the failed {deal} on {title} as {new}."),
            deal=source,
            title=title,
            new=deal_words(detail.get("ref")),
        )
    if outcome == "already_recreated":
        return "♻️ " + html(
            _("The failed {deal} on {title} had been recreated already."), deal=source, title=title
        )
    return _not_done(
        _("keysentry could not recreate the failed {deal} on {title}{why}"), detail, deal=source, title=title
    )


def _tc_key_given(title: Html, detail: Mapping[str, Any]) -> str:
    key = code(str(detail.get("key") or "…"))
    if detail.get("outcome") == "fixed":
        return "🔧 " + html(
            _("keysentry gave 3Commas ({title}) the new exchange key {key}; it works."), title=title, key=key
        )
    return _not_done(
        _("keysentry gave 3Commas ({title}) the new exchange key {key}; it does not work yet{why}"),
        detail,
        title=title,
        key=key,
    )


def _not_done(template: str, detail: Mapping[str, Any], **values: object) -> str:
    """An action that did not succeed, ending with the far side's words (``{why}``) if it gave any."""
    return "⛔ " + html(template, why=_why(detail.get("error")), **values)


def _why(error: object) -> Html:
    """ ": 3Commas said …." or ".": the far side's words, shortened at a word, never mid-word."""
    words = " ".join(str(error or "").split())
    if not words or words == "None":
        return Html(".")
    if len(words) > ERROR_WORDS_MAX:
        words = words[:ERROR_WORDS_MAX].rsplit(" ", 1)[0] + "…"
    return html(_(": “{words}”."), words=words)


_SENTENCES: dict[str, Callable[[Html, Mapping[str, Any]], str]] = {
    "connection_linked": _linked,
    "key_updated": _key_updated,
    "connection_removed": _removed,
    "order_cancel": _cancelled,
    "order_cancel_repeat": _cancel_repeated,
    "order_cancel_refused": _cancel_refused,
    "deal_recreate": _recreated,
    "tc_account_key_update": _tc_key_given,
}
