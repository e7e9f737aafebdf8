"""Turning outbox rows (typed events) into Telegram messages (text + buttons) in the user's language.

Every message kind is rendered by the one ``match`` in :func:`render`. Rows of one user that
became due together are merged: several alerts read as one message, and outage alerts of one
exchange fold into a single "looks down" notice (``pipeline.fold_outages`` decides which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb
from bot.keyboards import recreate_button
from bot.texts import connection_title, duration, exchange_name, verdict_advice, verdict_reason
from bot.views import threecommas as tc_views
from bot.views.html import TELEGRAM_LIMIT, Html, html, italic, join, split, visible_length
from services.core.verdicts import Verdict
from services.monitoring.events import (
    Alert,
    Check,
    DealFailed,
    ExpiryReminder,
    FlappingNotice,
    MuteSummary,
    Notice,
    OutageNotice,
    Recovery,
    Reminder,
    Summary,
    Target,
    VerdictChanged,
    from_payload,
)
from services.monitoring.pipeline import fold_outages
from services.storage.models import OutboxMessage
from services.threecommas.findings import finding

MAX_BUTTON_ROWS = 30
SETTLED = Summary.FLAPPING_SETTLED


@dataclass(frozen=True)
class Rendered:
    text: Html
    markup: InlineKeyboardMarkup | None
    ids: list[int]


def _when(moment: datetime) -> str:
    return formatting.moment(moment)


def _title(target: Target) -> Html:
    return connection_title(target.exchange, target.label, target.key_hint)


def _alert(target: Target, verdict: str, detail: str, since: datetime, egress_ips: Sequence[str]) -> Html:
    lines = [
        html("🔴 <b>{title}</b>: {reason}", title=_title(target), reason=verdict_reason(verdict)),
        html(_("Since {when}."), when=_when(since)),
        verdict_advice(verdict, detail, egress_ips=egress_ips),
    ]
    return join("\n", lines)


# Checks of a 3Commas account itself (its key, its balances), not of a trade or a bot in it.
_ACCOUNT_KINDS = ("tc_account:", "tc_balances:")


def _symptom_subject(check: Check) -> Html:
    """What a 3Commas symptom is about: an account, a deal or a SmartTrade, in a few words."""
    subject = check.subject
    name = str(subject.get("name") or subject.get("account_name") or "")
    # The exchange's spelling (ETH/USDT), as /orders and the recreate preview show it; 3Commas'
    # own (USDT_ETH) only when it could not be read as a market.
    pair = str(subject.get("symbol") or subject.get("pair") or "")
    ref = check.kind.rpartition(":")[2]
    if check.kind.startswith(_ACCOUNT_KINDS):
        return html(_("3Commas account {name}"), name=name or ref)
    if check.kind.startswith("bot_disabled:"):
        return html(_("bot {name}"), name=str(subject.get("bot_name") or ref))
    if check.kind.startswith(("smart_trade_error:", "smart_trade_failed:", "smart_trade_upnl:")):
        return Html(html(_("SmartTrade #{id} {pair}"), id=ref, pair=pair).rstrip())
    return Html(html(_("deal #{id} {pair}"), id=ref, pair=pair).rstrip())


def _head(target: Target, check: Check) -> Html:
    return html("<b>{title}</b> · {subject}", title=_title(target), subject=_symptom_subject(check))


def _symptom_reason(reason: str) -> str:
    texts = {
        "account_locked": _("the account is locked"),
        "keys_expire_soon": _("its exchange API key expires soon"),
        "keys_state_unknown": _("3Commas reports an unusual key state"),
        "auto_balance_error": _("balances are not loading"),
        "balances_not_loading": _("balances are not loading"),
        "bot_disabled": _("it was switched off"),
        "deal_error": _("3Commas reports an error on it"),
        "stale_upnl": _("its UPNL stopped updating while the market moved"),
        "deal_failed": _("it failed"),
        "deal_cancelled": _("it was cancelled"),
        "cannot_cancel": _("3Commas cannot cancel it"),
        "cannot_close": _("3Commas cannot close it at market price"),
    }
    return texts.get(reason) or verdict_reason(reason)


_STUCK = frozenset({"cannot_cancel", "cannot_close"})
# Reasons whose headline says all the detail would (the detail is the check's own English record).
_SAID = frozenset({"bot_disabled"})


def _symptom(target: Target, check: Check, detail: str) -> Html:
    lines: list[str] = [
        html("🔴 {head}: {reason}", head=_head(target, check), reason=_symptom_reason(check.reason))
    ]
    # What the check found beyond the headline, in the user's words: an account's symptoms, a
    # profit that froze, a cancel or close that hangs (its pending status, for how long, 3Commas'
    # words); for a deal or SmartTrade otherwise 3Commas' own words, the headline says the rest.
    found = finding(check.kind, check.reason, check.subject)
    if found is not None:
        lines += tc_views.finding_lines(found)
    elif check.reason in _STUCK or ("error" not in check.subject and detail and check.reason not in _SAID):
        lines.append(italic(detail[:200]))  # a row stored before findings were: its English record
    elif check.subject.get("error"):
        lines.append(tc_views.says(str(check.subject["error"])))
    if check.reason in {"deal_failed", "deal_cancelled"}:
        lines.append(
            _("Its orders may still lock funds: see /orders. You can recreate it with the button below.")
        )
    elif check.reason == "stale_upnl":
        lines.append(_("Usually the exchange key behind the account stopped working; check /status."))
    elif check.reason in _STUCK:
        lines.append(
            _(
                "Until it is done, the position stays open and its orders may lock funds on the "
                "exchange (see /orders). Usually the exchange key behind the account stopped "
                "working: check /status, update the key in 3Commas, then cancel or close it again "
                "in 3Commas."
            )
        )
    return join("\n", lines)


def _tc_account_id(check: Check) -> int | None:
    kind, _, ref = check.kind.partition(":")
    return int(ref) if kind == "tc_account" and ref.isdigit() else None


def _account_key_broken(check: Check, verdict: Verdict) -> bool:
    """The 3Commas account alert that needs the key fixed inside 3Commas (not keysentry's key)."""
    return _tc_account_id(check) is not None and verdict in {Verdict.KEY_INVALID, Verdict.KEY_EXPIRED}


def render(item: Notice | OutageNotice, egress_ips: Sequence[str] = ()) -> Html:
    """The text of one notice (or folded outage) in the current locale; ``egress_ips`` (EGRESS_IPS)
    are the addresses an IP-whitelist alert asks to add."""
    match item:
        case OutageNotice(exchange, connection_ids):
            return _outage(exchange, len(connection_ids))
        case Notice(event=MuteSummary(change)):
            return html(
                "🔔 {said}\n{change}",
                said=_("Mute ended. This changed while you were muted:"),
                change=render(replace(item, event=change), egress_ips),
            )
        case Notice(target, Recovery(duration=span), Check() as check):
            return html(
                "🟢 " + _("{what}: resolved after {duration}."),
                what=_head(target, check),
                duration=duration(span),
            )
        case Notice(_, Alert(verdict) | Reminder(verdict), Check() as check) if _account_key_broken(
            check, verdict
        ):
            return tc_views.account_key_alert(dict(check.subject))
        case Notice(
            target,
            Alert(detail=detail) | Reminder(detail=detail) | DealFailed(detail=detail),
            Check() as check,
        ):
            return _symptom(target, check, detail)
        case Notice(
            target,
            Alert(summary=Summary.FLAPPING_SETTLED) | Recovery(summary=Summary.FLAPPING_SETTLED) as event,
        ):
            settled = html(
                "🟠 " + _("<b>{title}</b> has stopped failing and recovering. Where it settled:"),
                title=_title(target),
            )
            return join(
                "\n", [settled, render(replace(item, event=replace(event, summary=None)), egress_ips)]
            )
        case Notice(target, Alert(verdict, detail, since) | VerdictChanged(_, verdict, detail, since)):
            return _alert(target, verdict, detail, since, egress_ips)
        case Notice(target, Reminder(verdict, detail, since, number)):
            return html(
                "{reminder} {alert}",
                reminder=html(_("Reminder #{n}:"), n=number),
                alert=_alert(target, verdict, detail, since, egress_ips),
            )
        case Notice(target, Recovery(duration=span)):
            return html(
                "🟢 " + _("<b>{title}</b> works again. It was failing for {duration}."),
                title=_title(target),
                duration=duration(span),
            )
        case Notice(target, FlappingNotice(transitions)):
            return html(
                "🟠 "
                + ngettext(
                    "<b>{title}</b> keeps failing and recovering ({n} time in the last hour). "
                    "I will stay quiet until it settles and then tell you how it ended.",
                    "<b>{title}</b> keeps failing and recovering ({n} times in the last hour). "
                    "I will stay quiet until it settles and then tell you how it ended.",
                    transitions,
                ),
                title=_title(target),
                n=transitions,
            )
        case Notice(target, ExpiryReminder(warning, due)):
            return html(
                "⏰ " + _("<b>{title}</b>: {what} on {when}. Create a new key before then."),
                title=_title(target),
                what=_expiry_what(warning),
                when=_when(due),
            )
        case Notice(target, DealFailed(reason, detail)):
            return _symptom(target, Check("", reason), detail)
    raise TypeError(f"cannot render {item!r}")


def _expiry_what(code: str) -> str:
    if code == "no_ip_restriction":
        return _("the exchange limits keys without an IP whitelist")
    return _("the key expires")


def _outage(exchange: str, count: int) -> Html:
    name = exchange_name(exchange)
    return html(
        "🟠 "
        + ngettext(
            "<b>{exchange} looks down</b> or unreachable from keysentry ({n} of your connections affected). "
            "Your keys are not the problem; we keep checking and will tell you when it is back.",
            "<b>{exchange} looks down</b> or unreachable from keysentry ({n} of your connections affected). "
            "Your keys are not the problem; we keep checking and will tell you when it is back.",
            count,
        ),
        exchange=name,
        n=count,
    )


def _buttons(keyboard: InlineKeyboardBuilder, item: Notice | OutageNotice) -> None:
    if isinstance(item, OutageNotice):
        keyboard.button(
            text="🔄 " + _("Refresh"),
            callback_data=ConnCb(action=ConnAction.REFRESH, cid=item.connection_ids[0], v=item.versions[0]),
        )
        return
    event = item.event.change if isinstance(item.event, MuteSummary) else item.event
    if isinstance(event, DealFailed):
        if event.failed_deal_id is not None:
            keyboard.add(*recreate_button(event.failed_deal_id, event.failed_deal_version).inline_keyboard[0])
        return
    if item.check is not None:
        # A 3Commas account whose exchange key broke gets the repair wizard; once it works again,
        # the checklist of what the reset left behind. Other symptoms point to /orders and /status.
        account = _tc_account_id(item.check)
        if (
            account is not None
            and isinstance(event, Alert | Reminder)
            and _account_key_broken(item.check, event.verdict)
        ):
            text, data = tc_views.repair_button(item.target.connection_id, account, item.target.version)
            keyboard.button(text=text, callback_data=data)
        elif account is not None and isinstance(event, Recovery) and event.verdict.is_key_problem:
            text, data = tc_views.checklist_button(item.target.connection_id, account, item.target.version)
            keyboard.button(text=text, callback_data=data)
        return
    cid, v = item.target.connection_id, item.target.version
    asks_to_act = isinstance(event, Alert | Reminder | VerdictChanged)
    if isinstance(event, Alert | Reminder | VerdictChanged) and event.verdict.is_key_problem:
        keyboard.button(
            text="⛔ " + _("Update API key"), callback_data=ConnCb(action=ConnAction.UPDATE, cid=cid, v=v)
        )
    keyboard.button(text="🔄 " + _("Refresh"), callback_data=ConnCb(action=ConnAction.REFRESH, cid=cid, v=v))
    if asks_to_act or isinstance(event, FlappingNotice):
        keyboard.button(
            text="🔕 " + _("Mute 24 h"), callback_data=ConnCb(action=ConnAction.MUTE, cid=cid, v=v)
        )


def render_batch(rows: list[OutboxMessage], egress_ips: Sequence[str] = ()) -> list[Rendered]:
    """One or more messages, each within Telegram's limit (:mod:`bot.views.html`), covering every row.

    Notices are gathered into one message while they fit. Every notice is short (details are cut
    to 200 characters), so one too long on its own cannot happen; were it to, it would be cut at a
    line break rather than refused by Telegram.
    """
    if not rows:
        return []
    notices = [(row.id, from_payload(row.payload)) for row in rows]
    folded = sorted(fold_outages(rows[0].user_id, notices), key=lambda entry: _consequence(entry[1]))
    blocks = [(render(item, egress_ips), ids, item) for ids, item in folded]
    messages: list[Rendered] = []
    text, ids, items = Html(), list[int](), list[Notice | OutageNotice]()
    for block_text, block_ids, item in blocks:
        candidate = join("\n\n", [text, block_text]) if text else block_text
        if text and visible_length(candidate) > TELEGRAM_LIMIT:
            messages.append(_finish(text, ids, items))
            text, ids, items = block_text, list(block_ids), [item]
        else:
            text, ids, items = candidate, ids + block_ids, [*items, item]
    if text:
        messages.append(_finish(text, ids, items))
    return messages


def _consequence(item: Notice | OutageNotice) -> bool:
    """A message about a trade or a bot comes after the key problem that explains it (a 3Commas
    account whose key broke, an exchange key, an outage): the cause first, with its fix, then
    what it broke. Otherwise the order the events happened in is kept (the sort is stable)."""
    if not isinstance(item, Notice) or item.check is None:
        return False
    kind = item.check.kind
    return not kind.startswith(_ACCOUNT_KINDS)


def _finish(text: Html, ids: list[int], items: list[Notice | OutageNotice]) -> Rendered:
    text = split(text)[0]
    keyboard = InlineKeyboardBuilder()
    per_row = []
    for item in items[:MAX_BUTTON_ROWS]:
        count = len(list(keyboard.buttons))
        _buttons(keyboard, item)
        per_row.append(len(list(keyboard.buttons)) - count)
    if not any(per_row):
        return Rendered(text, None, ids)
    keyboard.adjust(*[n for n in per_row if n])
    return Rendered(text, keyboard.as_markup(), ids)
