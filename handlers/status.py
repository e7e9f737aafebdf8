"""/status: the portfolio page — one line per connection, with Refresh, Orders and Remove buttons.

The page is rendered from the connection rows only (no exchange calls), so it opens instantly.
Every button carries the connection's version token and is re-checked before its handler runs
(``bot.middlewares.ButtonCheck``); replays, old and forged buttons get "out of date" and change
nothing. The Orders button is answered by the orders
router, Update API key by the link router.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb, StatusPageCb, TcRepairCb
from bot.settings import Settings
from bot.texts import ago, connection_title, egress_line, out_of_date, verdict_advice, verdict_reason
from bot.views import threecommas as tc_views
from bot.views.balances import balance_summary
from bot.views.confirm import confirmation
from bot.views.editing import edit_in_place
from bot.views.html import TELEGRAM_LIMIT, Html, html, join, pages, split, visible_length
from services.core.verdicts import Verdict
from services.exchanges.probes import KeyInfo
from services.monitoring.checkers import FUTURES_BALANCES
from services.monitoring.mutes import muted_everything_until
from services.monitoring.refresh import Refreshes, remove_owned_connection
from services.orders.listing import Deps
from services.storage.button_tokens import connection_token
from services.storage.models import Connection, User
from services.storage.users import user_connections

PAGE_SIZE = 8
CHECKING_AFTER_S = 1.0  # a refresh slower than this first shows "checking…"


# ----------------------------------------------------------------------------- rendering


def verdict_of(connection: Connection) -> Verdict:
    try:
        return Verdict(connection.verdict)
    except ValueError:
        return Verdict.UNKNOWN


def needs_new_key(connection: Connection) -> bool:
    """The user must act on the key itself: the ⛔ Update button comes first."""
    return connection.kind == "exchange" and verdict_of(connection).is_key_problem


def status_mark(connection: Connection) -> str:
    """🟢 works · 🔴 key rejected or incident confirmed · 🟡 a failure not confirmed yet · ⚪ never checked.

    The latest verdict wins over the incident state: a Refresh or a new key shows its result
    at once, while the poller confirms it (and sends alerts or recoveries) shortly after.
    """
    if connection.last_check_at is None:
        return "⚪"
    verdict = verdict_of(connection)
    if verdict is Verdict.OK:
        return "🟢"
    if verdict.is_key_problem or connection.state == "failing":
        return "🔴"
    return "🟡"


def expiry_note(key_info: dict[str, Any], now: datetime) -> str:
    """When the key (Bybit) or its trading permission (Binance) ends, as the exchange reports it."""
    info = KeyInfo.from_json(key_info) if key_info else None
    expires = info.expires_at if info is not None else None
    if expires is None:
        return ""
    if expires <= now:
        return _("expired {date}").format(date=formatting.day(expires))
    return _("expires {date}").format(date=formatting.day(expires))


def muted_until(c: Connection, user_muted: datetime | None, now: datetime) -> datetime | None:
    """When alerts for this connection start again, if they are muted now (its own or the user's mute)."""
    ends = [m for m in (c.muted_until, user_muted) if m is not None and m > now]
    return max(ends) if ends else None


def connection_line(
    number: int,
    c: Connection,
    now: datetime,
    *,
    checking: bool,
    user_muted: datetime | None = None,
    egress_ips: Sequence[str] = (),
) -> Html:
    """Two or three lines about one connection, with what to do about a failure."""
    lines: list[str] = [
        html(
            "{mark} {number}. <b>{title}</b> — {balance}",
            mark=status_mark(c),
            number=number,
            title=connection_title(c.exchange, c.label, c.key_hint),
            balance=balance_summary(c.balances),
        )
    ]
    futures = (c.check_state or {}).get(FUTURES_BALANCES) if c.kind == "exchange" else None
    if futures is not None:
        lines.append("    " + _("futures wallet: {balance}").format(balance=balance_summary(futures)))
    if checking:
        details = ["⏳ " + _("checking…")]
    elif c.last_check_at is None:
        details = [_("not checked yet")]
    else:
        details = [_("last OK: {when}").format(when=ago(c.last_ok_at, now))]
        if verdict_of(c) is not Verdict.OK:
            details.append(_("checked {when}").format(when=ago(c.last_check_at, now)))
    note = expiry_note(c.key_info, now)
    if note:
        details.append(note)
    silent = muted_until(c, user_muted, now)
    if silent is not None:
        details.append("🔕 " + _("until {time}").format(time=formatting.until(silent, now)))
    lines.append(html("    {details}", details=join(" · ", details)))
    verdict = verdict_of(c)
    if c.last_check_at is not None and verdict is not Verdict.OK and not checking:
        advice = verdict_advice(verdict, c.verdict_detail, egress_ips=egress_ips)
        lines.append(html("    ⚠️ {reason}. {advice}", reason=verdict_reason(verdict), advice=advice))
    lines += tc_views.account_lines(c.check_state) if c.kind == "threecommas" else []
    return join("\n", lines)


@dataclass(frozen=True)
class Portfolio:
    """Every connection's entry, and how they fall into pages that each fit one message."""

    connections: Sequence[Connection]
    entries: list[Html]
    runs: list[range]

    def page_of(self, connection_id: int) -> int:
        ids = [c.id for c in self.connections]
        if connection_id not in ids:
            return 0
        position = ids.index(connection_id)
        return next(page for page, run in enumerate(self.runs) if position in run)


def _header(total: int, page: int, pages: int, user_muted: datetime | None, now: datetime) -> Html:
    header = html(_("<b>Your connections</b>: {n}"), n=total)
    if pages > 1:
        header = join(" · ", [header, _("page {page} of {pages}").format(page=page + 1, pages=pages)])
    if user_muted is not None and user_muted > now:
        muted = "🔕 " + _("All alerts muted until {time}.").format(time=formatting.until(user_muted, now))
        header = join("\n", [header, muted])
    return header


def portfolio(
    connections: Sequence[Connection],
    now: datetime,
    *,
    checking: int | None = None,
    notice: Html = Html(),
    user_muted: datetime | None = None,
    egress_ips: Sequence[str] = (),
) -> Portfolio:
    """Entries packed into pages of at most :data:`PAGE_SIZE` that fit Telegram's limit, measured
    as Telegram measures it (bot/views/html.py), with room for the longest header and the notice."""
    entries = [
        connection_line(n, c, now, checking=c.id == checking, user_muted=user_muted, egress_ips=egress_ips)
        for n, c in enumerate(connections, 1)
    ]
    widest = len(connections) or 1
    frame = join(
        "\n\n", [notice, _header(widest, widest, widest + 1, user_muted, now), egress_line(egress_ips)]
    )
    room = TELEGRAM_LIMIT - visible_length(frame) - 4  # the blank lines around the entries
    return Portfolio(connections, entries, pages(entries, room=room, most=PAGE_SIZE))


def render_page(
    connections: Sequence[Connection],
    page: int,
    now: datetime,
    *,
    checking: int | None = None,
    notice: Html = Html(),
    user_muted: datetime | None = None,
    egress_ips: Sequence[str] = (),
    around: int | None = None,
) -> tuple[Html, InlineKeyboardMarkup | None]:
    """One page of the portfolio (the page holding ``around`` if given): within Telegram's length
    and 100 buttons whatever the data."""
    laid = portfolio(
        connections, now, checking=checking, notice=notice, user_muted=user_muted, egress_ips=egress_ips
    )
    if around is not None:
        page = laid.page_of(around)
    pages_total = len(laid.runs)
    page = min(max(page, 0), pages_total - 1)
    head = [notice] if notice else []
    head.append(_header(len(connections), page, pages_total, user_muted, now))
    if not connections:
        return join("\n\n", [*head, _("Nothing linked yet. Link an exchange key with /link.")]), None
    run = laid.runs[page]
    foot = [egress_line(egress_ips)] if egress_ips else []
    text = join("\n\n", [*head, *(laid.entries[i] for i in run), *foot])
    shown = [(i + 1, connections[i]) for i in run]
    # One entry longer than a whole message (hundreds of 3Commas accounts) is cut at a line.
    return split(text)[0], _keyboard(shown, page, pages_total)


def _conn(c: Connection, action: ConnAction) -> ConnCb:
    return ConnCb(action=action, cid=c.id, v=connection_token(c))


def _keyboard(shown: list[tuple[int, Connection]], page: int, pages: int) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    widths = []
    for number, c in shown:
        row: list[tuple[str, ConnCb | TcRepairCb]] = []
        if needs_new_key(c):
            row.append(("⛔ " + _("{n} Update API key").format(n=number), _conn(c, ConnAction.UPDATE)))
        if c.kind == "threecommas":
            for account_id in tc_views.broken_accounts(c.check_state):
                repair_text, repair_data = tc_views.repair_button(c.id, account_id, connection_token(c))
                row.append((f"{number} " + repair_text, repair_data))
        row.append(("🔄 " + _("{n} Refresh").format(n=number), _conn(c, ConnAction.REFRESH)))
        if c.kind == "exchange":
            row.append(("📋 " + _("{n} Orders").format(n=number), _conn(c, ConnAction.ORDERS)))
        row.append(("🗑 " + _("{n} Remove").format(n=number), _conn(c, ConnAction.REMOVE)))
        for text, data in row:
            keyboard.button(text=text, callback_data=data)
        widths.append(len(row))
    nav: list[tuple[str, StatusPageCb]] = []
    if page > 0:
        nav.append(("‹ " + _("Previous"), StatusPageCb(page=page - 1)))
    if page < pages - 1:
        nav.append((_("Next") + " ›", StatusPageCb(page=page + 1)))
    for text, page_data in nav:
        keyboard.button(text=text, callback_data=page_data)
    if nav:
        widths.append(len(nav))
    keyboard.adjust(*widths)
    return keyboard.as_markup()


async def load_page(
    deps: Deps,
    user: User,
    settings: Settings,
    *,
    page: int = 0,
    around: int | None = None,
    checking: int | None = None,
    notice: Html = Html(),
) -> tuple[Html, InlineKeyboardMarkup | None]:
    """The user's page ``page``, or the page holding connection ``around``."""
    connections = await user_connections(deps.sessions, user.id)
    # may have changed meanwhile
    user_muted = await muted_everything_until(deps.sessions, user.id, deps.clock.now())
    return render_page(
        connections,
        page,
        deps.clock.now(),
        user_muted=user_muted,
        egress_ips=settings.egress_ips,
        around=around,
        checking=checking,
        notice=notice,
    )


# ----------------------------------------------------------------------------- handlers


async def status_command(message: Message, order_deps: Deps, user: User, settings: Settings) -> None:
    text, markup = await load_page(order_deps, user, settings)
    await message.answer(text, reply_markup=markup)


async def _redraw(
    query: CallbackQuery, bot: Bot, deps: Deps, user: User, settings: Settings, **kwargs: Any
) -> None:
    """Edit the pressed message (a /status page or an alert) into a fresh page (see :func:`load_page`)."""
    await edit_in_place(query, bot, *await load_page(deps, user, settings, **kwargs))


async def status_page(
    query: CallbackQuery,
    callback_data: StatusPageCb,
    order_deps: Deps,
    user: User,
    settings: Settings,
    bot: Bot,
) -> None:
    await query.answer()
    await _redraw(query, bot, order_deps, user, settings, page=callback_data.page)


async def refresh(
    query: CallbackQuery,
    callback_data: ConnCb,
    refreshes: Refreshes,
    order_deps: Deps,
    user: User,
    settings: Settings,
    bot: Bot,
) -> None:
    """Re-probe now and edit the pressed message into the page holding this connection, which
    shows the result; after a second without an answer, show "checking…" first."""
    await query.answer(_("Checking…"))
    cid = callback_data.cid
    task = refreshes.start(cid, user.id)
    try:
        outcome = await asyncio.wait_for(asyncio.shield(task), CHECKING_AFTER_S)
    except TimeoutError:
        await _redraw(query, bot, order_deps, user, settings, around=cid, checking=cid)
        outcome = await task
    if outcome.retry_after_s is not None:
        seconds = math.ceil(outcome.retry_after_s)
        notice = html(
            "⏳ "
            + ngettext(
                "You have checked a lot just now: try Refresh again in {n} second.",
                "You have checked a lot just now: try Refresh again in {n} seconds.",
                seconds,
            ),
            n=seconds,
        )
    elif outcome.checked:
        notice = Html()
    else:
        notice = html("⏳ " + _("The next check runs within a minute."))
    await _redraw(query, bot, order_deps, user, settings, around=cid, notice=notice)


async def remove_ask(
    query: CallbackQuery, callback_data: ConnCb, order_deps: Deps, user: User, settings: Settings, bot: Bot
) -> None:
    await query.answer()
    connections = await user_connections(order_deps.sessions, user.id)
    connection = next((c for c in connections if c.id == callback_data.cid), None)
    if connection is None:  # removed since the button was checked
        return
    laid = portfolio(connections, order_deps.clock.now(), egress_ips=settings.egress_ips)
    keyboard = confirmation(
        "🗑 " + _("Yes, remove"),
        callback_data.model_copy(update={"action": ConnAction.REMOVE_CONFIRMED}),
        "‹ " + _("Keep it"),
        StatusPageCb(page=laid.page_of(connection.id)),
    )
    text = html(
        _(
            "Remove <b>{title}</b>? keysentry stops watching it and deletes its encrypted key. "
            "The key itself keeps working on the exchange: delete it there too if you no longer use it."
        ),
        title=connection_title(connection.exchange, connection.label, connection.key_hint),
    )
    await edit_in_place(query, bot, text, keyboard)


async def remove_confirmed(
    query: CallbackQuery,
    callback_data: ConnCb,
    order_deps: Deps,
    user: User,
    settings: Settings,
    bot: Bot,
) -> None:
    """Delete the connection the confirmation named; a second tap in flight at once removes
    nothing more and only redraws the page."""
    await query.answer(_("Removing…"))
    outcome = await remove_owned_connection(
        order_deps.sessions, user.id, callback_data.cid, order_deps.clock.now()
    )
    notice = Html()
    if outcome is not None and outcome.removed:
        title = connection_title(outcome.exchange, outcome.label, outcome.key_hint)
        notice = html("🗑 " + _("Removed <b>{title}</b>."), title=title)
    await _redraw(query, bot, order_deps, user, settings, notice=notice)


def _stale_or_forged(query: CallbackQuery) -> bool:
    """Our buttons that no handler above took: unparseable (an old format without a version token,
    a forged one), an unknown action, an old page."""
    data = query.data or ""
    prefix = data.split(":", 1)[0]
    if prefix == StatusPageCb.__prefix__:
        return True
    if prefix != ConnCb.__prefix__:
        return False
    try:
        ConnCb.unpack(data)
    except (TypeError, ValueError):  # an unknown action or a row id out of range
        return True
    return False


async def stale_button(query: CallbackQuery) -> None:
    await query.answer(out_of_date(ConnCb.RESEND), show_alert=True)


def build_router() -> Router:
    router = Router(name="status")
    router.message.register(status_command, Command("status"))
    router.callback_query.register(status_page, StatusPageCb.filter())
    router.callback_query.register(refresh, ConnCb.filter(F.action == ConnAction.REFRESH))
    router.callback_query.register(remove_ask, ConnCb.filter(F.action == ConnAction.REMOVE))
    router.callback_query.register(remove_confirmed, ConnCb.filter(F.action == ConnAction.REMOVE_CONFIRMED))
    router.callback_query.register(stale_button, _stale_or_forged)
    return router
