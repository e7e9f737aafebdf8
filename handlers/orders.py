"""/orders and the Orders button: open orders, what they lock, and cancelling orphans.

Handlers only parse the button, call :mod:`services.orders.listing` and render. A page holds at most
:data:`PAGE_SIZE` orders, fewer when their lines are long, so text (4096 UTF-16 units, measured by
bot/views/html.py) and keyboard stay inside Telegram's limits whatever the orders; every button
names a stored row, never an order id, with its version token: ``bot.middlewares.ButtonCheck``
answers an out-of-date one before any handler here runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb, OrdersAction, OrdersCb
from bot.texts import ago, button_title, connection_title, deal_words, refusal_text
from bot.views.confirm import confirmation
from bot.views.editing import edit_in_place, edit_or_send
from bot.views.html import TELEGRAM_LIMIT, Html, bold, html, join, pages, plain, split, visible_length
from services.exchanges.classifier import Classification
from services.orders.attribution import Attribution
from services.orders.cancel import CancelOutcome, CancelResult, cancel_all_orphans, cancel_order, total_freed
from services.orders.listing import (
    Deps,
    Listing,
    ListingError,
    ListingResult,
    TryLater,
    load_listing,
    owned_row,
    row_lock,
)
from services.orders.listing_gate import Ticket, Turn, listing_ticket
from services.orders.locked_funds import Lock
from services.storage.button_tokens import connection_token, listed_order_token
from services.storage.models import ListedOrder, User
from services.storage.users import user_connections

PAGE_SIZE = 15
MAX_FUND_LINES = 10


# ----------------------------------------------------------------------------- rendering


def num(value: Decimal | None) -> str:
    """An amount or price in the user's locale, without exponent or trailing zeros (``0.01``, ``65,000``)."""
    if value is None:
        return "?"
    return formatting.coin(value)


def lock_text(lock: Lock) -> Html:
    if lock.amount is None:
        return html(_("margin in {currency}"), currency=lock.currency)
    return html("{amount} {currency}", amount=num(lock.amount), currency=lock.currency)


def order_text(side: str, amount: str, symbol: str) -> Html:
    """``BUY 0.01 BTC/USDT``: what an order is, in a line."""
    return html("{side} {amount} {symbol}", side=side.upper(), amount=num(Decimal(amount)), symbol=symbol)


def _row_line(number: int, row: ListedOrder) -> Html:
    marks = {
        Attribution.ACTIVE.value: "🟢 " + _("active deal"),
        Attribution.ORPHAN.value: "🟠 " + _("orphan"),
        Attribution.UNKNOWN.value: "⚪ " + _("unknown"),
    }
    mark = marks[row.attribution]
    deal = ""
    if row.deal_ref:
        deal = " · " + deal_words(row.deal_ref)
        if row.attribution == Attribution.ORPHAN.value:
            deal += " " + _ended(row.deal_ended)
    lock = lock_text(row_lock(row))
    if row.outcome == CancelOutcome.CANCELLED:
        mark, funds = "✅ " + _("cancelled"), html(_("freed {what}"), what=lock)
    elif row.outcome is not None:
        mark, funds = "▫️ " + _("no longer open"), html(_("locks nothing now"))
    else:
        funds = html(_("locks {what}"), what=lock)
    return html(
        "{number}. {mark}{deal}\n    {order} @ {price} · {locks}",
        number=number,
        mark=mark,
        deal=deal,  # escaped: 3Commas words
        order=order_text(row.side, row.amount, row.symbol),
        price=num(Decimal(row.price)),
        locks=funds,
    )


def _ended(how: str | None) -> str:
    """How an orphan's deal ended: the user asks "did I cancel it, or did it fail?"."""
    words = {"completed": _("(completed)"), "cancelled": _("(cancelled)"), "failed": _("(failed)")}
    return words.get(how or "", _("(finished)"))


def _funds_lines(listing: Listing) -> list[str]:
    lines: list[str] = []
    for funds in listing.funds.currencies[:MAX_FUND_LINES]:
        line = html(
            _("{currency}: {locked} locked by orders (orphans {orphans}) · free {free} of {total}"),
            currency=bold(funds.currency),
            locked=num(funds.locked_by_orders),
            orphans=num(funds.locked_by_orphans),
            free=num(funds.free),
            total=num(funds.total),
        )
        if funds.locked_by_orphans and funds.free_after_cancelling_orphans is not None:
            after = _("free {after} after cancelling orphans").format(
                after=num(funds.free_after_cancelling_orphans)
            )
            line = join(" → ", [line, after])
        lines.append(line)
    hidden = len(listing.funds.currencies) - MAX_FUND_LINES
    if hidden > 0:
        lines.append(ngettext("…and {n} more currency", "…and {n} more currencies", hidden).format(n=hidden))
    margin = len(listing.funds.margin_orders)
    if margin:
        lines.append(
            ngettext(
                "{n} derivative order holds margin that depends on leverage; not counted above.",
                "{n} derivative orders hold margin that depends on leverage; not counted above.",
                margin,
            ).format(n=margin)
        )
    return lines


def _notes(listing: Listing) -> list[str]:
    notes = listing.notes
    if not notes.get("threecommas_linked") and notes.get("threecommas_key"):
        return [
            "ℹ️ "
            + _(
                "None of your 3Commas accounts is mapped to this key, so no order can be matched to a "
                "deal and none is offered as an orphan. Map the account: /link3c."
            )
        ]
    if not notes.get("threecommas_linked"):
        return [
            "ℹ️ "
            + _(
                "No 3Commas account is mapped to this key, so no order can be matched to a deal "
                "and none is offered as an orphan. Link 3Commas with /link3c."
            )
        ]
    if not notes.get("threecommas_complete"):
        return [
            "⚠️ " + _("3Commas could not be read completely, so no order is offered as an orphan this time.")
        ]
    return []


@dataclass(frozen=True)
class _Layout:
    """A listing's blocks, and its orders packed into pages that each fit one message."""

    head: Html
    funds: Html
    entries: list[Html]
    runs: list[range]


def _foot(page: int, pages_total: int, now_text: str) -> str:
    return _("Page {page}/{pages} · listed {when}").format(page=page + 1, pages=pages_total, when=now_text)


def _layout(listing: Listing, now_text: str, banner: Html) -> _Layout:
    """Header, funds and a page's orders within Telegram's limit as Telegram measures it
    (bot/views/html.py): pages hold at most :data:`PAGE_SIZE` orders, fewer when lines are long."""
    title = connection_title(
        listing.connection.exchange, listing.connection.label, listing.connection.key_hint
    )
    head = join(
        "\n",
        [
            *([banner, ""] if banner else []),
            html("📋 <b>{title}</b> — {counts}", title=title, counts=counts_text(listing)),
            *_notes(listing),
        ],
    )
    funds = join("\n", _funds_lines(listing))
    entries = [_row_line(number, row) for number, row in enumerate(listing.rows, 1)]
    widest = len(entries) + 1
    frame = join("\n\n", [head, funds, _foot(widest, widest, now_text)])
    room = TELEGRAM_LIMIT - visible_length(frame) - 4  # the blank lines around the orders
    return _Layout(head, funds, entries, pages(entries, room=room, most=PAGE_SIZE, gap="\n"))


def render(
    listing: Listing, page: int, now_text: str, banner: Html = Html(), *, around: int | None = None
) -> tuple[Html, InlineKeyboardMarkup]:
    """One page of a listing (the page holding row ``around`` if given): header, funds, the page's
    orders, and its buttons."""
    laid = _layout(listing, now_text, banner)
    if around is not None:
        position = next((i for i, row in enumerate(listing.rows) if row.id == around), 0)
        page = next(n for n, run in enumerate(laid.runs) if position in run or not run)
    pages_total = len(laid.runs)
    page = min(max(page, 0), pages_total - 1)
    run = laid.runs[page]
    body = join("\n", [laid.entries[i] for i in run])
    # Blocks are separated by one empty line; an empty block (no funds, no orders) leaves none.
    blocks = [block for block in (laid.head, laid.funds, body, _foot(page, pages_total, now_text)) if block]
    rows = [listing.rows[i] for i in run]
    return split(join("\n\n", blocks))[0], _keyboard(listing, rows, run.start, page, pages_total)


def counts_text(listing: Listing) -> str:
    """How many orders are still open and whose they are: orders cancelled from this list leave the count."""
    still_open = [row for row in listing.rows if row.outcome is None]
    if not still_open:
        return _("no open orders")
    counts = {a.value: sum(1 for r in still_open if r.attribution == a.value) for a in Attribution}
    parts = [ngettext("{n} open order", "{n} open orders", len(still_open)).format(n=len(still_open))]
    groups = [
        ("🟢", counts["active"], ngettext("{n} active deal", "{n} active deals", counts["active"])),
        ("🟠", counts["orphan"], ngettext("{n} orphan", "{n} orphans", counts["orphan"])),
        ("⚪", counts["unknown"], ngettext("{n} unknown", "{n} unknown", counts["unknown"])),
    ]
    shown = [f"{mark} {text.format(n=count)}" for mark, count, text in groups if count]
    return parts[0] + ": " + " · ".join(shown)


def _keyboard(
    listing: Listing, rows: Sequence[ListedOrder], first: int, page: int, pages: int
) -> InlineKeyboardMarkup:
    version = listing.version
    cancels = {  # what a row's button says and does; active deals have none
        Attribution.ORPHAN.value: ("❌ " + _("Cancel {n}"), OrdersAction.CANCEL),
        Attribution.UNKNOWN.value: ("⚠️ " + _("Cancel {n}?"), OrdersAction.ASK_UNKNOWN),
    }
    buttons: list[InlineKeyboardButton] = []
    for i, row in enumerate(rows):
        if row.outcome is not None or row.attribution not in cancels:
            continue
        text, action = cancels[row.attribution]
        data = OrdersCb(action=action, id=row.id, page=page, v=listed_order_token(row))
        buttons.append(InlineKeyboardButton(text=text.format(n=first + i + 1), callback_data=data.pack()))
    keyboard: list[list[InlineKeyboardButton]] = [buttons[i : i + 4] for i in range(0, len(buttons), 4)]
    orphans = len(listing.orphan_rows)
    if orphans:
        keyboard.append(
            [
                InlineKeyboardButton(
                    text="🧹 "
                    + ngettext("Cancel the orphan", "Cancel all {n} orphans", orphans).format(n=orphans),
                    callback_data=OrdersCb(
                        action=OrdersAction.ASK_ALL, id=listing.list_id, page=page, v=version
                    ).pack(),
                )
            ]
        )
    nav = []
    if page > 0:
        nav.append(
            InlineKeyboardButton(
                text="‹",
                callback_data=OrdersCb(
                    action=OrdersAction.PAGE, id=listing.list_id, page=page - 1, v=version
                ).pack(),
            )
        )
    nav.append(
        InlineKeyboardButton(
            text="🔄 " + _("Refresh"),
            callback_data=OrdersCb(action=OrdersAction.REFRESH, id=listing.list_id, page=0, v=version).pack(),
        )
    )
    if page < pages - 1:
        nav.append(
            InlineKeyboardButton(
                text="›",
                callback_data=OrdersCb(
                    action=OrdersAction.PAGE, id=listing.list_id, page=page + 1, v=version
                ).pack(),
            )
        )
    keyboard.append(nav)
    return InlineKeyboardMarkup(inline_keyboard=keyboard)


def outcome_text(result: CancelResult) -> Html:
    """One line on what a tap did, freed funds included."""
    order = Html()
    if result.row is not None:
        order = order_text(result.row.side, result.row.amount, result.row.symbol)
    freed = lock_text(result.freed) if result.freed else "?"
    if result.repeat and result.outcome is CancelOutcome.CANCELLED:
        return html(_("{order} was already cancelled from this list."), order=order)
    if result.outcome is CancelOutcome.KEY_PROBLEM and result.verdict is not None:
        verdict = result.verdict
        return join("\n", [refusal_text(verdict.verdict, verdict.detail), _("Nothing was cancelled.")])
    if result.reconciled and result.outcome is CancelOutcome.CANCELLED:
        return html(
            "✅ " + _("The exchange answered late, but {order} is cancelled: freed {freed}."),
            order=order,
            freed=freed,
        )
    if result.reconciled and result.outcome is CancelOutcome.EXCHANGE_FAILED:
        return html(
            _("The exchange did not answer, and {order} is still open: nothing was cancelled. Try again."),
            order=order,
        )
    templates = {
        CancelOutcome.CANCELLED: "✅ " + _("Cancelled {order}: freed {freed}."),
        CancelOutcome.ALREADY_FILLED: _("{order} was already filled; nothing to cancel."),
        CancelOutcome.ALREADY_CANCELLED: _("{order} was already cancelled."),
        CancelOutcome.NOT_FOUND: _("{order} is no longer open on the exchange."),
        CancelOutcome.LIST_GONE: _("This list changed: that order is no longer in it. Send /orders again."),
        CancelOutcome.CONNECTION_GONE: _("That connection is no longer linked."),
        CancelOutcome.ACTIVE_DEAL: _(
            "That order belongs to an active deal; it is never cancelled from here."
        ),
        CancelOutcome.NEEDS_CONFIRMATION: _("That order needs an explicit confirmation."),
        CancelOutcome.DEAL_ACTIVE_AGAIN: _("Its deal is active again on 3Commas, so {order} was left alone."),
        CancelOutcome.DEAL_UNVERIFIED: _(
            "3Commas could not confirm the deal is finished, so {order} was left alone. Try again later."
        ),
        CancelOutcome.NO_TRADE_PERMISSION: _(
            "The exchange refused: this API key has no trading permission. Cancel {order} on the exchange, "
            "or enable “Trade” on the key."
        ),
        CancelOutcome.EXCHANGE_FAILED: _("The exchange did not answer; nothing was cancelled. Try again."),
        CancelOutcome.IN_PROGRESS: "⏳ " + _("{order} is being cancelled already; nothing was sent again."),
        CancelOutcome.UNVERIFIED: _(
            "The exchange did not answer the cancel of {order} and cannot be asked yet whether it happened. "
            "Nothing more was sent; tap Cancel again in a minute: keysentry checks first."
        ),
    }
    # Templates without a placeholder ignore the values (str.format does).
    return html(templates[result.outcome], order=order, freed=freed)


async def _show_list(
    query: CallbackQuery,
    order_deps: Deps,
    user: User,
    bot: Bot,
    list_id: int,
    page: int,
    banner: Html = Html(),
    *,
    around: int | None = None,
) -> bool:
    """Re-render a stored listing in place (the page holding row ``around`` if given); False when
    it no longer exists."""
    listing = await load_listing(order_deps.sessions, user.id, list_id)
    if listing is None:
        return False
    now_text = ago(listing.listed_at, order_deps.clock.now())
    await edit_in_place(query, bot, *render(listing, page, now_text, banner, around=around))
    return True


def _result_view(result: ListingResult, now_text: str) -> tuple[Html, InlineKeyboardMarkup | None]:
    """A listing's first page, or why there is none."""
    if isinstance(result, Listing):
        return render(result, 0, now_text)
    if isinstance(result, Classification):
        return refusal_text(result.verdict, result.detail), None
    if isinstance(result, TryLater):
        seconds = math.ceil(result.seconds)
        return plain("⏳ ") + ngettext(
            "You have asked for many listings just now. Try again in {n} second.",
            "You have asked for many listings just now. Try again in {n} seconds.",
            seconds,
        ).format(n=seconds), None
    errors = {
        ListingError.NOT_FOUND: _("Connection not found."),
        ListingError.NOT_AN_EXCHANGE: _("Orders are listed for exchange keys; this is a 3Commas key."),
        ListingError.EXCHANGE_FAILED: _("The exchange did not answer; try again in a minute."),
    }
    return plain(errors[result]), None


async def _deliver(
    order_deps: Deps, user: User, bot: Bot, result: ListingResult, target: Message | None
) -> None:
    """Put a listing result into ``target`` (edited) or a new message."""
    listed_at = result.listed_at if isinstance(result, Listing) else order_deps.clock.now()
    await edit_or_send(bot, user.id, target, *_result_view(result, ago(listed_at, order_deps.clock.now())))


def _tap_answer(ticket: Ticket) -> str:
    """What a tap on Orders / Refresh is told at once: loading, already loading, or listed moments ago."""
    if ticket.turn is Turn.STARTED:
        return _("Loading open orders…")
    if ticket.turn is Turn.JOINED:
        return "⏳ " + _("Already loading these orders; the list shows in a moment.")
    seconds = math.ceil(ticket.wait_s)
    return ngettext(
        "These orders were listed moments ago. A new listing is possible in {n} second.",
        "These orders were listed moments ago. A new listing is possible in {n} seconds.",
        seconds,
    ).format(n=seconds)


# ----------------------------------------------------------------------------- handlers


async def orders_command(message: Message, order_deps: Deps, user: User, bot: Bot) -> None:
    connections = [c for c in await user_connections(order_deps.sessions, user.id) if c.kind == "exchange"]
    if not connections:
        await message.answer(_("No exchange key is linked yet: /link"))
        return
    if len(connections) > 1:
        keyboard = InlineKeyboardBuilder()
        for connection in connections[:50]:
            keyboard.button(
                text=button_title(connection.exchange, connection.label, connection.key_hint),
                callback_data=ConnCb(
                    action=ConnAction.ORDERS, cid=connection.id, v=connection_token(connection)
                ),
            )
        keyboard.adjust(1)
        await message.answer(_("Whose open orders?"), reply_markup=keyboard.as_markup())
        return
    waiting = await message.answer("⏳ " + _("Loading open orders…"))
    ticket = await listing_ticket(order_deps, user.id, connections[0].id)
    await _deliver(order_deps, user, bot, await ticket.result(), waiting)


async def orders_button(
    query: CallbackQuery, callback_data: ConnCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    """Only the tap that starts a listing sends it: the others are told it is coming or just came
    (it sits above in the chat), so a flood of taps is not a flood of messages."""
    ticket = await listing_ticket(order_deps, user.id, callback_data.cid)
    await query.answer(_tap_answer(ticket))
    if ticket.turn is Turn.STARTED:
        await _deliver(order_deps, user, bot, await ticket.result(), None)


async def page(query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot) -> None:
    await query.answer()
    await _show_list(query, order_deps, user, bot, callback_data.id, callback_data.page)


async def refresh(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    """Redraws the pressed list with a new listing; within the cooldown with the recent one (if
    the message shows an older list), while one runs not at all: that listing redraws it. A
    user over their share keeps the list they had, with when to try again on top."""
    listing = await load_listing(order_deps.sessions, user.id, callback_data.id)
    if listing is None:  # pruned since the button was checked
        await query.answer()
        return
    ticket = await listing_ticket(order_deps, user.id, listing.connection.id)
    await query.answer(_tap_answer(ticket))
    if ticket.turn is Turn.JOINED or (ticket.recent is not None and ticket.recent.list_id == listing.list_id):
        return
    result = await ticket.result()
    if isinstance(result, TryLater):
        await _show_list(
            query, order_deps, user, bot, listing.list_id, callback_data.page, _result_view(result, "")[0]
        )
        return
    await _deliver(
        order_deps, user, bot, result, query.message if isinstance(query.message, Message) else None
    )


async def cancel_one(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    """Answered at once (the re-check may outlast Telegram's query); the outcome is the list's banner,
    or a message of its own when the list is gone."""
    await query.answer(_("Cancelling…"))
    result = await cancel_order(
        order_deps,
        callback_data.id,
        user.id,
        allow_unknown=callback_data.action == OrdersAction.CANCEL_UNKNOWN,
    )
    banner = outcome_text(result)
    row = result.row
    if row is not None and await _show_list(
        query, order_deps, user, bot, row.list_version, 0, banner, around=row.id
    ):
        return
    await bot.send_message(user.id, banner)


def _amounts(by_currency: dict[str, Decimal]) -> Html:
    """``0.01 BTC, 120 USDT``; a dash when nothing is freed."""
    return join(", ", [f"{num(v)} {k}" for k, v in sorted(by_currency.items())] or ["—"])


async def _ask(
    query: CallbackQuery, bot: Bot, listing: Listing, text: str, yes_text: str, yes: OrdersCb
) -> None:
    """Turn the message into a confirmation: ``yes`` does it, Back returns to the list's page."""
    back = OrdersCb(action=OrdersAction.PAGE, id=listing.list_id, page=yes.page, v=listing.version)
    await edit_in_place(query, bot, text, confirmation(yes_text, yes, "‹ " + _("Back"), back))


async def confirm_unknown(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    await query.answer()
    row = await owned_row(order_deps.sessions, user.id, callback_data.id)
    listing = None if row is None else await load_listing(order_deps.sessions, user.id, row.list_version)
    if row is None or listing is None:  # pruned since the button was checked
        return
    text = "⚠️ " + html(
        _(
            "keysentry cannot tell who placed {side} {amount} {symbol} @ {price}. It may belong to another "
            "bot, a manual trade or a deal 3Commas did not report. Cancel it anyway?"
        ),
        side=row.side.upper(),
        amount=num(Decimal(row.amount)),
        symbol=row.symbol,
        price=num(Decimal(row.price)),
    )
    yes = callback_data.model_copy(update={"action": OrdersAction.CANCEL_UNKNOWN})
    await _ask(query, bot, listing, text, _("Yes, cancel this order"), yes)


async def confirm_all(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    await query.answer()
    listing = await load_listing(order_deps.sessions, user.id, callback_data.id)
    if listing is None:  # pruned since the button was checked
        return
    orphans = listing.orphan_rows
    freed: dict[str, Decimal] = {}
    for row in orphans:
        lock = row_lock(row)
        if lock.amount is not None:
            freed[lock.currency] = freed.get(lock.currency, Decimal(0)) + lock.amount
    text = html(
        ngettext(
            "Cancel the orphan order? It is checked again first; this frees about {freed}.",
            "Cancel all {n} orphan orders? Each is checked again first; this frees about {freed}.",
            len(orphans),
        ),
        n=len(orphans),
        freed=_amounts(freed),
    )
    yes = callback_data.model_copy(update={"action": OrdersAction.CANCEL_ALL})
    yes_text = ngettext("Yes, cancel the order", "Yes, cancel {n} orders", len(orphans)).format(
        n=len(orphans)
    )
    await _ask(query, bot, listing, text, yes_text, yes)


async def cancel_all(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    await query.answer(_("Cancelling…"))
    results = await cancel_all_orphans(order_deps, user.id, callback_data.id)
    done = [r for r in results if r.done]
    freed = _amounts(total_freed(results))
    summary = html(
        "✅ "
        + ngettext(
            "Cancelled {done} of {n} orphan; freed {freed}.",
            "Cancelled {done} of {n} orphans; freed {freed}.",
            len(results),
        ),
        done=len(done),
        n=len(results),
        freed=freed,
    )
    skipped = [outcome_text(r) for r in results if not r.done][:5]
    banner = join("\n", [summary, *skipped])
    if not await _show_list(query, order_deps, user, bot, callback_data.id, callback_data.page, banner):
        await edit_in_place(query, bot, banner, None)


def build_router() -> Router:
    router = Router(name="orders")
    router.message.register(orders_command, Command("orders"))
    router.callback_query.register(orders_button, ConnCb.filter(F.action == ConnAction.ORDERS))
    router.callback_query.register(page, OrdersCb.filter(F.action == OrdersAction.PAGE))
    router.callback_query.register(refresh, OrdersCb.filter(F.action == OrdersAction.REFRESH))
    router.callback_query.register(
        cancel_one, OrdersCb.filter(F.action.in_({OrdersAction.CANCEL, OrdersAction.CANCEL_UNKNOWN}))
    )
    router.callback_query.register(confirm_unknown, OrdersCb.filter(F.action == OrdersAction.ASK_UNKNOWN))
    router.callback_query.register(confirm_all, OrdersCb.filter(F.action == OrdersAction.ASK_ALL))
    router.callback_query.register(cancel_all, OrdersCb.filter(F.action == OrdersAction.CANCEL_ALL))
    return router
