"""/orders on a Binance key whose 3Commas account trades USDⓈ-M futures: the real bot, real ccxt
``binanceusdm`` against the local ``fapi.binance.com``, the local 3Commas."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from services.core.vault import Credentials
from services.storage.connections import new_connection
from services.storage.models import AuditEntry
from tests.conftest import T0
from tests.test_monitoring import monitor
from tests.test_orders import USER, line_of, link_exchange, map_threecommas, rig, showing

__all__ = ["rig"]  # the fixture, shared with tests/test_orders.py


@pytest.fixture
async def futures(rig, exchanges, tc) -> dict[str, Any]:
    """A Binance key with a futures order of an active deal and one of a finished deal."""
    binance = exchanges["binance"]
    key = binance.add_key(balances={"USDT": 10_000})
    binance.set_balance(key.api_key, "USDT", 10_000, wallet="futures")
    active_id = binance.add_order(key.api_key, "BTC/USDT:USDT", "buy", "60000", "0.01", created_at=T0)
    orphan_id = binance.add_order(key.api_key, "ETH/USDT:USDT", "sell", "3700", "0.5", created_at=T0)
    cid = await link_exchange(rig, "binance", key)
    tc_key, account = await map_threecommas(rig, tc, cid, "binance_futures")
    tc.add_deal(
        tc_key,
        account,
        pair="USDT_BTCUSDT",
        market_type="futures",
        orders=[{"side": "buy", "price": "60000", "amount": "0.01", "created_at": T0}],
    )
    finished = tc.add_deal(
        tc_key,
        account,
        pair="USDT_ETHUSDT",
        market_type="futures",
        orders=[{"side": "sell", "price": "3700", "amount": "0.5", "created_at": T0, "status": "active"}],
    )
    tc.finish_deal(finished)
    return {"key": key, "active": active_id, "orphan": orphan_id, "deal": finished}


async def test_futures_orphan_of_a_finished_deal_is_listed_and_cancelled_active_one_is_not(
    rig, exchanges, futures
):
    binance = exchanges["binance"]
    orphan_id, active_id, finished = futures["orphan"], futures["active"], futures["deal"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    assert "2 open orders: 🟢 1 active deal · 🟠 1 orphan" in listing.text
    assert "orphan" in line_of(listing, "SELL 0.5 ETH/USDT:USDT")
    assert "active deal" in line_of(listing, "BUY 0.01 BTC/USDT:USDT")
    labels = [b.text for b in listing.buttons]
    assert "❌ Cancel 1" in labels and not any(label.endswith(" 2") for label in labels)
    # One USDⓈ-M listing without a symbol (weight 40), no per-symbol loop.
    assert [r.path for r in binance.requests].count("/fapi/v1/openOrders") == 1

    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    await showing(rig, listing.message_id, "Cancelled SELL 0.5 ETH/USDT:USDT")
    assert orphan_id not in binance.orders and active_id in binance.orders
    deletes = [r.path for r in binance.requests if r.method == "DELETE"]
    assert deletes == ["/fapi/v1/order"]
    async with rig.app.sessions() as session:
        entries = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "order_cancel")))
    assert [e.detail["deal_ref"] for e in entries] == [f"deal:{finished}"]


async def test_a_futures_orphan_filled_meanwhile_is_reported_filled_from_the_futures_api(
    rig, exchanges, futures
):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    binance.fill_order(futures["key"].api_key, futures["orphan"])
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    await showing(rig, listing.message_id, "already filled")
    assert not any(r.method == "DELETE" for r in binance.requests)
    assert any(r.method == "GET" and r.path == "/fapi/v1/order" for r in binance.requests)


async def test_status_shows_the_futures_wallet_of_a_key_that_may_trade_futures(tmp_path):
    """A Binance key with ``enableFutures`` has a USDⓈ-M wallet on its own API: the poller loads it
    with the spot balances (GET /fapi/v3/account, weight 5) and /status shows it. A read-only key
    costs no futures call and shows no such line."""
    async with monitor(tmp_path, "binance") as m:
        binance = m.exchanges["binance"]
        _, trading = await m.link(1, "binance", label="Trading")
        binance.set_balance(trading, "USDT", 250)
        binance.set_balance(trading, "USDT", 5000, wallet="futures")
        reader = binance.add_key(balances={"USDT": 100}, can_trade=False)
        async with m.rig.app.sessions.begin() as session:
            session.add(
                new_connection(
                    m.rig.app.vault, user_id=1, exchange="binance", label="Reader",
                    credentials=Credentials(reader.api_key, reader.secret), now=m.rig.clock.now(),
                )
            )  # fmt: skip
        await m.tick(0)
        status = await m.rig.say(1, "/status")
        lines = status.text.splitlines()
        trading_at = next(i for i, line in enumerate(lines) if "Trading" in line)
        assert "250" in lines[trading_at] and "futures wallet: ≈ 5,000.00 USD" in lines[trading_at + 1]
        assert sum("futures wallet" in line for line in lines) == 1
        fapi = [r for r in binance.requests if r.path.startswith("/fapi/")]
        assert [r.path for r in fapi if "account" in r.path] == ["/fapi/v3/account"]


@pytest.mark.parametrize(
    ("exchange", "market_code"),
    # 3Commas account classes Accounts::BybitUsdtPerpetualAccount and Accounts::OkexFuturesAccount
    # (docs dca-bot/1_available_strategy_list); services/threecommas/entities.market_of reads the
    # code's words: linear contracts on the same v5 / v5 API as spot.
    [("bybit", "bybit_usdt_perpetual"), ("okx", "okex_futures")],
)
async def test_bybit_and_okx_perpetual_orphans_are_listed_and_cancelled(
    rig, exchanges, tc, exchange, market_code
):
    server = exchanges[exchange]
    key = server.add_key(balances={"USDT": 10_000})
    server.set_balance(key.api_key, "USDT", 10_000, wallet="futures")
    active_id = server.add_order(key.api_key, "BTC/USDT:USDT", "buy", "60000", "0.01", created_at=T0)
    orphan_id = server.add_order(key.api_key, "ETH/USDT:USDT", "sell", "3700", "0.5", created_at=T0)
    cid = await link_exchange(rig, exchange, key)
    tc_key, account = await map_threecommas(rig, tc, cid, market_code)
    tc.add_deal(
        tc_key, account, pair="USDT_BTCUSDT", market_type="futures",
        orders=[{"side": "buy", "price": "60000", "amount": "0.01", "created_at": T0}],
    )  # fmt: skip
    finished = tc.add_deal(
        tc_key, account, pair="USDT_ETHUSDT", market_type="futures",
        orders=[{"side": "sell", "price": "3700", "amount": "0.5", "created_at": T0, "status": "active"}],
    )  # fmt: skip
    tc.finish_deal(finished)
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    assert "2 open orders: 🟢 1 active deal · 🟠 1 orphan" in listing.text
    assert "orphan" in line_of(listing, "ETH/USDT:USDT")
    assert "active deal" in line_of(listing, "BTC/USDT:USDT")
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    await showing(rig, listing.message_id, "Cancelled SELL")
    assert orphan_id not in server.orders and active_id in server.orders
