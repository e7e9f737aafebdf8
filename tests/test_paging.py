"""Open-order paging against the local OKX and Bybit, which page as the docs say."""

from __future__ import annotations

import pytest

from services.core.vault import Credentials
from services.exchanges.budget import BudgetRegistry
from services.exchanges.hub import ExchangeHub
from services.exchanges.open_orders import MAX_PAGES, PAGE_LIMITS, fetch_all_open_orders


@pytest.mark.parametrize(("exchange_id", "count"), [("okx", 230), ("bybit", 120)])
async def test_every_page_is_fetched_once_and_the_loop_ends(net, exchanges, exchange_id, count) -> None:
    server = exchanges[exchange_id]
    key = server.add_key(balances={"USDT": 10_000_000})
    ids = {server.add_order(key.api_key, "BTC/USDT", "buy", "100", "0.001") for _ in range(count)}
    hub = ExchangeHub(transport=net.transport, budgets=BudgetRegistry({exchange_id: 1e6}))
    try:
        client = await hub.client(exchange_id, Credentials(key.api_key, key.secret, key.passphrase))
        orders = await fetch_all_open_orders(client)
    finally:
        await hub.close()
    assert {o["id"] for o in orders} == ids and len(orders) == count
    pages = [r for r in server.requests if "order" in r.path and r.api_key == key.api_key]
    per_page = PAGE_LIMITS[exchange_id]
    spot_pages = count // per_page + 1
    assert len(pages) == spot_pages + 1 <= MAX_PAGES + 1  # + the (empty) contract category


async def test_sapi_has_its_own_pool_and_okx_private_calls_are_paced_per_key(net, exchanges) -> None:
    """Binance /sapi counts in its own 12 000/min IP pool; OKX limits private endpoints per user
    id and endpoint, so they never spend an IP-wide budget."""
    from services.core.clock import SystemClock
    from services.exchanges.probes import probe

    hub = ExchangeHub(transport=net.transport)
    try:
        for exchange_id in ("binance", "okx"):
            key = exchanges[exchange_id].add_key()
            client = await hub.client(exchange_id, Credentials(key.api_key, key.secret, key.passphrase))
            assert (await probe(client, clock=SystemClock(), with_balances=True)).verdict == "ok"
            if exchange_id == "binance":
                assert hub.budgets.in_use("binance_sapi") == 1  # GET /sapi/v1/account/apiRestrictions
                assert hub.budgets.in_use("binance") >= 20  # GET /api/v3/account (+ markets)
            else:
                assert hub.budgets.in_use("okx") == 0  # the IP budget is for public calls only
                assert hub.budgets.in_use(f"okx:privateGetAccountConfig:{key.api_key}") == 1
    finally:
        await hub.close()
