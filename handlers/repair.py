"""🔧 Update key in 3Commas, and the recovery checklist that follows a 3Commas account's key incident.

Parse → service → render: the wizard collects the new exchange key (each message deleted as it
arrives, only vault-sealed copies wait in the wizard state), :mod:`services.threecommas.repair`
hands it to 3Commas, :mod:`services.threecommas.checklist` says what is left, and
:mod:`bot.views.threecommas` words it.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from bot.callbacks import ChecklistAction, ChecklistCb, TcRepairAction, TcRepairCb
from bot.checklists import redraw, say_done_once
from bot.views import threecommas as views
from bot.views.html import Html, join
from bot.views.secrets import SecretPart, take_secret_part
from services.core.vault import Credentials
from services.orders.listing import Deps
from services.storage.models import User
from services.threecommas import checklist as recovery
from services.threecommas.errors import ThreeCommasError
from services.threecommas.repair import (
    RepairOutcome,
    RepairResult,
    RepairTarget,
    account_now,
    needs_passphrase,
    repair_account,
    repair_target,
)


class TcRepair(StatesGroup):
    key = State()
    secret = State()
    passphrase = State()


async def _target(order_deps: Deps, user: User, cid: int, acc: int) -> RepairTarget | None:
    return await repair_target(order_deps.sessions, order_deps.vault, user.id, cid, acc)


# ----------------------------------------------------------------------------- the wizard


async def _pressed_target(
    query: CallbackQuery, callback_data: TcRepairCb, order_deps: Deps, user: User, answer: str | None = None
) -> tuple[RepairTarget, Message] | None:
    """Answer the tap at once, then the account the button names (checked by ``ButtonCheck``;
    None only if it went in between) and the message to reply under."""
    await query.answer(answer)
    target = await _target(order_deps, user, callback_data.cid, callback_data.acc)
    if target is None or not isinstance(query.message, Message):
        return None
    return target, query.message


async def start_repair(
    query: CallbackQuery, callback_data: TcRepairCb, state: FSMContext, order_deps: Deps, user: User
) -> None:
    pressed = await _pressed_target(query, callback_data, order_deps, user)
    if pressed is None:
        return
    target, message = pressed
    await state.clear()
    await state.set_state(TcRepair.key)
    await state.update_data(cid=target.tc_connection_id, acc=target.account_id)
    await message.answer(views.wizard_intro(target.name, target.market_code))


def _gone() -> str:
    return _("That 3Commas account is no longer linked.")


async def got_key(message: Message, state: FSMContext, order_deps: Deps) -> None:
    if await take_secret_part(message, state, order_deps.vault, SecretPart.API_KEY, restart=_gone()):
        await state.set_state(TcRepair.secret)
        await message.answer(views.ask_secret())


async def got_secret(message: Message, state: FSMContext, order_deps: Deps, user: User) -> None:
    new_key = await take_secret_part(message, state, order_deps.vault, SecretPart.SECRET, restart=_gone())
    if new_key is None:
        return
    data = await state.get_data()
    target = await _target(order_deps, user, int(data.get("cid", 0)), int(data.get("acc", 0)))
    if target is not None and needs_passphrase(target.market_code):
        await state.set_state(TcRepair.passphrase)
        await message.answer(views.ask_passphrase())
        return
    await _send_key(message, state, order_deps, user, new_key)


async def got_passphrase(message: Message, state: FSMContext, order_deps: Deps, user: User) -> None:
    part = SecretPart.PASSPHRASE
    new_key = await take_secret_part(message, state, order_deps.vault, part, restart=_gone())
    if new_key is not None:
        await _send_key(message, state, order_deps, user, new_key)


async def _send_key(
    message: Message, state: FSMContext, order_deps: Deps, user: User, new_key: Credentials
) -> None:
    data = await state.get_data()
    await state.clear()
    cid, acc = int(data.get("cid", 0)), int(data.get("acc", 0))
    target = await _target(order_deps, user, cid, acc)
    if target is None:
        await message.answer(_gone())
        return
    await message.answer(views.sending())
    result = await repair_account(
        order_deps.sessions,
        order_deps.threecommas,
        target,
        new_key,
        user_id=user.id,
        now=order_deps.clock.now(),
    )
    del new_key  # the key lives no longer than this request
    if result.outcome is RepairOutcome.NO_PERMISSION:
        await message.answer(
            views.manual_steps(target.name, target.market_code, acc, result.error),
            reply_markup=views.keyboard_of(
                views.check_button(cid, acc, target.version), views.checklist_button(cid, acc, target.version)
            ),
        )
        return
    await message.answer(views.repair_result(result, target.name, target.market_code))
    if result.outcome is RepairOutcome.FIXED:
        await _open_checklist(message, order_deps, user, cid, acc)
    elif result.outcome in {
        RepairOutcome.STILL_BROKEN,
        RepairOutcome.UNAVAILABLE,
        RepairOutcome.IN_PROGRESS,
        RepairOutcome.REFUSED,
    }:
        await message.answer(
            _("Try again when ready:"),
            reply_markup=views.keyboard_of(views.repair_button(cid, acc, target.version)),
        )


async def check_manual_fix(
    query: CallbackQuery, callback_data: TcRepairCb, order_deps: Deps, user: User
) -> None:
    pressed = await _pressed_target(query, callback_data, order_deps, user, _("Asking 3Commas…"))
    if pressed is None:
        return
    target, message = pressed
    try:
        account = await account_now(order_deps.threecommas, target.tc_credentials, target.account_id)
    except ThreeCommasError as error:
        result = RepairResult(RepairOutcome.UNAVAILABLE, error=error.error)
        await message.answer(views.repair_result(result, target.name, target.market_code))
        return
    if account is None or account.key_broken:
        await message.answer(views.still_broken_after_manual(target.name, target.market_code))
        return
    await message.answer(
        views.repair_result(RepairResult(RepairOutcome.FIXED, account), target.name, target.market_code)
    )
    await _open_checklist(message, order_deps, user, target.tc_connection_id, target.account_id)


async def show_checklist(
    query: CallbackQuery, callback_data: TcRepairCb, order_deps: Deps, user: User
) -> None:
    pressed = await _pressed_target(query, callback_data, order_deps, user)
    if pressed is not None:
        target, message = pressed
        await _open_checklist(message, order_deps, user, target.tc_connection_id, target.account_id)


# ----------------------------------------------------------------------------- the checklist


async def _open_checklist(message: Message, order_deps: Deps, user: User, cid: int, acc: int) -> None:
    checklist_id = await recovery.start_checklist(
        order_deps, user_id=user.id, tc_connection_id=cid, account_id=acc
    )
    state = await recovery.checklist_state(order_deps, checklist_id, user.id)
    if state is None:
        return
    text, markup = views.checklist(state)
    sent = await message.answer(text, reply_markup=markup)
    await recovery.remember_message(order_deps, checklist_id, sent.chat.id, sent.message_id, text)
    if message.bot is not None:
        await say_done_once(message.bot, order_deps, state, sent.chat.id)


async def _redraw(query: CallbackQuery, order_deps: Deps, user: User, checklist_id: int) -> None:
    """Edit the checklist message in place with what is true now."""
    if query.bot is not None:
        await redraw(query.bot, order_deps, checklist_id, user.id)


async def checklist_step(
    query: CallbackQuery, callback_data: ChecklistCb, order_deps: Deps, user: User
) -> None:
    await query.answer()
    if callback_data.action is ChecklistAction.OLD_KEY_DELETED:
        await recovery.tick_old_key(order_deps, callback_data.id, user.id)
    await _redraw(query, order_deps, user, callback_data.id)


async def checklist_ask(
    query: CallbackQuery, callback_data: ChecklistCb, order_deps: Deps, user: User
) -> None:
    """Answered at once: the state is read afresh from 3Commas and the exchange, which takes a while."""
    await query.answer()
    state = await recovery.checklist_state(order_deps, callback_data.id, user.id)
    if state is None or not isinstance(query.message, Message):  # gone since the button was checked
        return
    if callback_data.action is ChecklistAction.ASK_RECREATE:
        if not state.pending:
            await query.message.answer(_("Nothing is left to recreate."))
            return
        text, markup = views.recreate_confirmation(state)
    else:
        if not state.orphans:
            await query.message.answer(_("No orphan order is left to cancel."))
            return
        text, markup = views.cancel_confirmation(state)
    await query.message.answer(text, reply_markup=markup)


async def checklist_confirmed(
    query: CallbackQuery, callback_data: ChecklistCb, order_deps: Deps, user: User
) -> None:
    """Recreate all / Cancel orphans, confirmed: answered at once; the outcome goes under the
    confirmation, whose button stays (a second tap is safe: each trade and order is claimed, and
    reports what was done), then the checklist is redrawn."""
    if callback_data.action is ChecklistAction.RECREATE:
        await query.answer(_("Sending to 3Commas…"))
        outcome = views.recreated(await recovery.recreate_all(order_deps, callback_data.id, user.id))
    else:
        await query.answer(_("Cancelling…"))
        outcome = views.cancelled(await recovery.cancel_orphans(order_deps, user.id, callback_data.list))
    if isinstance(query.message, Message):
        # The button stays: a second tap is safe (each row is claimed) and reports the same.
        base = Html(query.message.html_text.split("\n\n✅ ", 1)[0])
        await query.message.edit_text(join("\n\n", [base, outcome]), reply_markup=query.message.reply_markup)
    await _redraw(query, order_deps, user, callback_data.id)


def build_router() -> Router:
    router = Router(name="repair")
    router.callback_query.register(start_repair, TcRepairCb.filter(F.action == TcRepairAction.GO))
    router.callback_query.register(check_manual_fix, TcRepairCb.filter(F.action == TcRepairAction.CHECK))
    router.callback_query.register(show_checklist, TcRepairCb.filter(F.action == TcRepairAction.LIST))
    # Commands (/cancel, /status...) are not a key: they reach their handlers, as in /link.
    router.message.register(got_key, TcRepair.key, F.text, ~F.text.startswith("/"))
    router.message.register(got_secret, TcRepair.secret, F.text, ~F.text.startswith("/"))
    router.message.register(got_passphrase, TcRepair.passphrase, F.text, ~F.text.startswith("/"))
    steps = {ChecklistAction.REFRESH, ChecklistAction.OLD_KEY_DELETED}
    router.callback_query.register(checklist_step, ChecklistCb.filter(F.action.in_(steps)))
    asks = {ChecklistAction.ASK_RECREATE, ChecklistAction.ASK_CANCEL}
    router.callback_query.register(checklist_ask, ChecklistCb.filter(F.action.in_(asks)))
    confirmed = {ChecklistAction.RECREATE, ChecklistAction.CANCEL}
    router.callback_query.register(checklist_confirmed, ChecklistCb.filter(F.action.in_(confirmed)))
    return router
