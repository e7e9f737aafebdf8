"""Egress routes (services/exchanges/egress.py): users pinned to one IP, each IP its own budget."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from sandbox.exchanges import LocalBinance
from sandbox.proxy import LocalProxy
from services.core.clock import FakeClock
from services.core.vault import Credentials, Vault, generate_key
from services.core.verdicts import Verdict
from services.exchanges.budget import BudgetRegistry
from services.exchanges.egress import DIRECT, Egress, egress_for, routes_from_settings
from services.exchanges.hub import ExchangeHub
from services.monitoring.checkers import ExchangeChecker
from services.monitoring.polling import Claimed, Poller
from services.storage.connections import new_connection
from services.storage.models import Connection, Incident, OutboxMessage
from services.storage.users import get_or_create_user

ROUTES = routes_from_settings(
    ["203.0.113.1", "203.0.113.2"], {"b": {"url": "http://10.0.0.2:3128", "ip": "203.0.113.2"}}
)


def test_routes_from_settings_direct_first_with_its_own_ip():
    assert (Egress(DIRECT, None, "203.0.113.1"), Egress("b", "http://10.0.0.2:3128", "203.0.113.2")) == ROUTES


def test_a_user_keeps_the_ip_their_key_whitelists_whatever_routes_are_added():
    more = (*ROUTES, Egress("c", "http://10.0.0.3:3128", "203.0.113.3"))
    for user_id in range(200):
        assert egress_for(ROUTES, user_id, ["203.0.113.2"]).name == "b"
        assert egress_for(more, user_id, ["203.0.113.2"]).name == "b"


def test_users_spread_evenly_and_a_new_route_takes_only_its_own_share():
    before = {u: egress_for(ROUTES, u).name for u in range(3000)}
    assert all(900 <= n <= 2100 for n in Counter(before.values()).values())
    more = (*ROUTES, Egress("c", "http://10.0.0.3:3128", "203.0.113.3"))
    after = {u: egress_for(more, u).name for u in range(3000)}
    moved = [u for u in before if before[u] != after[u]]
    assert all(after[u] == "c" for u in moved)  # nobody moves between the old routes
    assert 700 <= len(moved) <= 1300  # about a third goes to the new one


async def test_each_route_leaves_from_its_own_ip_with_its_own_budget():
    exchange = LocalBinance()
    proxies = [LocalProxy("127.0.0.11"), LocalProxy("127.0.0.12")]
    url = await exchange.start()
    hub = None
    try:
        routes = (
            Egress(DIRECT),
            *[Egress(f"p{i}", await p.start(), p.source_ip) for i, p in enumerate(proxies)],
        )
        hub = ExchangeHub(url_overrides={"binance": url}, budgets=BudgetRegistry(), egress=routes)
        key = exchange.add_key()
        credentials = Credentials(key.api_key, key.secret)
        for route in routes:
            client = await hub.client("binance", credentials, egress=route)
            assert client.egress == route
            for _ in range((route.name == "p1" and 3) or 1):
                await client.call("sapiGetAccountApiRestrictions", weight=1)
        used = {ip: exchange.used_weight_in("sapi", ip) for ip in ("127.0.0.1", "127.0.0.11", "127.0.0.12")}
        assert used == {"127.0.0.1": 1, "127.0.0.11": 1, "127.0.0.12": 3}
        assert [hub.budgets_for(route).in_use("binance_sapi") for route in routes] == [1, 1, 3]
        assert hub.budgets_for(routes[0]) is hub.budgets
        # Three routes carry three times the connections in the same interval.
        one = ExchangeHub(budgets=BudgetRegistry()).stretch_interval("binance", timedelta(seconds=10), 3000)
        three = hub.stretch_interval("binance", timedelta(seconds=10), 3000)
        assert three.total_seconds() * 2.9 <= one.total_seconds()
    finally:
        if hub is not None:
            await hub.close()
        for proxy in proxies:
            await proxy.close()
        await exchange.close()


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_a_key_check_goes_through_a_socks5_route_from_that_routes_ip(scheme):
    """A key whitelisting only the SOCKS route's IP passes its check: the check was routed through
    the SOCKS5 proxy (aiohttp-socks) and left from the proxy's address. ``socks5h`` (names
    resolved by the proxy) works too."""
    exchange = LocalBinance()
    socks = LocalProxy("127.0.0.13", socks=True)
    url = await exchange.start()
    hub = None
    try:
        route = Egress("s", (await socks.start()).replace("socks5://", f"{scheme}://"), socks.source_ip)
        assert route.is_socks
        hub = ExchangeHub(
            url_overrides={"binance": url}, budgets=BudgetRegistry(), egress=(Egress(DIRECT), route)
        )
        key = exchange.add_key(ip_whitelist=["127.0.0.13"])
        vault = Vault([generate_key()])
        checker = ExchangeChecker(hub, vault, FakeClock())
        claimed = Claimed(
            id=1,
            user_id=1,
            kind="exchange",
            exchange="binance",
            label="Main",
            key_hint="",
            credentials=vault.seal(Credentials(key.api_key, key.secret)),
            interval=timedelta(seconds=60),
            balances_at=None,
            key_info={"ip_restricted": True, "ip_list": ["127.0.0.13"]},
            check_state={},
        )
        result = await checker(claimed)
        assert result.verdict is Verdict.OK, result.detail
        assert socks.connections >= 1
        assert exchange.used_weight_in("sapi", "127.0.0.13") >= 1
        assert exchange.used_weight_in("sapi", "127.0.0.1") == 0
    finally:
        if hub is not None:
            await hub.close()
        await socks.close()
        await exchange.close()


async def test_a_route_out_of_budget_puts_its_checks_off_without_holding_up_the_other_route(
    sessions, vault, clock
):
    """Binance paused our direct IP (a 429): a check due on that route is put off to when the
    pause ends — nothing sent, nothing decided, the user not told anything — while the check on
    the proxy route in the same batch goes through at once. Before, the first waited out the
    pause inside the poller's slot and the batch, and the other route's checks with it."""
    exchange = LocalBinance()
    proxy = LocalProxy("127.0.0.14")
    url = await exchange.start()
    hub = None
    try:
        routes = (Egress(DIRECT), Egress("p1", await proxy.start(), proxy.source_ip))
        budgets = BudgetRegistry(monotonic=clock.monotonic, sleep=clock.sleep)
        hub = ExchangeHub(url_overrides={"binance": url}, budgets=budgets, egress=routes)
        users = {egress_for(routes, u).name: u for u in range(1, 50)}  # one user on each route
        async with sessions.begin() as session:
            for route, user_id in users.items():
                await get_or_create_user(session, user_id, "en", clock.now())
                key = exchange.add_key()
                session.add(
                    new_connection(
                        vault,
                        user_id=user_id,
                        exchange="binance",
                        label=route,
                        credentials=Credentials(key.api_key, key.secret),
                        now=clock.now(),
                    )
                )
        for pool in ("binance", "binance_sapi"):
            hub.budgets_for(routes[0]).penalize(pool, 30)
        poller = Poller(sessions, clock, "w", checkers={"exchange": ExchangeChecker(hub, vault, clock)})
        started = clock.now()

        assert await poller.run_once() == 2
        assert clock.now() == started  # nobody waited for the pause
        assert poller.checked == 1
        async with sessions() as session:
            rows = {c.label: c for c in await session.scalars(select(Connection))}
            assert not (await session.scalars(select(Incident))).all()
            assert not (await session.scalars(select(OutboxMessage))).all()
        assert rows["p1"].verdict == Verdict.OK.value and rows["p1"].last_check_at == started
        put_off = rows[DIRECT]
        assert put_off.last_check_at is None and put_off.lease_owner is None
        assert put_off.next_poll_at == started + timedelta(seconds=30)
        assert exchange.used_weight_in("sapi", "127.0.0.1") == 0
    finally:
        if hub is not None:
            await hub.close()
        await proxy.close()
        await exchange.close()
