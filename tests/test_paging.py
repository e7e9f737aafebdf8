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
