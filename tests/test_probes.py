"""Probes through real ccxt against the local Binance, Bybit and OKX servers (sandbox/exchanges)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import pytest

from sandbox.exchanges import LOCAL_EXCHANGES, LocalBinance, LocalExchange, LocalKey, running_local_exchange
from services.core.clock import FakeClock, SystemClock
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.exchanges.budget import BudgetRegistry
from services.exchanges.hub import (
    ExchangeHub,
    display_name,
    needs_passphrase,
    rebase_urls,
    supported_exchanges,
)
from services.exchanges.probes import KeyInfo, key_warnings, probe, probe_weight
from tests.production_net import ProductionNet

CLOCK = SystemClock()
EXCHANGES = ["binance", "bybit", "okx"]
# A bare ccxt instance's close() sleeps timeout_on_exit (250 ms) even on a session it does not own,
# which the test closes itself.
NO_EXIT_WAIT = {"timeout_on_exit": 0}


def creds(key: LocalKey, *, secret: str | None = None) -> Credentials:
    return Credentials(key.api_key, secret or key.secret, key.passphrase)


@pytest.fixture
def pace() -> FakeClock:
    """The clock of the rate-limit windows at both ends, the local exchange's and the hub's budget:
    a budget that must wait for its window moves it instead of sleeping (OKX allows a key 5
    account/config calls per 2 s, and a test's third probe would otherwise wait 2 real seconds)."""
    return FakeClock()


@pytest.fixture(params=EXCHANGES)
async def server(
    request: pytest.FixtureRequest, net: ProductionNet, pace: FakeClock
) -> AsyncIterator[LocalExchange]:
    local = await net.serve_exchange(LOCAL_EXCHANGES[request.param](pace.monotonic))
    try:
        yield local
    finally:
        await local.close()


def make_hub(net: ProductionNet, **kwargs: Any) -> ExchangeHub:
    """A hub reaching the local exchanges under their production hostnames, over TLS."""
    return ExchangeHub(transport=net.transport, **kwargs)


@pytest.fixture
async def hub(server: LocalExchange, net: ProductionNet, pace: FakeClock) -> AsyncIterator[ExchangeHub]:
    # A generous budget: these tests are about verdicts, not pacing (test_budget.py covers that).
    budgets = BudgetRegistry({server.exchange_id: 1_000_000}, monotonic=pace.monotonic, sleep=pace.sleep)
    local_hub = make_hub(net, timeout_ms=3000, budgets=budgets)
    try:
        yield local_hub
    finally:
        await local_hub.close()


async def run_probe(hub: ExchangeHub, server: LocalExchange, key: LocalKey, **kwargs: Any) -> Any:
    client = await hub.client(server.exchange_id, creds(key))
    return await probe(client, clock=CLOCK, with_key_info=True, **kwargs)


# --- key verdicts ------------------------------------------------------------------------------


async def test_valid_key_is_ok_with_key_info_and_balances(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key(balances={"USDT": 1234.5, "BTC": 0.25, "ETH": 0})
    result = await run_probe(hub, server, key, with_balances=True)
    assert result.verdict is Verdict.OK, result
    assert result.balances == {
        "USDT": {"free": 1234.5, "total": 1234.5},
        "BTC": {"free": 0.25, "total": 0.25},
    }
    info = result.key_info
    assert info is not None
    assert (info.can_trade, info.can_withdraw, info.ip_restricted) == (True, False, False)
    assert result.weight == probe_weight(server.exchange_id, with_balances=True)
    assert KeyInfo.from_json(info.to_json()) == info


async def test_key_check_without_balances_makes_one_request(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    result = await run_probe(hub, server, key)
    assert (result.verdict, result.balances) == (Verdict.OK, None)
    assert [r.api_key for r in server.requests] == [key.api_key]


async def test_wrong_secret_is_signature_invalid(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    client = await hub.client(server.exchange_id, creds(key, secret="x" * len(key.secret)))
    result = await probe(client, clock=CLOCK)
    assert result.verdict is Verdict.SIGNATURE_INVALID, result


async def test_revoked_key_is_key_invalid(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    known = (await run_probe(hub, server, key)).key_info
    server.set_key_state(key.api_key, "revoked")
    for last_seen in (None, known):
        result = await run_probe(hub, server, key, known=last_seen)
        assert result.verdict is Verdict.KEY_INVALID, result


async def test_ip_restricted_key_is_ip_not_allowed(server: LocalExchange, hub: ExchangeHub) -> None:
    # Bound to our IP first, so the probe sees an IP-restricted key that works.
    key = server.add_key(ip_whitelist=["127.0.0.1"])
    known = (await run_probe(hub, server, key)).key_info
    assert known is not None and known.ip_restricted is True
    server.set_key_state(key.api_key, "ip_restricted")  # now bound to an address that is not ours
    result = await run_probe(hub, server, key, known=known)
    assert result.verdict is Verdict.IP_NOT_ALLOWED, result


async def test_bybit_and_okx_name_the_ip_problem_without_history(
    server: LocalExchange, hub: ExchangeHub
) -> None:
    key = server.add_key()
    server.set_key_state(key.api_key, "ip_restricted")
    result = await run_probe(hub, server, key)
    # Binance answers -2015 for every cause: without history it can only say key_invalid.
    expected = Verdict.KEY_INVALID if server.exchange_id == "binance" else Verdict.IP_NOT_ALLOWED
    assert result.verdict is expected, result


async def test_expired_key(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    known = (await run_probe(hub, server, key)).key_info
    server.set_key_state(key.api_key, "expired")
    result = await run_probe(hub, server, key, known=known)
    # OKX deletes idle unbound keys and then answers like for a revoked key (50119).
    expected = Verdict.KEY_INVALID if server.exchange_id == "okx" else Verdict.KEY_EXPIRED
    assert result.verdict is expected, result
    if server.exchange_id == "okx":
        assert "14 days" in result.detail


async def test_removed_trading_permission_is_reported_until_it_is_back(
    server: LocalExchange, hub: ExchangeHub
) -> None:
    key = server.add_key()
    known = (await run_probe(hub, server, key)).key_info
    server.set_key_state(key.api_key, "read_only")
    for _ in range(2):  # the baseline is not overwritten: the verdict does not flip back to ok
        result = await run_probe(hub, server, key, known=known)
        assert result.verdict is Verdict.PERMISSION_MISSING, result
        assert result.key_info is None
    server.set_key_state(key.api_key, "valid")
    assert (await run_probe(hub, server, key, known=known)).verdict is Verdict.OK


# --- the exchange's trouble is never the key's ---------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kwargs", "expected"),
    [
        ("status_5xx", {}, {Verdict.EXCHANGE_DOWN}),
        ("status_5xx", {"status": 502}, {Verdict.EXCHANGE_DOWN}),
        ("status_5xx", {"status": 504}, {Verdict.EXCHANGE_DOWN}),
        ("maintenance", {}, {Verdict.EXCHANGE_DOWN}),
        ("rate_limit", {}, {Verdict.RATE_LIMITED}),
        ("ban", {}, {Verdict.RATE_LIMITED}),
    ],
)
async def test_exchange_faults_are_never_key_problems(
    server: LocalExchange, hub: ExchangeHub, fault: str, kwargs: dict[str, Any], expected: set[Verdict]
) -> None:
    key = server.add_key()
    server.inject(fault, times=1, **kwargs)  # type: ignore[arg-type]
    result = await run_probe(hub, server, key)
    assert result.verdict in expected, result
    assert not result.verdict.is_key_problem


async def test_timeout_is_network_and_the_hung_request_is_released(
    server: LocalExchange, net: ProductionNet
) -> None:
    hub = make_hub(net, timeout_ms=300)
    try:
        key = server.add_key()
        server.inject("timeout", times=1)
        result = await run_probe(hub, server, key)
        assert result.verdict is Verdict.NETWORK, result
        server.release_hung()
        assert (await run_probe(hub, server, key)).verdict is Verdict.OK
    finally:
        await hub.close()


async def test_unreachable_exchange_is_network(server: LocalExchange, net: ProductionNet) -> None:
    key = server.add_key()
    await server.close()  # the name still resolves, to a port nobody listens on
    hub = make_hub(net, timeout_ms=1000)
    try:
        result = await run_probe(hub, server, key)
    finally:
        await hub.close()
    assert result.verdict is Verdict.NETWORK, result


async def test_cancellation_is_not_swallowed(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    server.inject("timeout", times=1)
    task = asyncio.create_task(run_probe(hub, server, key))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.release_hung()


async def test_429_and_bans_pause_the_whole_exchange(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key()
    server.inject("ban", times=1)
    assert (await run_probe(hub, server, key)).verdict is Verdict.RATE_LIMITED
    assert hub.budgets.paused_for(server.exchange_id) > 30  # Binance Retry-After 120, Bybit 600, OKX 60


async def test_binance_429_pauses_for_retry_after(net: ProductionNet) -> None:
    server = await net.serve_exchange(LocalBinance())
    hub = make_hub(net)
    try:
        key = server.add_key()
        server.inject("rate_limit", times=1)
        assert (await run_probe(hub, server, key)).verdict is Verdict.RATE_LIMITED
        assert 0 < hub.budgets.paused_for("binance") <= 61
    finally:
        await hub.close()
        await server.close()


@pytest.mark.parametrize("exchange_id", ["bybit", "okx"])
async def test_per_account_rate_limit_does_not_pause_everybody(exchange_id: str, net: ProductionNet) -> None:
    server = await net.serve_exchange(LOCAL_EXCHANGES[exchange_id]())
    hub = make_hub(net)
    try:
        key = server.add_key()
        server.inject("rate_limit", times=1)  # Bybit 10006 / OKX 50011: the user's own limit
        assert (await run_probe(hub, server, key)).verdict is Verdict.RATE_LIMITED
        assert hub.budgets.paused_for(exchange_id) == 0
    finally:
        await hub.close()
        await server.close()


# --- the Binance -2015 → DDoSProtection trap ----------------------------------------------------


async def test_binance_ddos_trap_same_client_success_then_revoked(net: ProductionNet) -> None:
    server = await net.serve_exchange(LocalBinance())
    hub = make_hub(net)
    session = net.transport.session()
    bare = ccxt.binance(
        {"apiKey": "", "secret": "", "options": {"fetchCurrencies": False}, "session": session} | NO_EXIT_WAIT
    )
    try:
        key = server.add_key()
        # The trap exists: a bare ccxt instance that once succeeded on /api/v3 says DDoSProtection.
        bare.apiKey, bare.secret = key.api_key, key.secret
        await bare.privateGetAccount()
        server.set_key_state(key.api_key, "revoked")
        with pytest.raises(ccxt.DDoSProtection):
            await bare.privateGetAccount()
        server.set_key_state(key.api_key, "valid")

        # Our client: the balance call sets ccxt's flag, the revoked key must still be key_invalid.
        client = await hub.client("binance", creds(key))
        assert (await probe(client, clock=CLOCK, with_balances=True)).verdict is Verdict.OK
        server.set_key_state(key.api_key, "revoked")
        result = await probe(client, clock=CLOCK, with_balances=True)
        # The probe's sapi call answers -2008 for a deleted key (sapi), the trap concerns /api -2015.
        assert (result.verdict, result.code) in {
            (Verdict.KEY_INVALID, "-2015"),
            (Verdict.KEY_INVALID, "-2008"),
        }
    finally:
        await bare.close()
        await session.close()
        await hub.close()
        await server.close()


# --- hub mechanics -------------------------------------------------------------------------------


def _strings(urls: Any) -> list[str]:
    if isinstance(urls, str):
        return [urls]
    if isinstance(urls, dict):
        return [s for value in urls.values() for s in _strings(value)]
    return []


@pytest.mark.parametrize("exchange_id", ["binance", "bybit", "okx", "gate", "kucoin", "bitget", "mexc"])
def test_rebase_replaces_every_host_and_keeps_paths(exchange_id: str) -> None:
    original = getattr(ccxt, exchange_id)().urls["api"]  # flat dicts; gate and mexc are nested
    rebased = rebase_urls(original, "http://127.0.0.1:9999/")
    before, after = _strings(original), _strings(rebased)
    assert len(before) == len(after) > 0
    for old, new in zip(before, after, strict=True):
        assert new == "http://127.0.0.1:9999" + urlsplit(old).path


def test_rebase_handles_a_plain_string_and_a_query() -> None:
    assert rebase_urls("https://api.example.com/v1?x=1", "http://h:1") == "http://h:1/v1?x=1"


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_url_override_reaches_every_api_host_used(exchange_id: str) -> None:
    """EXCHANGE_URL_OVERRIDES is for operators (testnets, proxies): plain HTTP to one host works."""
    async with running_local_exchange(exchange_id) as server:
        hub = ExchangeHub(
            url_overrides={exchange_id: str(server.url)}, budgets=BudgetRegistry({exchange_id: 1e6})
        )
        try:
            key = server.add_key()
            assert (await run_probe(hub, server, key, with_balances=True)).verdict is Verdict.OK
            client = await hub.client(server.exchange_id, creds(key))
        finally:
            await hub.close()
    assert all(url.startswith(str(server.url)) for url in _strings(client.instance.urls["api"]))
    paths = {record.path for record in server.requests}
    if server.exchange_id == "binance":  # sapi and api hosts are different hosts in production
        assert {"/sapi/v1/account/apiRestrictions", "/api/v3/account"} <= paths


async def test_two_clients_concurrently_never_mix_keys(server: LocalExchange, hub: ExchangeHub) -> None:
    first = server.add_key(balances={"USDT": 111})
    second = server.add_key(balances={"USDT": 222})
    clients = [await hub.client(server.exchange_id, creds(k)) for k in (first, second)]
    # 4 probes per key: the per-key limits (OKX account/config 5 per 2 s) would throttle more.
    results = await asyncio.gather(
        *(probe(clients[i % 2], clock=CLOCK, with_balances=True) for i in range(8))
    )
    for i, result in enumerate(results):
        assert result.verdict is Verdict.OK, result  # a mixed key/secret pair would not verify
        assert result.balances == {"USDT": {"free": [111.0, 222.0][i % 2], "total": [111.0, 222.0][i % 2]}}
    per_key = {k.api_key: sum(r.api_key == k.api_key for r in server.requests) for k in (first, second)}
    assert per_key == {first.api_key: 8, second.api_key: 8}  # key check + balances, 4 times
    assert clients[0].instance.apiKey == first.api_key and clients[1].instance.apiKey == second.api_key
    # Per-connection mutable state is per connection; the big read-only tables are shared.
    assert clients[0].instance.options is not clients[1].instance.options
    assert clients[0].instance.api is clients[1].instance.api


async def test_markets_load_once_from_public_endpoints_and_are_shared(
    server: LocalExchange, hub: ExchangeHub
) -> None:
    keys = [server.add_key() for _ in range(5)]
    clients = [await hub.client(server.exchange_id, creds(k)) for k in keys]
    # A unified method needs markets: every client adopts the one shared set.
    await asyncio.gather(*(c.call("fetch_balance", weight=1) for c in clients))

    def markets_requests() -> list[Any]:
        return [r for r in server.requests if "exchangeInfo" in r.path or "instrument" in r.path]

    loaded = markets_requests()
    assert loaded and all(r.api_key is None for r in loaded)  # public endpoints only
    assert all(r.api_key is None for r in server.requests[: len(loaded)])  # nothing private during the load
    if server.exchange_id == "binance":  # spot + USDⓈ-M only: no coin-M, no options
        assert {r.path for r in loaded} == {"/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo"}
    more = [await hub.client(server.exchange_id, creds(k)) for k in keys]
    await asyncio.gather(*(c.call("fetch_balance", weight=1) for c in more))
    assert markets_requests() == loaded  # loaded once for all ten clients
    clients += more
    shared = await hub.markets(server.exchange_id)
    assert all(c.instance.markets is shared for c in clients)
    assert all(c.instance.markets_by_id is clients[0].instance.markets_by_id for c in clients)
    public = await hub.public(server.exchange_id)
    assert public.markets is shared and not public.apiKey


async def test_used_weight_header_tightens_the_shared_budget(net: ProductionNet) -> None:
    server = await net.serve_exchange(LocalBinance())
    hub = make_hub(net, budgets=BudgetRegistry())
    session = net.transport.session()
    bare = ccxt.binance({"options": {"fetchCurrencies": False}, "session": session} | NO_EXIT_WAIT)
    try:
        key = server.add_key()
        bare.apiKey, bare.secret = key.api_key, key.secret
        for _ in range(3):  # another process on the same IP spends 60 weight
            await bare.privateGetAccount()
        await run_probe(hub, server, key, with_balances=True)  # we spend 1 (sapi) + 20 (api)
        # The exchange counts 80 on this IP; we spent 21 ourselves: the other 59 count against us too.
        assert server.used_weight_in("api") == 80
        assert hub.budgets.in_use("binance") == pytest.approx(80)
    finally:
        await bare.close()
        await session.close()
        await hub.close()
        await server.close()


# --- warnings ------------------------------------------------------------------------------------


async def test_warnings_withdraw_and_no_ip_restriction_with_policy_date(
    server: LocalExchange, hub: ExchangeHub
) -> None:
    # 25 days old: 5 days before Binance's 30-day trading cut. OKX would have deleted an idle
    # unbound trade key after 14 days, so that key is fresh.
    created = server.now() - timedelta(days=0 if server.exchange_id == "okx" else 25)
    key = server.add_key(can_withdraw=True, created_at=created)
    info = (await run_probe(hub, server, key)).key_info
    assert info is not None and info.can_withdraw is True
    warnings = {w.code: w for w in key_warnings(server.exchange_id, info, server.now())}
    assert set(warnings) >= {"withdraw_enabled", "no_ip_restriction"}
    assert all(w.source.startswith("https://") for w in warnings.values())
    no_ip = warnings["no_ip_restriction"]
    if server.exchange_id == "binance":  # trading lapses 30 days after it was enabled
        assert no_ip.due is not None and abs(no_ip.due - (created + timedelta(days=30))) < timedelta(
            seconds=1
        )
        assert "expires_soon" in warnings  # 5 days left
        assert "binance.com" in no_ip.source
    elif server.exchange_id == "bybit":  # unbound keys expire after 90 days (expiredAt)
        assert no_ip.due is not None and abs(no_ip.due - (created + timedelta(days=90))) < timedelta(
            seconds=1
        )
        assert "expires_soon" not in warnings
    else:  # OKX: idle-based deletion, no fixed date
        assert no_ip.due is None


async def test_warnings_for_an_ip_bound_read_only_key(server: LocalExchange, hub: ExchangeHub) -> None:
    key = server.add_key(can_trade=False, ip_whitelist=["127.0.0.1"])
    info = (await run_probe(hub, server, key)).key_info
    assert info is not None
    assert [w.code for w in key_warnings(server.exchange_id, info, server.now())] == ["read_only"]


def test_key_warnings_from_stored_json() -> None:
    stored = {
        "permissions": ["read", "spot_trade"],
        "can_trade": True,
        "can_withdraw": False,
        "ip_restricted": False,
        "ip_list": [],
        "created_at": "2026-01-01T00:00:00+00:00",
        "expires_at": None,
    }
    info = KeyInfo.from_json(stored)
    [warning] = [w for w in key_warnings("binance", info, info.created_at) if w.code == "no_ip_restriction"]
    assert warning.due == info.created_at + timedelta(days=30)  # type: ignore[operator]


# --- exchange catalogue and the poller's interval stretch ----------------------------------------


def test_supported_exchanges_lead_with_the_big_three_and_need_only_storable_credentials() -> None:
    exchanges = supported_exchanges()
    assert exchanges[:3] == ["binance", "bybit", "okx"]
    assert {"kucoin", "bitget", "gate", "binanceusdm"} <= set(exchanges)
    for exchange_id in exchanges:
        required = {k for k, v in getattr(ccxt, exchange_id)().requiredCredentials.items() if v}
        assert {"apiKey", "secret"} <= required <= {"apiKey", "secret", "password"}, exchange_id
    assert needs_passphrase("okx") and needs_passphrase("kucoin") and not needs_passphrase("binance")
    assert display_name("okx") == "OKX" and display_name("binance") == "Binance"


def test_hub_stretch_interval_counts_amortised_balance_calls() -> None:
    hub = ExchangeHub()  # Binance share: 3000 weight / minute
    minute = timedelta(minutes=1)
    # 2000 key checks (1) + balances (20) every 30 min → 2000 × (1 + 20 × 60/1800) = 3333 per minute.
    assert hub.stretch_interval("binance", minute, 2000) == timedelta(seconds=2000 * (1 + 20 / 30) / 50)
    assert hub.stretch_interval("binance", minute, 1000) == minute
    assert hub.stretch_interval("okx", minute, 600) == timedelta(seconds=600 * (1 + 1 / 30) / 5)
