"""/orders and the Orders button: open orders, what they lock, and cancelling orphans.

Handlers only parse the button, call :mod:`services.orders.listing` and render. A page holds at most
:data:`PAGE_SIZE` orders so text (4096 characters) and keyboard stay inside Telegram's limits
whatever the number of orders; every button names a stored row, never an order id, with its version
token: ``bot.middlewares.ButtonCheck`` answers an out-of-date one before any handler here runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb, OrdersAction, OrdersCb
from bot.texts import ago, button_title, connection_title, refusal_text
from bot.views.confirm import confirmation
from bot.views.editing import edit_in_place
from bot.views.html import Html, bold, html
from services.exchanges.classifier import Classification
from services.orders.attribution import Attribution
from services.orders.cancel import CancelOutcome, CancelResult, cancel_all_orphans, cancel_order, total_freed
from services.orders.listing import (
    Deps,
    Listing,
    ListingError,
    list_orders,
    load_listing,
    owned_row,
    row_lock,
)
from services.orders.locked_funds import Lock
from services.storage.button_tokens import connection_token, listed_order_token
from services.storage.models import ListedOrder, User
from services.storage.users import user_connections

PAGE_SIZE = 15
MAX_TEXT = 4096
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


def _row_line(number: int, row: ListedOrder) -> str:
    marks = {
        Attribution.ACTIVE.value: "🟢 " + _("active deal"),
        Attribution.ORPHAN.value: "🟠 " + _("orphan (finished deal)"),
        Attribution.UNKNOWN.value: "⚪ " + _("unknown"),
    }
    mark = marks[row.attribution]
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
        deal=f" · {row.deal_ref}" if row.deal_ref else "",
        order=order_text(row.side, row.amount, row.symbol),
        price=num(Decimal(row.price)),
        locks=funds,
    )


def _funds_lines(listing: Listing) -> list[str]:
    lines: list[str] = []
    for funds in listing.funds.currencies[:MAX_FUND_LINES]:
        line: str = html(
            _("{currency}: {locked} locked by orders (orphans {orphans}) · free {free} of {total}"),
            currency=bold(funds.currency),
            locked=num(funds.locked_by_orders),
            orphans=num(funds.locked_by_orphans),
            free=num(funds.free),
            total=num(funds.total),
        )
        if funds.locked_by_orphans and funds.free_after_cancelling_orphans is not None:
            line += " → " + _("free {after} after cancelling orphans").format(
                after=num(funds.free_after_cancelling_orphans)
            )
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


def page_count(listing: Listing) -> int:
    return max(1, -(-len(listing.rows) // PAGE_SIZE))


def render(listing: Listing, page: int, now_text: str, banner: str = "") -> tuple[str, InlineKeyboardMarkup]:
    """One page of a listing: header, funds, the page's orders, and its buttons."""
    pages = page_count(listing)
    page = min(max(page, 0), pages - 1)
    rows = listing.rows[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    title = connection_title(listing.connection.exchange, listing.connection.label)
    head = [
        *([banner, ""] if banner else []),
        html("📋 <b>{title}</b> — ", title=title) + counts_text(listing),
        *_notes(listing),
    ]
    funds = _funds_lines(listing)
    body = [_row_line(page * PAGE_SIZE + i + 1, row) for i, row in enumerate(rows)]
    foot = [_("Page {page}/{pages} · listed {when}").format(page=page + 1, pages=pages, when=now_text)]
    # Blocks are separated by one empty line; an empty block (no funds, no orders) leaves none.
    blocks = [block for block in (head, funds, body, foot) if block]
    text = "\n\n".join("\n".join(block) for block in blocks)
    if len(text) > MAX_TEXT:  # many long symbols: drop the funds block first, it is on every page
        text = "\n\n".join("\n".join(block) for block in (head, body, foot) if block)[:MAX_TEXT]
    return text, _keyboard(listing, rows, page, pages)


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


def _keyboard(listing: Listing, rows: Sequence[ListedOrder], page: int, pages: int) -> InlineKeyboardMarkup:
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
        buttons.append(
            InlineKeyboardButton(text=text.format(n=page * PAGE_SIZE + i + 1), callback_data=data.pack())
        )
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


def outcome_text(result: CancelResult) -> str:
    """One line on what a tap did, freed funds included."""
    order = Html()
    if result.row is not None:
        order = order_text(result.row.side, result.row.amount, result.row.symbol)
    if result.repeat and result.outcome is CancelOutcome.CANCELLED:
        return _("{order} was already cancelled from this list.").format(order=order)
    texts = {
        CancelOutcome.CANCELLED: "✅ "
        + _("Cancelled {order}: freed {freed}.").format(
            order=order, freed=lock_text(result.freed) if result.freed else "?"
        ),
        CancelOutcome.ALREADY_FILLED: _("{order} was already filled; nothing to cancel.").format(order=order),
        CancelOutcome.ALREADY_CANCELLED: _("{order} was already cancelled.").format(order=order),
        CancelOutcome.NOT_FOUND: _("{order} is no longer open on the exchange.").format(order=order),
        CancelOutcome.LIST_GONE: _("This list changed: that order is no longer in it. Send /orders again."),
        CancelOutcome.CONNECTION_GONE: _("That connection is no longer linked."),
        CancelOutcome.ACTIVE_DEAL: _(
            "That order belongs to an active deal; it is never cancelled from here."
        ),
        CancelOutcome.NEEDS_CONFIRMATION: _("That order needs an explicit confirmation."),
        CancelOutcome.DEAL_ACTIVE_AGAIN: _(
            "Its deal is active again on 3Commas, so {order} was left alone."
        ).format(order=order),
        CancelOutcome.DEAL_UNVERIFIED: _(
            "3Commas could not confirm the deal is finished, so {order} was left alone. Try again later."
        ).format(order=order),
        CancelOutcome.NO_TRADE_PERMISSION: _(
            "The exchange refused: this API key has no trading permission. Cancel {order} on the exchange, "
            "or enable “Trade” on the key."
        ).format(order=order),
        CancelOutcome.EXCHANGE_FAILED: _("The exchange did not answer; nothing was cancelled. Try again."),
        CancelOutcome.IN_PROGRESS: "⏳ "
        + _("{order} is being cancelled already; nothing was sent again.").format(order=order),
        CancelOutcome.UNVERIFIED: _(
            "The exchange did not answer the cancel of {order} and cannot be asked yet whether it happened. "
            "Nothing more was sent; tap Cancel again in a minute: keysentry checks first."
        ).format(order=order),
    }
    if result.outcome is CancelOutcome.KEY_PROBLEM and result.verdict is not None:
        verdict = result.verdict
        return refusal_text(verdict.verdict, verdict.detail) + "\n" + _("Nothing was cancelled.")
    if result.reconciled and result.outcome is CancelOutcome.CANCELLED:
        return "✅ " + _("The exchange answered late, but {order} is cancelled: freed {freed}.").format(
            order=order, freed=lock_text(result.freed) if result.freed else "?"
        )
    if result.reconciled and result.outcome is CancelOutcome.EXCHANGE_FAILED:
        return _(
            "The exchange did not answer, and {order} is still open: nothing was cancelled. Try again."
        ).format(order=order)
    return texts[result.outcome]


async def _show_list(
    query: CallbackQuery, order_deps: Deps, user: User, bot: Bot, list_id: int, page: int, banner: str = ""
) -> bool:
    """Re-render a stored listing in place; False when it no longer exists."""
    listing = await load_listing(order_deps.sessions, user.id, list_id)
    if listing is None:
        return False
    await edit_in_place(
        query, bot, *render(listing, page, ago(listing.listed_at, order_deps.clock.now()), banner)
    )
    return True


def _page_of(listing: Listing, row_id: int) -> int:
    position = next((i for i, row in enumerate(listing.rows) if row.id == row_id), 0)
    return position // PAGE_SIZE


async def _send_listing(
    order_deps: Deps, user: User, bot: Bot, connection_id: int, target: Message | None
) -> None:
    """List now and put the result into ``target`` (edited) or a new message."""
    listing = await list_orders(order_deps, user.id, connection_id)
    if isinstance(listing, Classification):
        text, markup = refusal_text(listing.verdict, listing.detail), None
    elif isinstance(listing, ListingError):
        errors = {
            ListingError.NOT_FOUND: _("Connection not found."),
            ListingError.NOT_AN_EXCHANGE: _("Orders are listed for exchange keys; this is a 3Commas key."),
            ListingError.EXCHANGE_FAILED: _("The exchange did not answer; try again in a minute."),
        }
        text, markup = errors[listing], None
    else:
        text, markup = render(listing, 0, ago(listing.listed_at, order_deps.clock.now()))
    if target is not None:
        await target.edit_text(text, reply_markup=markup)
    else:
        await bot.send_message(user.id, text, reply_markup=markup)


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
                text=button_title(connection.exchange, connection.label),
                callback_data=ConnCb(
                    action=ConnAction.ORDERS, cid=connection.id, v=connection_token(connection)
                ),
            )
        keyboard.adjust(1)
        await message.answer(_("Whose open orders?"), reply_markup=keyboard.as_markup())
        return
    waiting = await message.answer("⏳ " + _("Loading open orders…"))
    await _send_listing(order_deps, user, bot, connections[0].id, waiting)


async def orders_button(
    query: CallbackQuery, callback_data: ConnCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    await query.answer(_("Loading open orders…"))
    await _send_listing(order_deps, user, bot, callback_data.cid, None)


async def page(query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot) -> None:
    await query.answer()
    await _show_list(query, order_deps, user, bot, callback_data.id, callback_data.page)


async def refresh(
    query: CallbackQuery, callback_data: OrdersCb, order_deps: Deps, user: User, bot: Bot
) -> None:
    await query.answer(_("Loading open orders…"))
    listing = await load_listing(order_deps.sessions, user.id, callback_data.id)
    if listing is None:  # pruned since the button was checked
        return
    await _send_listing(
        order_deps,
        user,
        bot,
        listing.connection.id,
        query.message if isinstance(query.message, Message) else None,
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
    if result.row is not None:
        listing = await load_listing(order_deps.sessions, user.id, result.row.list_version)
        if listing is not None:
            await _show_list(
                query, order_deps, user, bot, listing.list_id, _page_of(listing, result.row.id), banner
            )
            return
    await bot.send_message(user.id, banner)


def _amounts(by_currency: dict[str, Decimal]) -> Html:
    """``0.01 BTC, 120 USDT``; a dash when nothing is freed."""
    parts = [html("{amount} {currency}", amount=num(v), currency=k) for k, v in sorted(by_currency.items())]
    return Html(", ".join(parts) or "—")


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
    text = ngettext(
        "Cancel the orphan order? It is checked again first; this frees about {freed}.",
        "Cancel all {n} orphan orders? Each is checked again first; this frees about {freed}.",
        len(orphans),
    ).format(n=len(orphans), freed=_amounts(freed))
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
    banner = "✅ " + ngettext(
        "Cancelled {done} of {n} orphan; freed {freed}.",
        "Cancelled {done} of {n} orphans; freed {freed}.",
        len(results),
    ).format(done=len(done), n=len(results), freed=freed)
    skipped = [outcome_text(r) for r in results if not r.done][:5]
    banner = "\n".join([banner, *skipped])
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
