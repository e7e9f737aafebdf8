"""Local Binance, Bybit and OKX REST servers with real signatures, error codes, weights and faults.

Point a ccxt instance at one by replacing every ``exchange.urls['api']`` entry with ``server.url`` plus
the original URL's path. Each module's docstring lists what its fake serves and how it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .base import FAULTS, KEY_STATES, FaultKind, KeyState, LocalExchange, LocalKey, RequestRecord
from .binance import LocalBinance
from .bybit import LocalBybit
from .okx import LocalOkx

LOCAL_EXCHANGES: dict[str, type[LocalExchange]] = {
    "binance": LocalBinance,
    "bybit": LocalBybit,
    "okx": LocalOkx,
}


@asynccontextmanager
async def running_local_exchange(
    exchange_id: str, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> AsyncIterator[LocalExchange]:
    """Start the fake for ``exchange_id`` (constructor ``kwargs``: ``clock``, ``wall``) and close it after."""
    server = LOCAL_EXCHANGES[exchange_id](**kwargs)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.close()


__all__ = [
    "FAULTS",
    "KEY_STATES",
    "LOCAL_EXCHANGES",
    "FaultKind",
    "KeyState",
    "LocalBinance",
    "LocalBybit",
    "LocalExchange",
    "LocalKey",
    "LocalOkx",
    "RequestRecord",
    "running_local_exchange",
]
