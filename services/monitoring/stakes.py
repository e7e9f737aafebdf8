"""What a user has at stake when their keys break: the order in which a mass event is told.

When every key breaks at once, Telegram's rate makes the last of thousands of users wait minutes.
Those minutes matter most to users whose money is exposed, so the outbox is sent riskiest first
(``OutboxMessage.priority``, highest first). The score is a sum of flags, each one a reason the
user must act now rather than later:

* ``ACTIVE_DEALS`` — a linked 3Commas account has deals or SmartTrades running (its last check
  saw them): bots keep trading on a key that no longer works, or stop mid-deal;
* ``LOCKED_FUNDS`` — an exchange connection last saw funds locked by open orders
  (``total > free`` for some asset): orders that may be orphaned and need cancelling;
* ``TRADE_ENABLED`` — a key allows trading: whoever reset it may have had a reason.

Data comes from what the poller already stored (no exchange call), for many users in one query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.storage.models import Connection

ACTIVE_DEALS = 4
LOCKED_FUNDS = 2
TRADE_ENABLED = 1


def connection_stake(
    kind: str, key_info: Mapping[str, Any], balances: Mapping[str, Any], check_state: Mapping[str, Any]
) -> int:
    """The flags one connection contributes (see the module docstring)."""
    stake = 0
    if kind != "exchange":
        if check_state.get("deals"):
            stake |= ACTIVE_DEALS
        return stake
    if key_info.get("can_trade"):
        stake |= TRADE_ENABLED
    if any(_locked(value) for value in balances.values()):
        stake |= LOCKED_FUNDS
    return stake


def _locked(balance: Any) -> bool:
    if not isinstance(balance, Mapping):
        return False
    try:
        return float(balance.get("total") or 0) > float(balance.get("free") or 0)
    except (TypeError, ValueError):
        return False


async def user_stakes(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, int]:
    """user id → stake flags over all their connections (0 for users without any)."""
    ids = list(set(user_ids))
    stakes = dict.fromkeys(ids, 0)
    rows = await session.execute(
        select(
            Connection.user_id,
            Connection.kind,
            Connection.key_info,
            Connection.balances,
            Connection.check_state,
        ).where(Connection.user_id.in_(ids))
    )
    for user_id, kind, key_info, balances, check_state in rows:
        stakes[user_id] |= connection_stake(kind, key_info or {}, balances or {}, check_state or {})
    return stakes
