"""Sandbox-only commands that play the exchange's part, so a newcomer can watch the whole story.

/sandbox_key <exchange> creates a key on a local exchange and prints it, ready for /link;
/sandbox_revoke <exchange> revokes the newest key there; /sandbox_restore makes it valid again;
/sandbox_outage <exchange> makes the exchange answer 503 for a while.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from sandbox.exchanges import LocalExchange


def sandbox_router(exchanges: dict[str, LocalExchange]) -> Router:
    router = Router(name="sandbox")
    issued: dict[str, list[str]] = {}

    def pick(command: CommandObject) -> LocalExchange | None:
        return exchanges.get((command.args or "binance").strip().lower())

    @router.message(Command("sandbox_key"))
    async def make_key(message: Message, command: CommandObject) -> None:
        exchange = pick(command)
        if exchange is None:
            await message.answer("Exchanges here: " + ", ".join(exchanges))
            return
        key = exchange.add_key(balances={"USDT": 2500.0, "BTC": 0.05, "ETH": 1.2})
        issued.setdefault(exchange.exchange_id, []).append(key.api_key)
        parts = [exchange.exchange_id, key.api_key, key.secret] + ([key.passphrase] if key.passphrase else [])
        await message.answer("Sandbox key created. Link it with:\n<code>/link " + " ".join(parts) + "</code>")

    async def set_state(message: Message, command: CommandObject, state: str) -> None:
        exchange = pick(command)
        keys = issued.get(exchange.exchange_id, []) if exchange else []
        if exchange is None or not keys:
            await message.answer("Create a key first: /sandbox_key binance")
            return
        exchange.set_key_state(keys[-1], state)
        await message.answer(f"{exchange.exchange_id}: newest key is now {state}. Press Refresh in /status.")

    @router.message(Command("sandbox_revoke"))
    async def revoke(message: Message, command: CommandObject) -> None:
        await set_state(message, command, "revoked")

    @router.message(Command("sandbox_restore"))
    async def restore(message: Message, command: CommandObject) -> None:
        await set_state(message, command, "valid")

    @router.message(Command("sandbox_outage"))
    async def outage(message: Message, command: CommandObject) -> None:
        exchange = pick(command)
        if exchange is None:
            await message.answer("Exchanges here: " + ", ".join(exchanges))
            return
        exchange.inject("status_5xx", times=50)
        await message.answer(f"{exchange.exchange_id} answers 503 to the next 50 private requests.")

    return router
