"""Sandbox-only commands that play the exchange's and 3Commas' part, so a newcomer can watch
the whole story.

/sandbox_key <exchange> creates a key on a local exchange and prints it, ready for /link;
/sandbox_revoke <exchange> revokes the newest key there; /sandbox_restore makes it valid again;
/sandbox_outage <exchange> makes the exchange answer 503 for a while;
/sandbox_3c creates a 3Commas key with an account on the local Binance, an active deal and a
finished one whose take-profit order still rests on the exchange (an orphan locking funds);
/sandbox_fail fails the active deal the way 3Commas does when the exchange key is revoked;
/sandbox_reset plays the mass reset: every exchange key the local 3Commas holds stops working at
once, its deals and SmartTrades fail, bots switch off, balances stop loading.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext

from bot.texts import accounts_words, bots_words, deals_words, smart_trades_words
from sandbox.exchanges import KeyState, LocalExchange
from sandbox.threecommas import LocalThreeCommas


def sandbox_router(exchanges: dict[str, LocalExchange], threecommas: LocalThreeCommas) -> Router:
    router = Router(name="sandbox")
    issued: dict[str, list[str]] = {}
    deals: list[int] = []

    def pick(command: CommandObject) -> LocalExchange | None:
        return exchanges.get((command.args or "binance").strip().lower())

    async def named_exchange(message: Message, command: CommandObject) -> LocalExchange | None:
        """The exchange the command names; a name that is not here gets the list of those that are."""
        exchange = pick(command)
        if exchange is None:
            await message.answer(_("Exchanges here: {names}").format(names=", ".join(exchanges)))
        return exchange

    @router.message(Command("sandbox_key"))
    async def make_key(message: Message, command: CommandObject) -> None:
        exchange = await named_exchange(message, command)
        if exchange is None:
            return
        key = exchange.add_key(balances={"USDT": 2500.0, "BTC": 0.05, "ETH": 1.2})
        issued.setdefault(exchange.exchange_id, []).append(key.api_key)
        parts = [exchange.exchange_id, key.api_key, key.secret] + ([key.passphrase] if key.passphrase else [])
        await message.answer(
            _("Sandbox key created. Link it with:") + "\n<code>/link " + " ".join(parts) + "</code>"
        )

    async def set_state(message: Message, command: CommandObject, state: KeyState) -> None:
        exchange = pick(command)
        keys = issued.get(exchange.exchange_id, []) if exchange else []
        if exchange is None or not keys:
            await message.answer(_("Create a key first: /sandbox_key binance"))
            return
        exchange.set_key_state(keys[-1], state)
        await message.answer(
            (
                _("{exchange}: the newest key is revoked now. Press Refresh in /status.")
                if state == "revoked"
                else _("{exchange}: the newest key works again. Press Refresh in /status.")
            ).format(exchange=exchange.exchange_id)
        )

    @router.message(Command("sandbox_revoke"))
    async def revoke(message: Message, command: CommandObject) -> None:
        await set_state(message, command, "revoked")

    @router.message(Command("sandbox_restore"))
    async def restore(message: Message, command: CommandObject) -> None:
        await set_state(message, command, "valid")

    @router.message(Command("sandbox_outage"))
    async def outage(message: Message, command: CommandObject) -> None:
        exchange = await named_exchange(message, command)
        if exchange is None:
            return
        exchange.inject("status_5xx", times=50)
        await message.answer(
            ngettext(
                "{exchange} answers 503 to the next private request.",
                "{exchange} answers 503 to the next {n} private requests.",
                50,
            ).format(exchange=exchange.exchange_id, n=50)
        )

    @router.message(Command("sandbox_3c"))
    async def make_threecommas(message: Message) -> None:
        binance = exchanges["binance"]
        keys = issued.get("binance", [])
        if not keys:
            await message.answer(_("First create and /link a Binance key: /sandbox_key binance"))
            return
        tc_key = threecommas.add_key()
        account = threecommas.add_account(tc_key.api_key, exchange="binance", name="Main")
        now = datetime.now(UTC)
        # Bots named apart: the reset's "bot … was switched off" lines must not read as one line twice.
        eth_bot = threecommas.add_bot(tc_key.api_key, account, pairs=["USDT_ETH"], name="ETH long")
        btc_bot = threecommas.add_bot(tc_key.api_key, account, pairs=["USDT_BTC"], name="BTC long")
        active = threecommas.add_deal(
            tc_key.api_key, account, pair="USDT_ETH", current_price="3000", bought_amount="0.5",
            bot_id=eth_bot, orders=[{"side": "sell", "price": "3150", "amount": "0.5", "created_at": now}],
        )  # fmt: skip
        finished = threecommas.add_deal(
            tc_key.api_key, account, pair="USDT_BTC", current_price="65000", bought_amount="0.01",
            bot_id=btc_bot, orders=[{"side": "sell", "price": "68000", "amount": "0.01", "created_at": now}],
        )  # fmt: skip
        threecommas.finish_deal(finished, status="cancelled")
        threecommas.set_price("USDT_SOL", "150")
        threecommas.add_smart_trade(
            tc_key.api_key,
            account,
            pair="USDT_SOL",
            price="140",
            take_profit=[{"price": "160", "volume": 100}],
        )
        binance.add_order(keys[-1], "ETH/USDT", "sell", "3150", "0.5", created_at=now)
        binance.add_order(keys[-1], "BTC/USDT", "sell", "68000", "0.01", created_at=now)
        deals[:] = [active]
        await message.answer(
            _(
                "3Commas sandbox ready: the deal on ETH/USDT is active, the BTC/USDT deal was cancelled "
                "but its sell order still locks 0.01 BTC on Binance. Link it, map the account to your "
                "Binance connection, then open /orders:"
            )
            + "\n<code>/link3c</code> "
            + _("then send")
            + f"\n<code>{tc_key.api_key}</code>\n<code>{tc_key.secret}</code>"
        )

    @router.message(Command("sandbox_fail"))
    async def fail_deal(message: Message) -> None:
        if not deals:
            await message.answer(_("Create the 3Commas sandbox first: /sandbox_3c"))
            return
        threecommas.fail_deal(deals[0], error_message="Invalid API key")
        await message.answer(
            _("The ETH/USDT deal failed on 3Commas. The alert with a Recreate button follows.")
        )

    @router.message(Command("sandbox_reset"))
    async def reset(message: Message) -> None:
        counts = threecommas.reset_exchange_keys()
        if not counts["accounts"]:
            await message.answer(_("Create the 3Commas sandbox first: /sandbox_3c"))
            return
        await message.answer(
            _(
                "3Commas reset every exchange key it holds. Broken: {accounts}. Failed: {deals} and "
                "{smart_trades}. Switched off: {bots}. Balances stop loading. Alerts follow within a "
                "minute; for the repair create a fresh key with /sandbox_key binance and send its key "
                "and secret to the wizard."
            ).format(
                accounts=accounts_words(counts["accounts"]),
                deals=deals_words(counts["deals"]),
                smart_trades=smart_trades_words(counts["smart_trades"]),
                bots=bots_words(counts["bots"]),
            )
        )

    return router
