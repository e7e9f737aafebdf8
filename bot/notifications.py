"""Turning outbox rows (data) into Telegram messages (text + buttons) in the user's language.

Rows of one user that became due together are merged: several alerts read as one message,
and transient failures of one exchange collapse into a single "looks down" notice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import ConnCb
from bot.texts import EXCHANGE_NAMES, connection_title, duration, verdict_advice, verdict_reason
from handlers.threecommas import recreate_button
from services.core.verdicts import Verdict
from services.storage.models import OutboxMessage

TELEGRAM_TEXT_LIMIT = 4096
MAX_BUTTON_ROWS = 30


@dataclass(frozen=True)
class Rendered:
    text: str
    markup: InlineKeyboardMarkup | None
    ids: list[int]


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")


def _title(p: dict[str, Any]) -> str:
    return connection_title(p.get("exchange", ""), p.get("label", ""))


def _render_alert(p: dict[str, Any]) -> str:
    verdict = p.get("verdict", "unknown")
    lines = [
        f"🔴 <b>{_title(p)}</b>: {verdict_reason(verdict)}",
        _("Since {when}.").format(when=_when(p.get("since"))),
        verdict_advice(verdict, p.get("detail", "")),
    ]
    return "\n".join(lines)


def _symptom_subject(p: dict[str, Any]) -> str:
    """What a 3Commas symptom is about: an account, a deal or a SmartTrade, in a few words."""
    subject = p.get("subject") or {}
    check = str(p.get("check", ""))
    name = escape(str(subject.get("name") or subject.get("account_name") or ""))
    pair = escape(str(subject.get("pair") or ""))
    ref = check.rpartition(":")[2]
    if check.startswith("tc_account:"):
        return _("3Commas account {name}").format(name=name or ref)
    if check.startswith(("smart_trade_error:", "smart_trade_failed:")):
        return _("SmartTrade #{id} {pair}").format(id=ref, pair=pair)
    return _("deal #{id} {pair}").format(id=ref, pair=pair)


def _symptom_reason(p: dict[str, Any]) -> str:
    reason = str(p.get("reason", ""))
    texts = {
        "account_locked": _("the account is locked"),
        "keys_expire_soon": _("its exchange API key expires soon"),
        "keys_state_unknown": _("3Commas reports an unusual key state"),
        "auto_balance_error": _("balances are not loading"),
        "deal_error": _("3Commas reports an error on it"),
        "stale_upnl": _("its UPNL stopped updating while the market moved"),
        "deal_failed": _("it failed"),
        "deal_cancelled": _("it was cancelled"),
    }
    return texts.get(reason) or verdict_reason(reason)


def _render_symptom(p: dict[str, Any]) -> str:
    kind = p.get("type")
    head = f"<b>{_title(p)}</b> · {_symptom_subject(p)}"
    detail = escape(str(p.get("detail", ""))[:200])
    if kind == "recovery":
        return "🟢 " + _("{what}: resolved after {duration}.").format(what=head, duration=duration_from(p))
    lines = [f"🔴 {head}: {_symptom_reason(p)}"]
    if detail:
        lines.append(f"<i>{detail}</i>")
    if p.get("reason") in {"deal_failed", "deal_cancelled"}:
        lines.append(
            _("Its orders may still lock funds: see /orders. You can recreate it with the button below.")
        )
    elif p.get("reason") == "stale_upnl":
        lines.append(_("Usually the exchange key behind the account stopped working; check /status."))
    return "\n".join(lines)


def _render_one(p: dict[str, Any]) -> str:
    kind = p.get("type")
    if p.get("check") and kind in {"alert", "reminder", "recovery", "event"}:
        return _render_symptom(p)
    if kind == "alert":
        return _render_alert(p)
    if kind == "reminder":
        return _("Reminder #{n}:").format(n=p.get("number", 1)) + " " + _render_alert(p)
    if kind == "recovery":
        return "🟢 " + _("<b>{title}</b> works again. It was failing for {duration}.").format(
            title=_title(p), duration=duration_from(p)
        )
    if kind == "flapping":
        return "🟠 " + _(
            "<b>{title}</b> keeps failing and recovering ({n} times in the last hour). "
            "I will stay quiet until it settles and then tell you how it ended."
        ).format(title=_title(p), n=p.get("transitions", 0))
    if kind == "mute_summary":
        state = _("working") if p.get("status") == "ok" else verdict_reason(p.get("verdict", "unknown"))
        return "🔔 " + _("Mute ended. <b>{title}</b> changed while muted; now: {state}.").format(
            title=_title(p), state=state
        )
    if kind == "expiry":
        return "⏰ " + _("<b>{title}</b>: {what} on {when}. Create a new key before then.").format(
            title=_title(p), what=_expiry_what(p.get("warning", "")), when=_when(p.get("due"))
        )
    return p.get("text", "")


def _expiry_what(code: str) -> str:
    if code == "no_ip_restriction":
        return _("the exchange limits keys without an IP whitelist")
    return _("the key expires")


def duration_from(p: dict[str, Any]) -> str:
    from datetime import timedelta

    return duration(timedelta(seconds=float(p.get("duration_s", 0))))


def _outage(exchange: str, count: int) -> str:
    name = EXCHANGE_NAMES.get(exchange, exchange.capitalize())
    return "🟠 " + _(
        "<b>{exchange} looks down</b> or unreachable from keysentry ({n} of your connections affected). "
        "Your keys are not the problem; we keep checking and will tell you when it is back."
    ).format(exchange=name, n=count)


def _buttons(keyboard: InlineKeyboardBuilder, p: dict[str, Any]) -> None:
    if p.get("failed_deal_id"):
        keyboard.add(*recreate_button(int(p["failed_deal_id"])).inline_keyboard[0])
        return
    if p.get("check"):
        return  # symptoms point to /orders and /status; the account's key has its own alert
    cid = p.get("connection_id")
    if cid is None:
        return
    if p.get("type") in {"alert", "reminder"} and Verdict(p.get("verdict", "unknown")).is_key_problem:
        keyboard.button(text="⛔ " + _("Update API key"), callback_data=ConnCb(action="update", cid=cid))
    keyboard.button(text="🔄 " + _("Refresh"), callback_data=ConnCb(action="refresh", cid=cid))
    if p.get("type") in {"alert", "reminder", "flapping"}:
        keyboard.button(text="🔕 " + _("Mute 24 h"), callback_data=ConnCb(action="mute", cid=cid))


def render_batch(rows: list[OutboxMessage]) -> list[Rendered]:
    """One or more messages (each under Telegram's limit) covering every row."""
    blocks: list[tuple[str, list[int], list[dict[str, Any]]]] = []
    outages: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        p = row.payload
        if p.get("type") == "alert" and p.get("verdict") in {"network", "exchange_down"}:
            outages.setdefault(p.get("exchange", ""), []).append(row)
            continue
        blocks.append((_render_one(p), [row.id], [p]))
    for exchange, group in outages.items():
        refresh_targets = [{"type": "outage", "connection_id": r.payload.get("connection_id")} for r in group]
        blocks.append((_outage(exchange, len(group)), [r.id for r in group], refresh_targets[:1]))

    messages: list[Rendered] = []
    text, ids, payloads = "", [], []
    for block_text, block_ids, block_payloads in blocks:
        candidate = f"{text}\n\n{block_text}" if text else block_text
        if text and len(candidate) > TELEGRAM_TEXT_LIMIT - 100:
            messages.append(_finish(text, ids, payloads))
            text, ids, payloads = block_text, list(block_ids), list(block_payloads)
        else:
            text, ids, payloads = candidate, ids + block_ids, payloads + block_payloads
    if text:
        messages.append(_finish(text, ids, payloads))
    return messages


def _finish(text: str, ids: list[int], payloads: list[dict[str, Any]]) -> Rendered:
    keyboard = InlineKeyboardBuilder()
    per_row = []
    for p in payloads[:MAX_BUTTON_ROWS]:
        before = len(list(keyboard.buttons))
        _buttons(keyboard, p)
        per_row.append(len(list(keyboard.buttons)) - before)
    if not any(per_row):
        return Rendered(text[:TELEGRAM_TEXT_LIMIT], None, ids)
    keyboard.adjust(*[n for n in per_row if n])
    return Rendered(text[:TELEGRAM_TEXT_LIMIT], keyboard.as_markup(), ids)
