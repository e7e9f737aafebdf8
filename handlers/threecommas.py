"""/link3c: link a 3Commas key, map its exchange accounts; and the Recreate button.

The key and secret messages are deleted as soon as they arrive and only a vault-sealed copy
waits in the wizard state, as in /link. Mapping accounts is what lets /orders tell a finished
deal's order from a live one, so it follows linking directly; each account can be skipped.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import RecreateAction, RecreateCb, TcMapCb
from bot.commands import is_known_command
from bot.texts import button_title, connection_title
from bot.views.html import Html, bold, code, html, join
from bot.views.secrets import SecretPart, take_secret_part
from bot.views.threecommas import account_words, plan_lines
from services.core.clock import Clock
from services.core.vault import Vault, mask
from services.monitoring.refresh import KeyStore
from services.orders.listing import Deps
from services.storage.button_tokens import failed_deal_token, mapping_token
from services.storage.db import Sessions
from services.storage.models import Connection, User
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.entities import Account
from services.threecommas.errors import KeyInvalid, ThreeCommasError
from services.threecommas.links import (
    THREECOMMAS,
    link_account,
    link_threecommas_key,
    suggest_connection,
)
from services.threecommas.recreate import (
    RecreateOutcome,
    load_failed_deal,
    recreate_failed_deal,
)


class TcLink(StatesGroup):
    key = State()
    secret = State()


# ----------------------------------------------------------------------------- linking


async def link3c(message: Message, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(TcLink.key)
    await message.answer(
        _(
            "Send the <b>API key</b> you created in 3Commas (3Commas → API keys). Read permission is "
            "enough to watch; “Recreate” needs write permission for bots and SmartTrades. "
            "I delete your message at once."
        )
    )


def _restart() -> str:
    return _("The key was lost; please start again with /link3c.")


async def got_key(message: Message, state: FSMContext, vault: Vault) -> None:
    if await take_secret_part(message, state, vault, SecretPart.API_KEY, restart=_restart()) is None:
        return
    await state.set_state(TcLink.secret)
    await message.answer(_("Now send the <b>secret</b> of that key."))


async def got_secret(
    message: Message,
    state: FSMContext,
    sessions: Sessions,
    vault: Vault,
    threecommas: ThreeCommasAccess,
    key_store: KeyStore,
    clock: Clock,
    user: User,
) -> None:
    credentials = await take_secret_part(
        message, state, vault, SecretPart.SECRET, restart=_restart(), rsa_allowed=True
    )
    if credentials is None:
        return
    await state.clear()
    twin = await key_store.linked_as(user_id=user.id, exchange=THREECOMMAS, api_key=credentials.api_key)
    if twin is not None:  # refused before 3Commas is asked: nothing to validate, nothing saved
        await message.answer(
            html(
                _(
                    "This key is already linked as <b>{title}</b>. To link it again, remove that "
                    "connection in /status first. Nothing was saved."
                ),
                title=connection_title(twin.exchange, twin.label, twin.key_hint),
            )
        )
        return
    try:
        async with threecommas.open(credentials) as client:
            await client.validate()
            accounts = await client.accounts()
    except KeyInvalid:
        await message.answer(
            _("3Commas did not accept this key and secret. Check both and send /link3c again.")
        )
        return
    except ThreeCommasError as error:
        await message.answer(
            html(
                _("3Commas could not be asked right now ({error}). Try /link3c again later."),
                error=error.error,
            )
        )
        return
    linked = await link_threecommas_key(
        sessions, vault, user_id=user.id, credentials=credentials, accounts=accounts, now=clock.now()
    )
    await message.answer(
        html(
            ngettext(
                "✅ 3Commas key {hint} linked. It has {n} exchange account.",
                "✅ 3Commas key {hint} linked. It has {n} exchange accounts.",
                len(accounts),
            ),
            hint=code(mask(credentials.api_key)),
            n=len(accounts),
        )
    )
    for account, link_id in zip(accounts, linked.link_ids, strict=True):
        text, markup = mapping_prompt(account, link_id, linked.candidates)
        await message.answer(text, reply_markup=markup)


def mapping_prompt(
    account: Account, link_id: int, candidates: list[Connection]
) -> tuple[Html, InlineKeyboardMarkup]:
    """Which keysentry connection is this 3Commas account? The likely one first, marked."""
    suggested = suggest_connection(account, candidates)
    keyboard = InlineKeyboardBuilder()
    ordered = sorted(candidates, key=lambda c: (c is not suggested, c.exchange != account.exchange_id, c.id))
    for connection in ordered[:8]:
        mark = "⭐ " if connection is suggested else ""
        keyboard.button(
            text=mark + button_title(connection.exchange, connection.label, connection.key_hint),
            callback_data=TcMapCb(
                link=link_id, cid=connection.id, v=mapping_token(link_id, account.id, connection)
            ),
        )
    keyboard.button(
        text=_("Skip"), callback_data=TcMapCb(link=link_id, cid=0, v=mapping_token(link_id, account.id, None))
    )
    keyboard.adjust(1)
    text = html(
        _("{account}: which of your keysentry connections is it?"),
        account=bold(account_words(account.name, account.market_code)),
    )
    if not candidates:
        text = join(
            "\n", [text, _("You have no exchange key linked yet: add one with /link, then /link3c again.")]
        )
    return text, keyboard.as_markup()


async def mapped(
    query: CallbackQuery, callback_data: TcMapCb, sessions: Sessions, clock: Clock, user: User
) -> None:
    await query.answer()
    outcome = await link_account(
        sessions,
        user_id=user.id,
        link_id=callback_data.link,
        connection_id=callback_data.cid or None,
        now=clock.now(),
    )
    if outcome is None or not isinstance(query.message, Message):  # gone since the button was checked
        return
    name, target = outcome.account_name, outcome.target
    title = connection_title(target.exchange, target.label, target.key_hint) if target is not None else None
    text = (
        html(_("3Commas account <b>{name}</b> → {title}."), name=name, title=title)
        if title
        else html(_("3Commas account <b>{name}</b> skipped."), name=name)
    )
    await query.message.edit_text(text)


# ----------------------------------------------------------------------------- recreate


async def recreate_show(
    query: CallbackQuery, callback_data: RecreateCb, sessions: Sessions, user: User
) -> None:
    await query.answer()
    row = await load_failed_deal(sessions, callback_data.id, user.id)
    if row is None or not isinstance(query.message, Message):  # gone since the button was checked
        return
    lines = ["♻️ " + bold(_("Recreate through 3Commas with exactly these parameters:")), *plan_lines(row)]
    keyboard = InlineKeyboardBuilder()
    go = RecreateCb(action=RecreateAction.GO, id=row.id, v=failed_deal_token(row))
    keyboard.button(text="✅ " + _("Recreate"), callback_data=go)
    await query.message.answer(join("\n", lines), reply_markup=keyboard.as_markup())


async def recreate_go(query: CallbackQuery, callback_data: RecreateCb, order_deps: Deps, user: User) -> None:
    await query.answer(_("Sending to 3Commas…"))
    # What the message shows, as Telegram gives it back: the entities rebuilt as HTML, the text escaped.
    shown = Html(query.message.html_text) if isinstance(query.message, Message) else Html()

    async def say(line: str) -> None:
        if isinstance(query.message, Message):
            await query.message.edit_text(join("\n\n", [shown, line]))

    async def checking() -> None:
        await say("⏳ " + _("3Commas did not answer in time; checking whether it was created…"))

    result = await recreate_failed_deal(
        order_deps.sessions,
        order_deps.vault,
        order_deps.threecommas,
        row_id=callback_data.id,
        user_id=user.id,
        now=order_deps.clock.now(),
        on_unknown=checking,
    )
    ref = result.ref or ""
    texts: dict[RecreateOutcome, str] = {
        RecreateOutcome.CREATED: html(
            _("✅ 3Commas created {ref} (status: {status})."), ref=ref, status=result.status or "?"
        ),
        RecreateOutcome.ALREADY: html(_("Already recreated as {ref}; nothing was sent again."), ref=ref),
        RecreateOutcome.IN_PROGRESS: "⏳ "
        + _("This recreate is already on its way to 3Commas; nothing was sent again."),
        RecreateOutcome.NOT_CREATED: _(
            "3Commas did not create it, so nothing is open twice. Tap ✅ Recreate to send it again."
        ),
        RecreateOutcome.UNVERIFIED: _(
            "3Commas cannot be asked yet whether it was created, so nothing was sent again. "
            "Tap ✅ Recreate in a minute: keysentry checks first."
        ),
        RecreateOutcome.GONE: _("This failed deal or its 3Commas key is no longer linked."),
        RecreateOutcome.NO_WRITE_PERMISSION: _(
            "3Commas refused: this key needs write permission (bots / SmartTrades). "
            "Enable it on 3Commas or link a key that has it with /link3c."
        ),
        RecreateOutcome.REFUSED: html(_("3Commas refused: {error}"), error=result.error or ""),
    }
    line = texts[result.outcome]
    if result.reconciled and result.outcome is RecreateOutcome.CREATED:
        line = html(
            _(
                "✅ 3Commas did create {ref} (status: {status}); it just answered late. "
                "Nothing was sent again."
            ),
            ref=ref,
            status=result.status or "?",
        )
    await say(line)


def build_router() -> Router:
    router = Router(name="threecommas")
    router.message.register(link3c, Command("link3c"))
    # Our commands (/cancel, /status...) are not a key: they reach their handlers, as in /link;
    # anything else starting with "/" may be a base64 secret.
    router.message.register(got_key, TcLink.key, F.text, ~F.text.func(is_known_command))
    router.message.register(got_secret, TcLink.secret, F.text, ~F.text.func(is_known_command))
    router.callback_query.register(mapped, TcMapCb.filter())
    router.callback_query.register(recreate_show, RecreateCb.filter(F.action == RecreateAction.SHOW))
    router.callback_query.register(recreate_go, RecreateCb.filter(F.action == RecreateAction.GO))
    return router
