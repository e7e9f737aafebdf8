"""/link and "Update API key": collect a key, verify it with the exchange, then save it.

Secrets are handled as little as possible: every message that may carry a key, secret or
passphrase is deleted the moment it arrives and is never echoed; between steps the parts
collected so far live in the FSM data only as one vault-sealed blob; nothing is stored in a
connection until the exchange has accepted the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb, ExchangeCb, ExchangePageCb, LinkStep, LinkStepCb, StartLinkCb
from bot.commands import is_known_command
from bot.settings import Settings
from bot.texts import (
    TRANSIENT,
    connection_title,
    egress_line,
    exchange_name,
    out_of_date,
    verdict_advice,
    verdict_reason,
)
from bot.views.balances import balance_summary
from bot.views.html import Html, code, html, join
from bot.views.secrets import SecretPart, forget_secret_message, key_problem, take_secret_part
from services.core.vault import Credentials, Vault, carries_secret, mask
from services.core.verdicts import Verdict
from services.exchanges.hub import PREFERRED, needs_passphrase, supported_exchanges
from services.exchanges.probes import KeyInfo, ProbeResult, key_warnings
from services.monitoring.refresh import KeyStore
from services.storage.button_tokens import connection_token
from services.storage.connections import load_owned_connection
from services.storage.db import Sessions
from services.storage.models import Connection, User
from services.storage.sealed import SEALED_FIELD

EXCHANGES_PER_PAGE = 24
LABEL_MAX = 64
_NOT_COMMAND = ~F.text.startswith("/")
# A key, secret or passphrase may start with "/" (about 1 in 64 base64 secrets): only our own
# commands (/cancel...) leave those steps.
_NOT_OUR_COMMAND = ~F.text.func(is_known_command)


class LinkFlow(StatesGroup):
    """Wizard steps; the key steps serve both /link and Update API key (``cid`` set in the data)."""

    exchange = State()
    label = State()
    api_key = State()
    secret = State()
    passphrase = State()
    replace = State()  # a verified-to-be-new key waits while the user says where it goes


# ----------------------------------------------------------------------------- parsing


def parse_exchange(text: str) -> str | None:
    """A supported exchange id from what the user typed (``binance``, ``OKX``), else None."""
    wanted = text.strip().lower()
    return wanted if wanted in supported_exchanges() else None


def label_problem(text: str | None) -> str | None:
    if not text or not text.strip():
        return _("Send the label as text, or press Skip.")
    if len(text.strip()) > LABEL_MAX:
        return ngettext(
            "Labels are at most {n} character.", "Labels are at most {n} characters.", LABEL_MAX
        ).format(n=LABEL_MAX)
    if not text.strip().isprintable():
        return _("Labels are one line of ordinary text.")
    return None


# ----------------------------------------------------------------------------- rendering


def exchange_keyboard(page: int) -> InlineKeyboardMarkup:
    """Page 0: the big three and "More…"; pages 1+: every other supported exchange, 24 at a time."""
    keyboard = InlineKeyboardBuilder()
    others = [e for e in supported_exchanges() if e not in PREFERRED]
    pages = math.ceil(len(others) / EXCHANGES_PER_PAGE)
    page = min(max(page, 0), pages)
    if page == 0:
        for exchange in PREFERRED:
            keyboard.button(text=exchange_name(exchange), callback_data=ExchangeCb(exchange=exchange))
        keyboard.button(text=_("More…"), callback_data=ExchangePageCb(page=1))
        widths = [len(PREFERRED), 1]
    else:
        shown = others[(page - 1) * EXCHANGES_PER_PAGE : page * EXCHANGES_PER_PAGE]
        for exchange in shown:
            keyboard.button(text=exchange_name(exchange), callback_data=ExchangeCb(exchange=exchange))
        keyboard.button(text="‹", callback_data=ExchangePageCb(page=page - 1))
        if page < pages:
            keyboard.button(text="›", callback_data=ExchangePageCb(page=page + 1))
        widths = [3] * math.ceil(len(shown) / 3) + [2 if page < pages else 1]
    keyboard.button(text=_("Cancel"), callback_data=LinkStepCb(step=LinkStep.CANCEL))
    keyboard.adjust(*widths, 1)
    return keyboard.as_markup()


def _buttons(*steps: tuple[str, LinkStep]) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for text, step in steps:
        keyboard.button(text=text, callback_data=LinkStepCb(step=step))
    return keyboard.as_markup()


def _cancel_button() -> InlineKeyboardMarkup:
    return _buttons((_("Cancel"), LinkStep.CANCEL))


def key_how_to(exchange: str) -> str:
    """Where the key is made and which permissions to tick, in the exchange's own words."""
    if exchange == "binance":
        return _(
            "Create it by hand in Binance's API Management (“System generated”). Do not use “Fast "
            "Connect” (one-tap OAuth linking) for a sub-account, or if you live in a country where "
            "futures trading is not allowed: it links the wrong account or fails. “Enable Reading” "
            "is enough for monitoring; one-tap order cancellation needs “Enable Spot & Margin "
            "Trading”. Never enable withdrawals."
        )
    if exchange == "bybit":
        return _(
            "Create it in Bybit under API → Create New Key → “System-generated API Keys”. "
            "“Read-Only” is enough for monitoring; one-tap order cancellation needs “Read-Write” "
            "with Orders. Never tick Withdrawal."
        )
    if exchange == "okx":
        return _(
            "Create it in OKX under API keys → Create API key, and note the passphrase you choose. "
            "“Read” is enough for monitoring; one-tap order cancellation needs “Trade”. Never tick Withdraw."
        )
    return _(
        "Create it in the exchange's API management. A read-only key is enough for monitoring; "
        "one-tap order cancellation needs the trading permission. Never enable withdrawals."
    )


def key_prompt(exchange: str) -> Html:
    """The wizard's key step as Html, so it keeps its markup when added after another Html line
    (Update API key puts the connection's title first)."""
    return join(
        "\n\n",
        [
            html(
                _("Now send the <b>API key</b> of your {exchange} account."), exchange=exchange_name(exchange)
            ),
            key_how_to(exchange),
            _("I delete every message with a key or secret the moment it arrives."),
        ],
    )


def permissions_line(info: KeyInfo) -> str:
    """What the key may do, in the three words that matter, whatever the exchange calls them."""
    names = [_("read")]
    if info.can_trade:
        names.append(_("trade"))
    if info.can_withdraw:
        names.append(_("withdraw"))
    return html(_("Permissions: {list}"), list=", ".join(names))


def warning_lines(exchange: str, info: KeyInfo, now: datetime, egress_ips: Sequence[str] = ()) -> list[str]:
    """What to fix about the key, most dangerous first, with the policy date where there is one."""
    lines: list[str] = []
    for warning in key_warnings(exchange, info, now):
        when = formatting.day(warning.due) if warning.due else ""
        if warning.code == "withdraw_enabled":
            lines.insert(
                0,
                "⚠️ "
                + _(
                    "<b>Withdrawals are enabled</b> on this key: whoever gets it can move your funds "
                    "out. keysentry never needs that; create a key without withdrawals."
                ),
            )
        elif warning.code == "no_ip_restriction" and when:
            lines.append(
                "⚠️ "
                + html(
                    _(
                        "No IP whitelist: under {exchange}'s policy such a key stops working (or loses "
                        "trading) on {date}. Whitelist keysentry's IP to keep it working."
                    ),
                    exchange=exchange_name(exchange),
                    date=when,
                )
            )
            lines.append(egress_line(egress_ips))
        elif warning.code == "no_ip_restriction":
            lines.append("⚠️ " + _("No IP whitelist: anyone who gets this key can use it from anywhere."))
            lines.append(egress_line(egress_ips))
        elif warning.code == "expires_soon" and when:
            lines.append("⏰ " + html(_("The key expires on {date}."), date=when))
        elif warning.code == "read_only":
            lines.append(_("Read-only key: monitoring works; cancelling orders from here needs “Trade”."))
    return [line for line in lines if line]


def verified_text(
    exchange: str,
    label: str,
    result: ProbeResult,
    key_hint: str,
    *,
    updated: bool,
    egress_ips: Sequence[str] = (),
) -> str:
    title = connection_title(exchange, label, key_hint)
    head = html(
        _("✅ New key saved for <b>{title}</b>. Same connection, history kept.")
        if updated
        else _("✅ <b>{title}</b> linked. I check it around the clock and tell you here when it breaks."),
        title=title,
    )
    lines: list[str] = [head, html(_("Key: {hint}"), hint=code(key_hint))]
    lines.append(html(_("Balance: {summary}"), summary=balance_summary(result.balances or {}, top=3)))
    if result.key_info is not None:
        lines.append(permissions_line(result.key_info))
        lines += warning_lines(exchange, result.key_info, result.checked_at, egress_ips)
    lines.append(_("Everything at a glance: /status"))
    return "\n".join(lines)


def rejected_text(
    exchange: str, result: ProbeResult, *, updated: bool, egress_ips: Sequence[str] = ()
) -> str:
    """Why the key was not taken and the way on; at link time that is /link again, not a button."""
    if result.verdict in TRANSIENT:
        head = _("{exchange} could not check the key: {reason}.")
    else:
        head = _("{exchange} did not accept the key: {reason}.")
    lines: list[str] = [
        "❌ " + html(head, exchange=exchange_name(exchange), reason=verdict_reason(result.verdict)),
        verdict_advice(result.verdict, result.detail, at_link=not updated, egress_ips=egress_ips),
    ]
    if updated:
        lines.append(_("Nothing changed: the old key stays."))
    elif result.verdict in {Verdict.PERMISSION_MISSING, Verdict.UNKNOWN}:
        lines.append(_("Nothing was saved. Try again: /link"))  # the advice above does not say how
    else:
        lines.append(_("Nothing was saved."))
    return "\n".join(lines)


def already_linked(twin: Connection) -> tuple[str, InlineKeyboardMarkup]:
    """The same key sent again: name the connection that holds it and offer its Update API key."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(
        text="🔑 " + _("Update API key"),
        callback_data=ConnCb(action=ConnAction.UPDATE, cid=twin.id, v=connection_token(twin)),
    )
    text = html(
        _(
            "This key is already linked as <b>{title}</b>. To give that connection a new key, "
            "use “Update API key” there. Nothing was saved."
        ),
        title=connection_title(twin.exchange, twin.label, twin.key_hint),
    )
    return text, keyboard.as_markup()


def replace_question(failing: Connection) -> tuple[str, InlineKeyboardMarkup]:
    """A new key while a connection of that exchange is refused: replace it, or link both?"""
    text = html(
        _(
            "Your <b>{title}</b> is failing: {reason}. Replace the failing one? It keeps its history, "
            "mutes and 3Commas mapping, with this key instead of the old one."
        ),
        title=connection_title(failing.exchange, failing.label, failing.key_hint),
        reason=verdict_reason(failing.verdict),
    )
    markup = _buttons(
        ("♻️ " + _("Replace the failing one"), LinkStep.REPLACE),
        ("➕ " + _("Link as a new connection"), LinkStep.SEPARATE),
        (_("Cancel"), LinkStep.CANCEL),
    )
    return text, markup


# ----------------------------------------------------------------------------- flow helpers


async def begin(message: Message, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(LinkFlow.exchange)
    await message.answer(
        _("Which exchange is the key from? Tap it, or type its name."), reply_markup=exchange_keyboard(0)
    )


async def ask_label(message: Message, state: FSMContext, exchange: str, *, edit: bool = False) -> None:
    await state.set_state(LinkFlow.label)
    await state.update_data(exchange=exchange)
    text = html(
        ngettext(
            "<b>{exchange}</b>. Give this connection a label, e.g. “Main” or “Grid bot” "
            "(up to {n} character), or press Skip.",
            "<b>{exchange}</b>. Give this connection a label, e.g. “Main” or “Grid bot” "
            "(up to {n} characters), or press Skip.",
            LABEL_MAX,
        ),
        exchange=exchange_name(exchange),
        n=LABEL_MAX,
    )
    markup = _buttons((_("Skip"), LinkStep.SKIP), (_("Cancel"), LinkStep.CANCEL))
    if edit:
        await message.edit_text(text, reply_markup=markup)
    else:
        await message.answer(text, reply_markup=markup)


async def ask_key(message: Message, state: FSMContext, label: str) -> None:
    data = await state.update_data(label=label)
    await state.set_state(LinkFlow.api_key)
    await message.answer(key_prompt(data["exchange"]), reply_markup=_cancel_button())


async def finish(
    message: Message,
    state: FSMContext,
    store: KeyStore,
    user: User,
    bot: Bot,
    credentials: Credentials,
    settings: Settings,
) -> None:
    """The last step of both flows: verify, then save a new connection or swap the key in place."""
    data = await state.get_data()
    await state.clear()
    await _verify_collected(
        message, state, store, user, bot, data, credentials, settings, cid=data.get("cid")
    )


async def _verify_collected(
    message: Message,
    state: FSMContext,
    store: KeyStore,
    user: User,
    bot: Bot,
    data: dict[str, Any],
    credentials: Credentials,
    settings: Settings,
    *,
    cid: int | None,
    placed: bool = False,
) -> None:
    """:func:`verify_and_save` for the exchange and label the wizard's ``data`` collected."""
    await verify_and_save(
        message,
        state,
        store,
        user,
        bot,
        data["exchange"],
        data.get("label", ""),
        credentials,
        settings,
        cid=cid,
        placed=placed,
    )


async def verify_and_save(
    message: Message,
    state: FSMContext,
    store: KeyStore,
    user: User,
    bot: Bot,
    exchange: str,
    label: str,
    credentials: Credentials,
    settings: Settings,
    *,
    cid: int | None = None,
    placed: bool = False,
) -> None:
    """Refuse a key linked already; offer a failing connection's place to a new key (unless
    ``placed``: the user chose already); else verify it with the exchange and save it."""
    twin = await store.linked_as(user_id=user.id, exchange=exchange, api_key=credentials.api_key)
    if twin is not None and twin.id != cid:
        text, markup = already_linked(twin)
        await message.answer(text, reply_markup=markup)
        return
    failing = None if cid is not None or placed else await store.failing(user_id=user.id, exchange=exchange)
    if failing is not None:
        await state.set_state(LinkFlow.replace)
        await state.set_data(
            {
                "exchange": exchange,
                "label": label,
                "failing": failing.id,
                SEALED_FIELD: store.vault.seal(credentials).decode(),
            }
        )
        text, markup = replace_question(failing)
        await message.answer(text, reply_markup=markup)
        return
    with suppress(TelegramAPIError):  # only a courtesy while the exchange answers
        await bot.send_chat_action(message.chat.id, "typing")
    outcome = await store.verify_and_store(
        user_id=user.id,
        exchange=exchange,
        label=label,
        credentials=credentials,
        connection_id=cid,
    )
    updated = cid is not None
    if outcome.result.verdict is not Verdict.OK:
        text = rejected_text(exchange, outcome.result, updated=updated, egress_ips=settings.egress_ips)
    elif outcome.saved is None:
        text = _("That connection no longer exists; nothing was saved.")
    else:
        text = verified_text(
            exchange,
            outcome.saved,
            outcome.result,
            mask(credentials.api_key),
            updated=updated,
            egress_ips=settings.egress_ips,
        )
    await message.answer(text)


# ----------------------------------------------------------------------------- commands


async def cancel(message: Message, state: FSMContext) -> None:
    if await state.get_state() is None:
        await message.answer(_("Nothing to cancel."))
        return
    await state.clear()
    await message.answer(_("Cancelled. Nothing was saved."))


async def link_command(
    message: Message,
    command: CommandObject,
    state: FSMContext,
    key_store: KeyStore,
    settings: Settings,
    user: User,
    bot: Bot,
) -> None:
    """``/link`` starts the wizard; ``/link okx`` skips the exchange step; with keys it is one-shot."""
    args = (command.args or "").split()
    if len(args) > 1:
        await forget_secret_message(message)
    if not args:
        await begin(message, state)
        return
    exchange = parse_exchange(args[0])
    if exchange is None:
        await message.answer(
            html(
                _("I do not know the exchange “{name}”. Send /link and pick it from the list."),
                name="…" if carries_secret(args[0]) else args[0][:32],  # never echo what may be a key
            )
        )
        return
    if len(args) == 1:
        await ask_label(message, state, exchange)
        return
    wanted = 4 if needs_passphrase(exchange) else 3
    if len(args) != wanted:
        usage = "/link {exchange} KEY SECRET" + (" PASSPHRASE" if wanted == 4 else "")
        await message.answer(
            html(
                _("Usage: <code>{usage}</code> in one message, or just /link for step by step."),
                usage=usage.format(exchange=exchange),
            )
        )
        return
    problems = [key_problem(args[1]), key_problem(args[2])]
    if wanted == 4:
        problems.append(key_problem(args[3], passphrase=True))
    problem = next((p for p in problems if p), None)
    if problem:
        await message.answer(problem + " " + _("Nothing was saved."))
        return
    await state.clear()
    credentials = Credentials(args[1], args[2], args[3] if wanted == 4 else None)
    await verify_and_save(message, state, key_store, user, bot, exchange, "", credentials, settings)


async def start_button(query: CallbackQuery, state: FSMContext) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await begin(query.message, state)


async def update_button(
    query: CallbackQuery, callback_data: ConnCb, state: FSMContext, sessions: Sessions, user: User
) -> None:
    """Update API key: the key steps of the wizard, for one existing exchange connection."""
    connection = await load_owned_connection(sessions, user.id, callback_data.cid)
    if connection is None or connection.kind != "exchange" or not isinstance(query.message, Message):
        await query.answer(out_of_date(ConnCb.RESEND), show_alert=True)
        return
    await query.answer()
    await state.clear()
    await state.update_data(cid=connection.id, exchange=connection.exchange, label=connection.label)
    await state.set_state(LinkFlow.api_key)
    await query.message.answer(
        html(
            _("New key for <b>{title}</b>."),
            title=connection_title(connection.exchange, connection.label, connection.key_hint),
        )
        + "\n\n"
        + key_prompt(connection.exchange),
        reply_markup=_cancel_button(),
    )


# ----------------------------------------------------------------------------- wizard steps


async def cancel_button(query: CallbackQuery, state: FSMContext) -> None:
    await query.answer()
    await state.clear()
    if isinstance(query.message, Message):
        with suppress(TelegramBadRequest):
            await query.message.edit_text(_("Cancelled. Nothing was saved."))


async def exchange_page(query: CallbackQuery, callback_data: ExchangePageCb) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=exchange_keyboard(callback_data.page))


async def exchange_chosen(query: CallbackQuery, callback_data: ExchangeCb, state: FSMContext) -> None:
    exchange = parse_exchange(callback_data.exchange)
    if exchange is None or not isinstance(query.message, Message):
        await query.answer(_("Unknown exchange."), show_alert=True)
        return
    await query.answer()
    await ask_label(query.message, state, exchange, edit=True)


async def exchange_typed(message: Message, state: FSMContext) -> None:
    exchange = parse_exchange(message.text or "")
    if exchange is None:
        await message.answer(
            _("I do not know that exchange. Tap one of the buttons, or /cancel."),
            reply_markup=exchange_keyboard(0),
        )
        return
    await ask_label(message, state, exchange)


async def label_skipped(query: CallbackQuery, state: FSMContext) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        with suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=None)
        await ask_key(query.message, state, "")


async def label_typed(message: Message, state: FSMContext) -> None:
    problem = label_problem(message.text)
    if problem:
        await message.answer(
            problem, reply_markup=_buttons((_("Skip"), LinkStep.SKIP), (_("Cancel"), LinkStep.CANCEL))
        )
        return
    await ask_key(message, state, " ".join((message.text or "").split()))


def _restart() -> str:
    return _("This step is over. Send /link to start again.")


async def key_received(message: Message, state: FSMContext, vault: Vault) -> None:
    credentials = await take_secret_part(message, state, vault, SecretPart.API_KEY, restart=_restart())
    if credentials is None:
        return
    await state.set_state(LinkFlow.secret)
    await message.answer(
        html(
            _("Got the key <code>{hint}</code> (message deleted). Now send the <b>secret</b>."),
            hint=mask(credentials.api_key),
        ),
        reply_markup=_cancel_button(),
    )


async def secret_received(
    message: Message, state: FSMContext, key_store: KeyStore, settings: Settings, user: User, bot: Bot
) -> None:
    credentials = await take_secret_part(
        message, state, key_store.vault, SecretPart.SECRET, restart=_restart()
    )
    if credentials is None:
        return
    if needs_passphrase((await state.get_data())["exchange"]):
        await state.set_state(LinkFlow.passphrase)
        await message.answer(
            _("Secret received (message deleted). Last step: the <b>passphrase</b> you chose for this key."),
            reply_markup=_cancel_button(),
        )
        return
    await finish(message, state, key_store, user, bot, credentials, settings)


async def passphrase_received(
    message: Message, state: FSMContext, key_store: KeyStore, settings: Settings, user: User, bot: Bot
) -> None:
    part = SecretPart.PASSPHRASE
    credentials = await take_secret_part(message, state, key_store.vault, part, restart=_restart())
    if credentials is None:
        return
    await finish(message, state, key_store, user, bot, credentials, settings)


async def place_chosen(
    query: CallbackQuery,
    callback_data: LinkStepCb,
    state: FSMContext,
    key_store: KeyStore,
    settings: Settings,
    user: User,
    bot: Bot,
) -> None:
    """Replace the failing connection's key in place (its id, history, mutes and 3Commas mapping
    stay as they are), or link the key as a connection of its own."""
    data = await state.get_data()
    await state.clear()
    await query.answer()
    if not isinstance(query.message, Message):
        return
    with suppress(TelegramBadRequest):
        await query.message.edit_reply_markup(reply_markup=None)
    credentials = key_store.vault.open(data[SEALED_FIELD].encode())
    cid = data["failing"] if callback_data.step is LinkStep.REPLACE else None
    await _verify_collected(
        query.message, state, key_store, user, bot, data, credentials, settings, cid=cid, placed=True
    )


_OUR_PREFIXES = frozenset(
    {ExchangeCb.__prefix__, ExchangePageCb.__prefix__, LinkStepCb.__prefix__, StartLinkCb.__prefix__}
)


async def stale_step(query: CallbackQuery) -> None:
    """A wizard button from a step that is over (or forged data): say so, change nothing."""
    await query.answer(_("This step is over. Send /link to start again."))


def _ours(data: str | None) -> bool:
    return (data or "").split(":", 1)[0] in _OUR_PREFIXES


def build_router() -> Router:
    router = Router(name="link")
    router.message.register(cancel, Command("cancel"))
    router.message.register(link_command, Command("link"))
    router.callback_query.register(start_button, StartLinkCb.filter())
    router.callback_query.register(update_button, ConnCb.filter(F.action == ConnAction.UPDATE))
    router.callback_query.register(cancel_button, LinkStepCb.filter(F.step == LinkStep.CANCEL))
    router.callback_query.register(exchange_page, StateFilter(LinkFlow.exchange), ExchangePageCb.filter())
    router.callback_query.register(exchange_chosen, StateFilter(LinkFlow.exchange), ExchangeCb.filter())
    router.message.register(exchange_typed, StateFilter(LinkFlow.exchange), _NOT_COMMAND)
    router.callback_query.register(
        label_skipped, StateFilter(LinkFlow.label), LinkStepCb.filter(F.step == LinkStep.SKIP)
    )
    router.message.register(label_typed, StateFilter(LinkFlow.label), _NOT_COMMAND)
    router.message.register(key_received, StateFilter(LinkFlow.api_key), _NOT_OUR_COMMAND)
    router.message.register(secret_received, StateFilter(LinkFlow.secret), _NOT_OUR_COMMAND)
    router.message.register(passphrase_received, StateFilter(LinkFlow.passphrase), _NOT_OUR_COMMAND)
    router.callback_query.register(
        place_chosen,
        StateFilter(LinkFlow.replace),
        LinkStepCb.filter(F.step.in_({LinkStep.REPLACE, LinkStep.SEPARATE})),
    )
    router.callback_query.register(stale_step, F.data.func(_ours))
    return router
