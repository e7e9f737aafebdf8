"""3Commas in chat: the account-key alert, the repair wizard's steps, the recovery checklist.

Data in (services' results), text and buttons out; nothing here talks to 3Commas or the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ChecklistAction, ChecklistCb, TcRepairAction, TcRepairCb
from bot.formatting import number as locale_number
from bot.texts import deals_words, smart_trades_words
from bot.texts import exchange_name as exchange_title
from bot.views.html import Html, bold, html, italic, join, plain
from services.orders.cancel import CancelOutcome, CancelResult
from services.storage.models import FailedDeal
from services.threecommas.checklist import ChecklistState
from services.threecommas.entities import market_of, tc_pair_to_symbol
from services.threecommas.findings import (
    AccountSymptom,
    AccountTrouble,
    BalancesFailing,
    Finding,
    StaleBasis,
    StaleUpnl,
    StuckAction,
    StuckClosing,
)
from services.threecommas.recreate import (
    Caveat,
    PlanWarning,
    RecreateOutcome,
    RecreateResult,
    plan_warnings,
    smart_trade_params,
)
from services.threecommas.repair import RepairOutcome, RepairResult

ACCOUNT_PAGE = "https://app.3commas.io/accounts/{id}"
"""Where 3Commas' web app shows one exchange account (the entity's ``link`` is ``/accounts/{id}``,
docs smart-trade/0_smart_trade_entity)."""


def _num(value: object) -> str:
    """A number as 3Commas wrote it (plain text: interpolate it with :func:`html`)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def exchange_name(market_code: str | None) -> str:
    market = market_of(market_code)
    if market is None:
        return market_code or "?"
    return exchange_title(market.exchange)


def usd_words(usd: object) -> str:
    """A USD balance 3Commas reported, with the locale's grouping and decimal signs ("2,500.00")."""
    return locale_number(Decimal(str(usd)), digits=2)


def account_words(name: str, market_code: str | None) -> Html:
    """«Main» (Binance): how every 3Commas message names an account."""
    return html(
        _("3Commas account «{name}» ({exchange})"), name=name or "?", exchange=exchange_name(market_code)
    )


# -- the alert ------------------------------------------------------------------------------------


def account_key_alert(subject: dict[str, Any]) -> Html:
    """A 3Commas account whose exchange key 3Commas can no longer use: what it means, plainly."""
    lines: list[str] = [
        "🔴 " + bold(account_words(str(subject.get("name") or ""), subject.get("market_code"))),
        _(
            "3Commas can no longer use the API key of this exchange account. Until it gets a new one, "
            "its bots and SmartTrades cannot open, close or cancel anything, their profit stops "
            "updating, and balances do not load."
        ),
    ]
    if subject.get("last_good_usd"):
        lines.append(_("Last good balance: {usd} USD.").format(usd=usd_words(subject["last_good_usd"])))
    lines.append(_("Fix it here: create a new key on the exchange and I pass it to 3Commas."))
    return join("\n", lines)


# -- what a symptom alert says beyond its headline ------------------------------------------------

WORDS_SHOWN = 200
"""How much of 3Commas' own words an alert quotes."""


def says(words: str) -> Html:
    """3Commas' (or the exchange's) own words, quoted as they are: they are evidence."""
    return html(_("3Commas says: {error}"), error=italic(words[:WORDS_SHOWN]))


def finding_lines(found: Finding) -> list[Html]:
    """The lines under a 3Commas symptom's headline (services.threecommas.findings), in the user's
    language; 3Commas' own words (a lock reason, an error, a pending status) as they are."""
    match found:
        case AccountTrouble():
            return _account_trouble(found)
        case BalancesFailing(error, usd, at):
            lines = [says(error)]
            if usd is not None and at is not None:
                when = formatting.moment(at)
                lines.append(html(_("Last good balance: {usd} USD, {when}."), usd=usd_words(usd), when=when))
            elif usd is not None:
                lines.append(html(_("Last good balance: {usd} USD."), usd=usd_words(usd)))
            return lines
        case StaleUpnl():
            return [_stale_upnl(found)]
        case StuckClosing(action, status, minutes, error):
            lines = [_stuck(action, status, minutes)]
            return lines + ([says(error)] if error else [])
    raise TypeError(f"not a finding: {found!r}")


def _account_trouble(trouble: AccountTrouble) -> list[Html]:
    """Every symptom of the account on one line, worst first; the headline's own symptom only when
    3Commas gave words for it (the headline already says the rest)."""
    parts: list[Html] = []
    for position, symptom in enumerate(trouble.symptoms):
        words, quoted = _account_symptom(symptom, trouble)
        if position > 0 or quoted:
            parts.append(words)
    return [italic(join("; ", parts))] if parts else []


def _account_symptom(symptom: AccountSymptom, trouble: AccountTrouble) -> tuple[Html, bool]:
    """The symptom in words, and whether they quote 3Commas."""
    match symptom:
        case AccountSymptom.LOCKED if trouble.lock_reason:
            return html(_("account locked: {reason}"), reason=trouble.lock_reason[:WORDS_SHOWN]), True
        case AccountSymptom.LOCKED:
            return plain(_("account locked, no reason given")), False
        case AccountSymptom.AUTO_BALANCE_ERROR if trouble.auto_balance_error:
            error = trouble.auto_balance_error[:WORDS_SHOWN]
            return html(_("auto-balance error: {error}"), error=error), True
        case AccountSymptom.AUTO_BALANCE_ERROR:
            return plain(_("auto-balance error")), False
        case AccountSymptom.KEY_EXPIRES_SOON:
            return plain(_("the exchange API key expires soon")), False
        case AccountSymptom.KEY_STATE_UNKNOWN:
            return html(_("3Commas reports the key state “{state}”"), state=trouble.key_state or "?"), True
    return plain(_("3Commas can no longer use this exchange API key")), False


def _stale_upnl(stale: StaleUpnl) -> Html:
    values = {
        "price": formatting.coin(stale.live_price),
        "gap": formatting.percent(stale.gap),
        "n": stale.minutes,
    }
    if stale.basis is StaleBasis.PROFIT:
        text = ngettext(
            "3Commas shows a profit of {shown} USD; at the live price {price} it is {live} USD ({gap} "
            "apart). Unchanged for {n} minute.",
            "3Commas shows a profit of {shown} USD; at the live price {price} it is {live} USD ({gap} "
            "apart). Unchanged for {n} minutes.",
            stale.minutes,
        )
        shown, live = locale_number(stale.shown, digits=2), locale_number(stale.live, digits=2)
    else:
        text = ngettext(
            "3Commas shows the price {shown} while the market is at {price} ({gap} apart). "
            "Unchanged for {n} minute.",
            "3Commas shows the price {shown} while the market is at {price} ({gap} apart). "
            "Unchanged for {n} minutes.",
            stale.minutes,
        )
        shown, live = formatting.coin(stale.shown), formatting.coin(stale.live)
    return italic(html(text, shown=shown, live=live, **values))


def _stuck(action: StuckAction, status: str, minutes: int) -> Html:
    """How long the cancel or close has waited; ``status`` is 3Commas' own word for the wait."""
    if minutes < 1:
        text = (
            _("Asked to cancel it: still {status}.")
            if action is StuckAction.CANCEL
            else _("Asked to close it at market price: still {status}.")
        )
    elif action is StuckAction.CANCEL:
        text = ngettext(
            "Asked to cancel it: still {status} after {n} minute.",
            "Asked to cancel it: still {status} after {n} minutes.",
            minutes,
        )
    else:
        text = ngettext(
            "Asked to close it at market price: still {status} after {n} minute.",
            "Asked to close it at market price: still {status} after {n} minutes.",
            minutes,
        )
    return italic(html(text, status=status, n=minutes))


def repair_button(tc_connection_id: int, account_id: int, version: str) -> tuple[str, TcRepairCb]:
    return "🔧 " + _("Update key in 3Commas"), TcRepairCb(
        action=TcRepairAction.GO, cid=tc_connection_id, acc=account_id, v=version
    )


def checklist_button(tc_connection_id: int, account_id: int, version: str) -> tuple[str, TcRepairCb]:
    return "📋 " + _("What is left to do"), TcRepairCb(
        action=TcRepairAction.LIST, cid=tc_connection_id, acc=account_id, v=version
    )


def _key_state_words(state: str | None) -> tuple[str, str]:
    return {
        "ok": ("🟢", _("key OK")),
        "expires_soon": ("🟠", _("key expires soon")),
        "expired": ("🔴", _("key expired")),
        "invalid": ("🔴", _("key invalid")),
    }.get(state or "", ("⚪", _("key state unknown")))


def account_lines(check_state: dict[str, Any] | None) -> list[Html]:
    """/status: each 3Commas account under its 3Commas connection, with its key state and last good
    balance (from the last check's snapshot, services.threecommas.checks.Snapshot)."""
    state = check_state or {}
    balances = state.get("balances") or {}
    lines = []
    for account_id, facts in sorted((state.get("accounts") or {}).items()):
        mark, words = _key_state_words(facts.get("key_state"))
        line = html(
            "    {mark} {account}: {words}",
            mark=mark,
            account=account_words(str(facts.get("name") or ""), facts.get("market_code")),
            words=words,
        )
        usd = (balances.get(account_id) or {}).get("usd")
        if usd is not None:
            line = join(" · ", [line, _("last good balance {usd} USD").format(usd=usd_words(usd))])
        lines.append(line)
    return lines


def broken_accounts(check_state: dict[str, Any] | None) -> list[int]:
    accounts = (check_state or {}).get("accounts") or {}
    return [
        int(i) for i, facts in sorted(accounts.items()) if facts.get("key_state") in {"expired", "invalid"}
    ]


# -- the wizard -------------------------------------------------------------------------------------


def wizard_intro(name: str, market_code: str | None) -> Html:
    exchange = exchange_name(market_code)
    return join(
        "\n",
        [
            "🔧 " + bold(html(_("New exchange key for {account}"), account=account_words(name, market_code))),
            html(
                _(
                    "1. On {exchange}, delete the old API key and create a new one with the same "
                    "permissions (reading and trading; never withdrawals)."
                ),
                exchange=exchange,
            ),
            _(
                "2. Restrict it to 3Commas' IP addresses, as 3Commas' guide lists them. keysentry "
                "does not need to reach this key."
            ),
            _(
                "3. Or use Fast Connect in 3Commas instead, except for a sub-account or where futures "
                "trading is not allowed in your country."
            ),
            html(
                _(
                    "Then send me the new <b>API key</b>. I delete your message at once and give the key "
                    "only to 3Commas; /cancel stops."
                )
            ),
        ],
    )


def ask_secret() -> Html:
    return html(_("Now send the <b>secret</b> of that exchange key."))


def ask_passphrase() -> Html:
    return html(_("Now send the key's <b>passphrase</b>."))


def sending() -> Html:
    return html("⏳ " + _("Giving the new key to 3Commas and asking it to reload balances…"))


def manual_steps(name: str, market_code: str | None, account_id: int, reason: str | None) -> Html:
    url = ACCOUNT_PAGE.format(id=int(account_id))
    lines: list[str] = [
        _(
            "Your 3Commas API key may not change exchange accounts (it lacks ACCOUNTS_WRITE), so please "
            "do it in 3Commas:"
        )
    ]
    if reason:
        lines.append(italic(reason))
    lines += [
        html(
            _('1. Open <a href="{url}">{account}</a> in 3Commas.'),
            url=url,
            account=account_words(name, market_code),
        ),
        _("2. Press “Update API Key” and paste the new key and secret (and passphrase)."),
        _("3. Save, then press the button below: I check and confirm. I also keep watching it."),
    ]
    return join("\n", lines)


def check_button(tc_connection_id: int, account_id: int, version: str) -> tuple[str, TcRepairCb]:
    return "✅ " + _("I updated it in 3Commas"), TcRepairCb(
        action=TcRepairAction.CHECK, cid=tc_connection_id, acc=account_id, v=version
    )


def repair_result(result: RepairResult, name: str, market_code: str | None) -> Html:
    account = account_words(name, market_code)
    match result.outcome:
        case RepairOutcome.FIXED:
            return html(
                "✅ " + _("3Commas accepted the new key (…{hint}): {account} works again."),
                hint=result.key_hint.rpartition("…")[2],
                account=account,
            )
        case RepairOutcome.STILL_BROKEN:
            return html(
                "🟠 "
                + _(
                    "3Commas took the new key but still cannot use it for {account}. Check the key's "
                    "permissions and that its IP whitelist holds 3Commas' addresses, then try again."
                ),
                account=account,
            )
        case RepairOutcome.GONE:
            return html(_("3Commas no longer has {account}."), account=account)
        case RepairOutcome.IN_PROGRESS:
            return html(
                "⏳ " + _("This key is already on its way to 3Commas for {account}; nothing was sent again."),
                account=account,
            )
        case RepairOutcome.UNAVAILABLE:
            return html(
                "🟠 " + _("3Commas did not answer ({error}). Nothing was changed; try again in a minute."),
                error=result.error or "?",
            )
        case _:
            return html("❌ " + _("3Commas refused the new key: {error}"), error=result.error or "?")


def still_broken_after_manual(name: str, market_code: str | None) -> Html:
    return html(
        "⏳ "
        + _(
            "3Commas still shows the key of {account} as unusable. I keep watching and tell you "
            "when it works."
        ),
        account=account_words(name, market_code),
    )


def keyboard_of(*buttons: tuple[str, Any]) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for text, data in buttons:
        keyboard.button(text=text, callback_data=data)
    keyboard.adjust(1)
    return keyboard.as_markup()


# -- recreate plans ---------------------------------------------------------------------------------


def plan_lines(row: FailedDeal) -> list[Html]:
    """Exactly the parameters the recreate request carries, one per line, then its warnings."""
    params = row.params
    warnings = [html("⚠️ {warning}", warning=warning_words(w)) for w in plan_warnings(params)]
    if row.kind != "smart_trade":
        body = params.get("body") or {}
        pair = body.get("pair")
        bot = params.get("bot_name") or (f"#{params['bot_id']}" if params.get("bot_id") else "")
        start = (
            html(_("DCA bot {bot}: start a new deal"), bot=bot)
            if bot
            else plain(_("DCA bot: start a new deal"))
        )
        return [
            start,
            html(_("Pair: {pair}"), pair=tc_pair_to_symbol(pair) if pair else _("the bot's pair")),
            *warnings,
        ]
    trade = smart_trade_params(params["body"])
    price = (
        _("at market") if trade.order_type == "market" else _("limit {price}").format(price=_num(trade.price))
    )
    lines = [
        html(_("SmartTrade on account {account}"), account=trade.account_id),
        html(_("Pair: {pair}"), pair=tc_pair_to_symbol(trade.pair, futures=trade.leverage_value is not None)),
        html(_("Side: {side}"), side=trade.side),
        html(_("Amount: {units} ({price})"), units=_num(trade.units), price=price),
    ]
    if trade.take_profit:
        steps = ", ".join(f"{_num(step.price)} × {_num(step.volume)}%" for step in trade.take_profit)
        lines.append(html(_("Take profit: {steps}"), steps=steps))
    else:
        lines.append(html(_("Take profit: none")))
    lines.append(
        html(_("Stop loss: {price}"), price=_num(trade.stop_loss.price))
        if trade.stop_loss
        else html(_("Stop loss: none"))
    )
    if trade.skip_enter_step:
        lines.append(html(_("Entry skipped: only take profit and stop loss are placed.")))
    return lines + warnings


def warning_words(warning: PlanWarning | str) -> Html:
    """How the recreated deal or SmartTrade will differ, in the user's words; a plan stored before
    warnings were typed holds an English sentence, shown as it is."""
    if isinstance(warning, str):
        return plain(warning)
    match warning.caveat:
        case Caveat.BOT_SETTINGS_NOW:
            settings = _old_settings(warning)
            if not settings:
                return plain(_("The new deal uses the bot's current settings."))
            return html(
                _("The new deal uses the bot's current settings (the old deal had {settings})."),
                settings=settings,
            )
        case Caveat.HELD_NOT_SOLD:
            return html(
                _("The old deal had bought {amount}; the new deal buys again, it does not sell those."),
                amount=_coins(warning.amount, warning.currency),
            )
        case Caveat.ONLY_PROTECTS:
            return html(
                _(
                    "The position was already entered ({amount} at {price}); the new SmartTrade only places "
                    "the take profit and stop loss for it, it does not buy again."
                ),
                amount=_coins(warning.amount, warning.currency),
                price=_coins(warning.price),
            )
        case Caveat.MARKET_PRICE if warning.price is not None:
            return html(
                _("A market entry fills at the current price, not at the original {price}."),
                price=_coins(warning.price),
            )
        case Caveat.MARKET_PRICE:
            return plain(_("A market entry fills at the current price."))
    raise TypeError(f"not a caveat: {warning.caveat!r}")


def _coins(amount: Decimal | None, currency: str | None = None) -> str:
    """As the plan's parameter lines write numbers: exactly what 3Commas reported or is sent."""
    text = "?" if amount is None else _num(amount)
    return f"{text} {currency}" if currency else text


def _old_settings(warning: PlanWarning) -> Html:
    """The old deal's take profit, stop loss and base order, those 3Commas reported."""
    parts: list[Html] = []
    if warning.take_profit is not None:
        parts.append(html(_("take profit {percent} %"), percent=_num(warning.take_profit)))
    if warning.stop_loss is not None:
        parts.append(html(_("stop loss {percent} %"), percent=_num(warning.stop_loss)))
    if warning.base_order is not None:
        parts.append(html(_("base order {amount}"), amount=_coins(warning.base_order, warning.currency)))
    return join(", ", parts)


# -- the checklist ----------------------------------------------------------------------------------


def _locked(locked: dict[str, Decimal]) -> str:
    return ", ".join(f"{_num(amount)} {currency}" for currency, amount in sorted(locked.items())) or "?"


def checklist(state: ChecklistState) -> tuple[Html, InlineKeyboardMarkup]:
    """The self-editing message: one line per step of 3Commas' recovery guide, and its buttons."""
    lines: list[str] = [
        "📋 "
        + bold(html(_("Recovery: {account}"), account=account_words(state.account_name, state.market_code)))
    ]
    buttons: list[tuple[str, Any]] = []

    def step_to_do(line: str, button: str, action: ChecklistAction) -> None:
        """A step still open: its line, and the button that does it (or checks it again)."""
        lines.append(line)
        buttons.append((button, ChecklistCb(action=action, id=state.checklist_id, v=state.version)))

    if state.key_ok:
        lines.append("✅ " + _("Key updated in 3Commas"))
    elif state.key_ok is None:
        lines.append("❔ " + _("Key: 3Commas did not answer just now"))
    else:
        step_to_do(
            "⏳ " + _("Key: 3Commas still cannot use it"),
            "🔄 " + _("Check the key again"),
            ChecklistAction.REFRESH,
        )
    if state.pending:
        step_to_do(
            "⏳ "
            + _("Failed since the incident: {deals} and {trades}").format(
                deals=deals_words(state.pending_deals), trades=smart_trades_words(state.pending_smart_trades)
            ),
            "♻️ " + _("Recreate all ({n})…").format(n=len(state.pending)),
            ChecklistAction.ASK_RECREATE,
        )
    elif state.recreated:
        lines.append("✅ " + _("Failed deals and SmartTrades recreated ({n})").format(n=state.recreated))
    else:
        lines.append("✅ " + _("No deal or SmartTrade failed since the incident"))
    if state.orphans is None:
        lines.append(
            "❔ " + _("Orders: I cannot see them; map this account to your exchange connection with /link3c")
        )
    elif state.orphans:
        step_to_do(
            html(
                "⏳ "
                + ngettext(
                    "{n} orphan order of finished deals locks {locked}",
                    "{n} orphan orders of finished deals lock {locked}",
                    state.orphans,
                ),
                n=state.orphans,
                locked=_locked(state.locked),
            ),
            "🧹 " + _("Cancel orphans ({n})…").format(n=state.orphans),
            ChecklistAction.ASK_CANCEL,
        )
    else:
        lines.append("✅ " + _("No orphan orders lock funds"))
    if state.old_key_deleted:
        lines.append("✅ " + _("Old key deleted on the exchange"))
    else:
        step_to_do(
            "☐ " + _("Delete the old key on the exchange (I cannot see that: tick it when done)"),
            "☑️ " + _("Old key deleted"),
            ChecklistAction.OLD_KEY_DELETED,
        )
    if state.complete:
        lines.append("\n🎉 " + _("Everything is done."))
    elif not any(
        isinstance(data, ChecklistCb) and data.action is ChecklistAction.REFRESH for _text, data in buttons
    ):
        buttons.append(
            (
                "🔄 " + _("Refresh"),
                ChecklistCb(action=ChecklistAction.REFRESH, id=state.checklist_id, v=state.version),
            )
        )
    return join("\n", lines), keyboard_of(*buttons)


def recreate_confirmation(state: ChecklistState) -> tuple[Html, InlineKeyboardMarkup]:
    lines = ["♻️ " + bold(_("Recreate through 3Commas, each exactly as below:"))]
    for number, row in enumerate(state.pending, start=1):
        lines.append(html("\n<b>{number}.</b> {plan}", number=number, plan=join("\n", plan_lines(row))))
    button = (
        "✅ " + _("Recreate all {n}").format(n=len(state.pending)),
        ChecklistCb(action=ChecklistAction.RECREATE, id=state.checklist_id, v=state.deals_version),
    )
    return join("\n", lines), keyboard_of(button)


def cancel_confirmation(state: ChecklistState) -> tuple[Html, InlineKeyboardMarkup]:
    text = html(
        "🧹 "
        + ngettext(
            "Cancel {n} orphan order locking {locked}? It is checked again against the exchange and "
            "3Commas right before it is cancelled; orders of live deals are never touched.",
            "Cancel {n} orphan orders locking {locked}? Each is checked again against the exchange and "
            "3Commas right before it is cancelled; orders of live deals are never touched.",
            state.orphans or 0,
        ),
        n=state.orphans or 0,
        locked=_locked(state.locked),
    )
    button = (
        "✅ "
        + ngettext("Cancel {n} orphan", "Cancel {n} orphans", state.orphans or 0).format(
            n=state.orphans or 0
        ),
        ChecklistCb(
            action=ChecklistAction.CANCEL,
            id=state.checklist_id,
            list=state.list_id or 0,
            v=state.list_version,
        ),
    )
    return text, keyboard_of(button)


def all_done(state: ChecklistState) -> Html:
    return html(
        "🎉 " + _("{account} is fully recovered."),
        account=account_words(state.account_name, state.market_code),
    )


def recreated(results: Sequence[RecreateResult]) -> Html:
    """What Recreate all did: created now, created before (not sent again), refused and why."""
    created = sum(1 for r in results if r.outcome is RecreateOutcome.CREATED)
    already = sum(1 for r in results if r.outcome is RecreateOutcome.ALREADY)
    said_no = {RecreateOutcome.REFUSED, RecreateOutcome.NO_WRITE_PERMISSION}
    refused = [r.error or _("this key needs write permission") for r in results if r.outcome in said_no]
    before = ngettext(
        "{m} had been recreated before and was not sent again.",
        "{m} had been recreated before and were not sent again.",
        already,
    )
    lines = [html("✅ " + _("Recreated {n};") + " " + before, n=created, m=already)]
    if refused:  # 3Commas' own words: escaped
        lines.append(html(_("3Commas refused: {errors}"), errors="; ".join(refused)[:500]))
    for outcome in _NOT_SENT:
        count = sum(1 for r in results if r.outcome is outcome)
        if count:
            lines.append(html(_not_sent(outcome, count), n=count))
    return join("\n", lines)


_NOT_SENT = (
    RecreateOutcome.NOT_CREATED,
    RecreateOutcome.UNVERIFIED,
    RecreateOutcome.IN_PROGRESS,
    RecreateOutcome.GONE,
)


def _not_sent(outcome: RecreateOutcome, n: int) -> str:
    """Why ``n`` plans were not created, where 3Commas gave no words for it."""
    match outcome:
        case RecreateOutcome.NOT_CREATED:
            return ngettext(
                "{n} was not created (3Commas did not answer in time); it can be sent again.",
                "{n} were not created (3Commas did not answer in time); they can be sent again.",
                n,
            )
        case RecreateOutcome.UNVERIFIED:
            return ngettext(
                "For {n}, 3Commas cannot tell yet whether it was created, so nothing was sent again.",
                "For {n}, 3Commas cannot tell yet whether they were created, so nothing was sent again.",
                n,
            )
        case RecreateOutcome.IN_PROGRESS:
            return ngettext(
                "{n} is already on its way to 3Commas; nothing was sent again.",
                "{n} are already on their way to 3Commas; nothing was sent again.",
                n,
            )
    return ngettext(
        "{n} is no longer linked and was not sent.", "{n} are no longer linked and were not sent.", n
    )


def cancelled(results: Sequence[CancelResult]) -> Html:
    """What Cancel orphans did."""
    done = sum(1 for r in results if r.outcome is CancelOutcome.CANCELLED)
    return html(
        "✅ "
        + ngettext("Cancelled {n} of {m} orphan order.", "Cancelled {n} of {m} orphan orders.", len(results)),
        n=done,
        m=len(results),
    )
