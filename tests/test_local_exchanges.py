"""Real ccxt clients against the local exchange servers.

The point of the fakes is that ccxt cannot tell them from the real APIs: the same signatures are verified,
and every failure comes back with the exchange's own code, HTTP status and body shape, so ccxt raises
exactly the exception class it raises in production (including its known traps). These tests pin that.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import aiohttp
import ccxt.async_support as ccxt
import pytest

from sandbox.exchanges import LocalBinance, LocalExchange, LocalKey, running_local_exchange

EXCHANGES = ("binance", "bybit", "okx")

# The exchange's own code for each failure; ccxt puts the raw body (hence the code) in the message.
CODES: dict[str, dict[str, str]] = {
    "signature": {"binance": "-1022", "bybit": "10004", "okx": "50113"},
    "revoked": {"binance": "-2015", "bybit": "10003", "okx": "50119"},
    "ip_restricted": {"binance": "-2015", "bybit": "10010", "okx": "50110"},
    "clock_skew": {"binance": "-1021", "bybit": "10002", "okx": "50102"},
    "read_only": {"binance": "-2015", "bybit": "10005", "okx": "50120"},
    "expired": {"binance": "-2015", "bybit": "33004", "okx": "50119"},
}
# What ccxt 4.5.90 makes of them against a non-binance.com host.
CLASSES: dict[str, dict[str, type[Exception]]] = {
    "signature": dict.fromkeys(EXCHANGES, ccxt.AuthenticationError),
    "revoked": {
        "binance": ccxt.AuthenticationError,
        "bybit": ccxt.AuthenticationError,
        "okx": ccxt.ExchangeError,
    },
    "ip_restricted": {
        "binance": ccxt.AuthenticationError,
        "bybit": ccxt.PermissionDenied,
        "okx": ccxt.PermissionDenied,
    },
    "clock_skew": dict.fromkeys(EXCHANGES, ccxt.InvalidNonce),
    "read_only": {
        "binance": ccxt.AuthenticationError,
        "bybit": ccxt.PermissionDenied,
        "okx": ccxt.ExchangeError,
    },
    # Binance: the earlier successful /api/v3/account arms ccxt's -2015 → DDoSProtection trap.
    "expired": {"binance": ccxt.DDoSProtection, "bybit": ccxt.AuthenticationError, "okx": ccxt.ExchangeError},
}
METADATA_CALL = {
    "binance": "sapiGetAccountApiRestrictions",
    "bybit": "privateGetV5UserQueryApi",
    "okx": "privateGetAccountConfig",
}


class ManualClock:
    """Monotonic seconds that move only when a test says so; starts on a window boundary."""

    def __init__(self) -> None:
        self.now = 6000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def point_at(exchange: ccxt.Exchange, base_url: str) -> None:
    """Send every REST group to the local server, keeping each URL's path (``sign()`` appends to it)."""
    exchange.urls["api"] = {name: base_url + urlparse(url).path for name, url in exchange.urls["api"].items()}


def make_client(
    server: LocalExchange, key: LocalKey, *, secret: str | None = None, timeout_ms: int = 3000
) -> Any:
    """A ccxt instance for ``key`` that makes no private calls while loading markets.

    The client-side throttle is off so the tests run fast (the server still counts every weight), and so
    is ccxt's 250 ms sleep in ``close()``.
    """
    config: dict[str, Any] = {
        "apiKey": key.api_key,
        "secret": secret or key.secret,
        "password": key.passphrase,
        "enableRateLimit": False,
        "timeout": timeout_ms,
        "timeout_on_exit": 0,
    }
    if server.exchange_id == "binance":
        config["options"] = {"fetchMargins": False, "fetchOpenOrders": {"warnWithoutSymbol": False}}
    exchange = getattr(ccxt, server.exchange_id)(config)
    # Bybit and OKX ignore options['fetchCurrencies']; only `has` stops their private currency call.
    exchange.has["fetchCurrencies"] = False
    point_at(exchange, server.url)
    return exchange


@pytest.fixture(params=EXCHANGES)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[LocalExchange]:
    async with running_local_exchange(request.param) as srv:
        yield srv


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    opened: list[Any] = []

    def factory(server: LocalExchange, key: LocalKey, **kwargs: Any) -> Any:
        exchange = make_client(server, key, **kwargs)
        opened.append(exchange)
        return exchange

    yield factory
    for exchange in opened:
        await exchange.close()


@pytest.fixture
def key(server: LocalExchange) -> LocalKey:
    return server.add_key(balances={"USDT": 1000, "BTC": 0.1})


@pytest.fixture
def client(server: LocalExchange, key: LocalKey, connect: Callable[..., Any]) -> Any:
    return connect(server, key)


async def raised(coroutine: Any) -> Exception:
    with pytest.raises(ccxt.BaseError) as info:
        await coroutine
    return info.value


# ---- happy paths ------------------------------------------------------------------------------------


async def test_load_markets(client: Any) -> None:
    markets = await client.load_markets()

    assert {
        "BTC/USDT",
        "ETH/USDT",
        "SOL/USDT",
        "XRP/USDT",
        "BNB/USDT",
        "BTC/USDT:USDT",
        "ETH/USDT:USDT",
    } <= set(markets)
    assert markets["BTC/USDT"]["precision"]["price"] == 0.01
    assert markets["BTC/USDT"]["precision"]["amount"] == 0.00001
    assert markets["BTC/USDT:USDT"]["swap"] and markets["BTC/USDT:USDT"]["linear"]
    assert markets["XRP/USDT"]["limits"]["amount"]["min"] == 0.1


async def test_fetch_balance_with_valid_key(client: Any) -> None:
    balance = await client.fetch_balance()

    assert balance["USDT"] == {"free": 1000.0, "used": 0.0, "total": 1000.0} | (
        {"debt": 0.0} if client.id == "bybit" else {}
    )
    assert balance["BTC"]["total"] == 0.1


async def test_key_metadata_call(server: LocalExchange, key: LocalKey, client: Any) -> None:
    response = await getattr(client, METADATA_CALL[server.exchange_id])()

    assert metadata_view(server.exchange_id, response) == {
        "trade": True,
        "withdraw": False,
        "ip_bound": False,
    }


def metadata_view(exchange_id: str, response: dict[str, Any]) -> dict[str, bool]:
    """The three facts the monitor reads from each exchange's key-metadata endpoint."""
    if exchange_id == "binance":
        return {
            "trade": response["enableSpotAndMarginTrading"],
            "withdraw": response["enableWithdrawals"],
            "ip_bound": response["ipRestrict"],
        }
    if exchange_id == "bybit":
        result = response["result"]
        return {
            "trade": result["readOnly"] == 0,
            "withdraw": "Withdraw" in result["permissions"]["Wallet"],
            "ip_bound": result["ips"] != ["*"],
        }
    config = response["data"][0]
    perm = config["perm"].split(",")
    return {"trade": "trade" in perm, "withdraw": "withdraw" in perm, "ip_bound": config["ip"] != ""}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("read_only", {"trade": False, "withdraw": False, "ip_bound": False}),
        ("withdraw_enabled", {"trade": True, "withdraw": True, "ip_bound": False}),
    ],
)
async def test_key_metadata_reflects_state(
    server: LocalExchange, key: LocalKey, client: Any, state: str, expected: dict[str, bool]
) -> None:
    server.set_key_state(key.api_key, state)  # type: ignore[arg-type]

    response = await getattr(client, METADATA_CALL[server.exchange_id])()

    assert metadata_view(server.exchange_id, response) == expected


async def test_key_metadata_of_ip_bound_key(server: LocalExchange, connect: Callable[..., Any]) -> None:
    bound = server.add_key(ip_whitelist=["127.0.0.1"])

    response = await getattr(connect(server, bound), METADATA_CALL[server.exchange_id])()

    assert metadata_view(server.exchange_id, response)["ip_bound"] is True


async def test_open_order_listed_then_cancelled(server: LocalExchange, key: LocalKey, client: Any) -> None:
    order_id = server.add_order(key.api_key, "BTC/USDT", "buy", 60000, 0.01)

    listed = await client.fetch_open_orders("BTC/USDT")
    locked = await client.fetch_balance()
    await client.cancel_order(order_id, "BTC/USDT")
    after = await client.fetch_open_orders("BTC/USDT")
    freed = await client.fetch_balance()

    assert [(o["id"], o["side"], o["price"], o["amount"]) for o in listed] == [(order_id, "buy", 60000, 0.01)]
    assert (locked["USDT"]["free"], locked["USDT"]["used"], locked["USDT"]["total"]) == (400, 600, 1000)
    assert after == []
    assert (freed["USDT"]["free"], freed["USDT"]["used"]) == (1000, 0)
    with pytest.raises(ccxt.OrderNotFound):
        await client.cancel_order(order_id, "BTC/USDT")


async def test_sell_order_locks_base(server: LocalExchange, key: LocalKey, client: Any) -> None:
    await client.load_markets()
    order = await client.create_order("BTC/USDT", "limit", "sell", 0.04, 70000)

    assert server.open_orders(key.api_key)[0]["id"] == order["id"]
    assert server.balances(key.api_key)["BTC"] == {"free": 0.06, "used": 0.04, "total": 0.1}


async def test_open_orders_without_symbol(server: LocalExchange, key: LocalKey, client: Any) -> None:
    """Binance and OKX list every market; Bybit needs a category (spot here)."""
    order_id = server.add_order(key.api_key, "ETH/USDT", "buy", 3000, 0.05)
    params = {"type": "spot"} if server.exchange_id == "bybit" else {}

    orders = await client.fetch_open_orders(None, None, None, params)

    assert [(o["id"], o["symbol"]) for o in orders] == [(order_id, "ETH/USDT")]


async def test_perpetual_order_locks_margin(server: LocalExchange, key: LocalKey, client: Any) -> None:
    wallet = "futures" if server.exchange_id == "binance" else None
    server.set_balance(key.api_key, "USDT", 1000, wallet=wallet)
    amount = 1 if server.exchange_id == "okx" else 0.01  # OKX counts contracts of 0.01 BTC
    await client.load_markets()

    order = await client.create_order("BTC/USDT:USDT", "limit", "buy", amount, 60000)
    listed = await client.fetch_open_orders("BTC/USDT:USDT")

    assert [o["id"] for o in listed] == [order["id"]]
    assert server.balances(key.api_key, wallet)["USDT"]["used"] == 60  # 600 notional at 10x


async def test_ticker_follows_set_price(server: LocalExchange, client: Any) -> None:
    server.set_price("ETH/USDT", 3800)

    ticker = await client.fetch_ticker("ETH/USDT")
    tickers = await client.fetch_tickers(["BTC/USDT", "ETH/USDT"])

    assert ticker["last"] == 3800
    assert ticker["bid"] < 3800 < ticker["ask"]
    assert ticker["percentage"] == pytest.approx(100 * 300 / 3500, abs=0.01)
    assert {symbol: t["last"] for symbol, t in tickers.items()} == {"BTC/USDT": 65000, "ETH/USDT": 3800}


async def test_fetch_time_is_server_time(client: Any) -> None:
    assert abs(await client.fetch_time() - time.time() * 1000) < 5000


# ---- key problems -----------------------------------------------------------------------------------


async def test_wrong_secret_is_a_signature_error(
    server: LocalExchange, key: LocalKey, connect: Callable[..., Any]
) -> None:
    wrong = connect(server, key, secret=key.secret[::-1])

    error = await raised(wrong.fetch_balance())

    assert isinstance(error, CLASSES["signature"][server.exchange_id])
    assert CODES["signature"][server.exchange_id] in str(error)


@pytest.mark.parametrize("state", ["revoked", "ip_restricted", "read_only"])
async def test_key_state_error(server: LocalExchange, key: LocalKey, client: Any, state: str) -> None:
    await client.load_markets()
    server.set_key_state(key.api_key, state)  # type: ignore[arg-type]

    if state == "read_only":
        error = await raised(client.create_order("BTC/USDT", "limit", "buy", 0.001, 50000))
    else:
        error = await raised(client.fetch_balance())

    assert type(error) is CLASSES[state][server.exchange_id]
    assert CODES[state][server.exchange_id] in str(error)


async def test_read_only_key_still_reads(server: LocalExchange, key: LocalKey, client: Any) -> None:
    server.set_key_state(key.api_key, "read_only")

    assert (await client.fetch_balance())["USDT"]["total"] == 1000


async def test_valid_state_restores_key(server: LocalExchange, key: LocalKey, client: Any) -> None:
    server.set_key_state(key.api_key, "revoked")
    await raised(client.fetch_balance())
    server.set_key_state(key.api_key, "valid")

    assert (await client.fetch_balance())["USDT"]["total"] == 1000


async def test_expired_key(server: LocalExchange, key: LocalKey, client: Any) -> None:
    """Bybit refuses everything (33004), OKX has deleted the key (50119); Binance only loses spot trading,
    so reads still work - and the successful read is what makes ccxt misreport the -2015 that follows."""
    await client.load_markets()
    server.set_key_state(key.api_key, "expired")

    if server.exchange_id == "binance":
        restrictions = await client.sapiGetAccountApiRestrictions()
        assert (await client.fetch_balance())["USDT"]["total"] == 1000
        error = await raised(client.create_order("BTC/USDT", "limit", "buy", 0.001, 50000))
        assert restrictions["enableSpotAndMarginTrading"] is False
        assert restrictions["tradingAuthorityExpirationTime"] <= server.now_ms()
    else:
        error = await raised(client.fetch_balance())
    assert CODES["expired"][server.exchange_id] in str(error)
    assert type(error) is CLASSES["expired"][server.exchange_id]


async def test_expiry_policies_follow_the_wall_clock(connect: Callable[..., Any]) -> None:
    """Unbound keys: Binance trading lapses at 30 days, Bybit keys at 90, OKX deletes after 14 idle days."""
    wall = {"offset": 0.0}
    for exchange_id, days, code in (("binance", 31, "-2015"), ("bybit", 91, "33004"), ("okx", 15, "50119")):
        wall["offset"] = 0.0
        async with running_local_exchange(exchange_id, wall=lambda: time.time() + wall["offset"]) as srv:
            key = srv.add_key(created_at=srv.now() - timedelta(days=days))
            client = connect(srv, key)
            await client.load_markets()
            if exchange_id == "binance":  # reads still work; only spot trading lapsed
                error = await raised(client.create_order("BTC/USDT", "limit", "buy", 0.001, 50000))
            else:
                error = await raised(client.fetch_balance())
            assert code in str(error)


async def test_clock_skew(connect: Callable[..., Any]) -> None:
    for exchange_id in EXCHANGES:
        async with running_local_exchange(exchange_id, wall=lambda: time.time() + 120) as srv:
            key = srv.add_key()
            error = await raised(getattr(connect(srv, key), METADATA_CALL[exchange_id])())
            assert isinstance(error, ccxt.InvalidNonce)
            assert CODES["clock_skew"][exchange_id] in str(error)


# ---- faults -----------------------------------------------------------------------------------------


SERVER_TROUBLE = {
    "status_5xx": {
        "binance": ccxt.OperationFailed,
        "bybit": ccxt.ExchangeNotAvailable,
        "okx": ccxt.ExchangeNotAvailable,
    },
    "maintenance": {
        "binance": ccxt.OnMaintenance,
        "bybit": ccxt.ExchangeNotAvailable,
        "okx": ccxt.OnMaintenance,
    },
    "rate_limit": {
        "binance": ccxt.DDoSProtection,
        "bybit": ccxt.RateLimitExceeded,
        "okx": ccxt.RateLimitExceeded,
    },
    "ban": {
        "binance": ccxt.DDoSProtection,
        "bybit": ccxt.RateLimitExceeded,
        "okx": ccxt.ExchangeNotAvailable,
    },
}


@pytest.mark.parametrize("fault", sorted(SERVER_TROUBLE))
async def test_server_trouble_is_never_an_auth_error(server: LocalExchange, client: Any, fault: str) -> None:
    await client.load_markets()
    server.inject(fault, times=1)  # type: ignore[arg-type]

    error = await raised(client.fetch_balance())

    assert type(error) is SERVER_TROUBLE[fault][server.exchange_id]
    assert isinstance(error, ccxt.OperationFailed)
    assert not isinstance(error, ccxt.AuthenticationError)
    assert (await client.fetch_balance())["USDT"]["total"] == 1000  # the fault was for one request only


async def test_bare_gateway_page(server: LocalExchange, client: Any) -> None:
    await client.load_markets()
    server.inject("status_5xx", status=502)

    assert type(await raised(client.fetch_balance())) is ccxt.ExchangeNotAvailable


async def test_faults_spare_public_endpoints_by_default(server: LocalExchange, client: Any) -> None:
    server.inject("status_5xx", times=1)

    await client.load_markets()
    await raised(client.fetch_balance())

    assert (await client.fetch_balance())["USDT"]["total"] == 1000
    assert [r.api_key for r in server.requests if r.status >= 500] == [client.apiKey]


async def test_public_fault_when_asked(server: LocalExchange, client: Any) -> None:
    server.inject("maintenance", private_only=False)

    assert isinstance(await raised(client.load_markets()), ccxt.ExchangeNotAvailable)
    server.clear_faults()
    assert await client.load_markets()


async def test_hung_request_times_out_then_is_released(
    server: LocalExchange, key: LocalKey, connect: Any
) -> None:
    impatient = connect(server, key, timeout_ms=200)
    await impatient.load_markets()
    server.inject("timeout", times=1)

    assert type(await raised(impatient.fetch_balance())) is ccxt.RequestTimeout
    server.release_hung()
    assert (await impatient.fetch_balance())["USDT"]["total"] == 1000


async def test_bounded_hold_ends_in_gateway_timeout(server: LocalExchange, client: Any) -> None:
    await client.load_markets()
    server.inject("timeout", hold_s=0.05)

    assert type(await raised(client.fetch_balance())) is ccxt.RequestTimeout
    assert server.requests[-1].status == 504


async def test_latency(server: LocalExchange, client: Any) -> None:
    await client.load_markets()
    server.inject("latency", latency_ms=150, times=1)

    started = time.perf_counter()
    await client.fetch_balance()

    assert time.perf_counter() - started >= 0.15


# ---- Binance specifics ------------------------------------------------------------------------------


@pytest.fixture
async def binance() -> AsyncIterator[LocalBinance]:
    async with running_local_exchange("binance") as srv:
        assert isinstance(srv, LocalBinance)
        yield srv


async def test_binance_used_weight_header_sums_weights(binance: LocalBinance, connect: Any) -> None:
    key = binance.add_key()
    client = connect(binance, key)

    await client.load_markets()  # exchangeInfo: 20
    await client.fetch_balance()  # account: 20
    after_account = client.last_response_headers["X-MBX-USED-WEIGHT-1M"]
    await client.fetch_open_orders("BTC/USDT")  # openOrders with symbol: 6
    await client.fetch_open_orders()  # openOrders without symbol: 80
    await client.sapiGetAccountApiRestrictions()  # sapi bucket: 1

    assert after_account == "40"
    assert binance.used_weight == 126
    assert client.last_response_headers["X-SAPI-USED-IP-WEIGHT-1M"] == "1"
    assert [(r.path, r.weight) for r in binance.requests if r.path.startswith("/api/")] == [
        ("/api/v3/exchangeInfo", 20),
        ("/api/v3/account", 20),
        ("/api/v3/openOrders", 6),
        ("/api/v3/openOrders", 80),
    ]


async def test_binance_weight_limit_then_ban(connect: Any) -> None:
    clock = ManualClock()
    async with running_local_exchange("binance", clock=clock) as srv:
        srv.weight_limit = 50
        client = connect(srv, srv.add_key())
        await client.load_markets()
        await client.fetch_balance()  # 40 used

        over = await raised(client.fetch_balance())  # 60 > 50
        retry_after = client.last_response_headers["Retry-After"]
        for _ in range(3):
            await raised(client.fetch_balance())  # third strike past the allowance → banned
        clock.advance(60)
        banned = await raised(client.fetch_balance())
        clock.advance(60)
        recovered = await client.fetch_balance()

    assert type(over) is ccxt.DDoSProtection and "-1003" in str(over) and "429" in str(over)
    assert retry_after == "60"
    assert [r.status for r in srv.requests][-3:] == [418, 418, 200]
    assert "IP banned until" in str(banned)
    assert recovered["USDT"]["total"] == 1000


async def test_binance_minus_2015_trap(binance: LocalBinance, connect: Any) -> None:
    """After one successful /api/v3/account, ccxt turns -2015 into DDoSProtection on that instance."""
    key = binance.add_key()
    seasoned = connect(binance, key)
    await seasoned.fetch_balance()
    binance.set_key_state(key.api_key, "revoked")

    trapped = await raised(seasoned.fetch_balance())
    fresh = await raised(connect(binance, key).fetch_balance())

    assert type(trapped) is ccxt.DDoSProtection and "-2015" in str(trapped)
    assert type(fresh) is ccxt.AuthenticationError and "-2015" in str(fresh)


async def test_binance_malformed_key(binance: LocalBinance, connect: Any) -> None:
    stranger = replace(binance.add_key(), api_key="not-a-binance-key")

    error = await raised(connect(binance, stranger).fetch_balance())

    assert type(error) is ccxt.AuthenticationError and "-2014" in str(error)


async def test_binance_trading_authority_of_unbound_key(binance: LocalBinance, connect: Any) -> None:
    key = binance.add_key()
    bound = binance.add_key(ip_whitelist=["127.0.0.1"])

    unbound_view = await connect(binance, key).sapiGetAccountApiRestrictions()
    bound_view = await connect(binance, bound).sapiGetAccountApiRestrictions()

    thirty_days_ms = 30 * 86_400_000
    assert unbound_view["tradingAuthorityExpirationTime"] - unbound_view["createTime"] == thirty_days_ms
    assert "tradingAuthorityExpirationTime" not in bound_view


# ---- Bybit and OKX specifics ------------------------------------------------------------------------


async def test_bybit_per_key_limit_and_headers(connect: Any) -> None:
    async with running_local_exchange("bybit", clock=ManualClock()) as srv:
        client = connect(srv, srv.add_key())
        for _ in range(10):
            await client.privateGetV5UserQueryApi()
        headers = dict(client.last_response_headers)
        error = await raised(client.privateGetV5UserQueryApi())
        used = srv.used_by_key(client.apiKey, "/v5/user/query-api")

    assert (headers["X-Bapi-Limit"], headers["X-Bapi-Limit-Status"]) == ("10", "0")
    assert used == 11
    assert type(error) is ccxt.RateLimitExceeded and "10006" in str(error)


async def test_bybit_ip_limit_bans_with_a_bare_403(connect: Any) -> None:
    """Over 600 requests per 5 s (here 3) Bybit's edge bans the IP for 10 minutes."""
    clock = ManualClock()
    async with running_local_exchange("bybit", clock=clock) as srv:
        srv.weight_limit = 3
        client = connect(srv, srv.add_key())
        for _ in range(3):
            await client.fetch_time()
        used = srv.used_weight
        over = await raised(client.fetch_time())
        clock.advance(5)
        still_banned = await raised(client.fetch_time())
        clock.advance(600)
        recovered = await client.fetch_time()

    assert used == 3
    assert type(over) is ccxt.RateLimitExceeded and type(still_banned) is ccxt.RateLimitExceeded
    assert [r.status for r in srv.requests][-3:] == [403, 403, 200]
    assert recovered > 0


async def test_bybit_unbound_key_reports_expiry(connect: Any) -> None:
    async with running_local_exchange("bybit") as srv:
        key = srv.add_key(created_at=srv.now() - timedelta(days=80))
        result = (await connect(srv, key).privateGetV5UserQueryApi())["result"]

    assert result["ips"] == ["*"]
    assert result["deadlineDay"] == 10


async def test_okx_wrong_passphrase(connect: Any) -> None:
    async with running_local_exchange("okx") as srv:
        key = srv.add_key()
        key_with_typo = replace(key, passphrase="typo")
        error = await raised(connect(srv, key_with_typo).fetch_balance())

    assert type(error) is ccxt.AuthenticationError and "50105" in str(error)


async def test_okx_demo_header_with_live_key(connect: Any) -> None:
    async with running_local_exchange("okx") as srv:
        client = connect(srv, srv.add_key())
        client.headers = {"x-simulated-trading": "1"}
        error = await raised(client.privateGetAccountConfig())

    assert type(error) is ccxt.AuthenticationError and "50101" in str(error)


async def test_okx_malformed_key(connect: Any) -> None:
    async with running_local_exchange("okx") as srv:
        key = srv.add_key()
        stranger = replace(key, api_key="definitely-not-a-uuid")
        error = await raised(connect(srv, stranger).privateGetAccountConfig())

    assert type(error) is ccxt.AuthenticationError and "50111" in str(error)


# ---- control API ------------------------------------------------------------------------------------


async def test_control_api_drives_the_server(server: LocalExchange, connect: Any) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as http:

        async def control(method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
            async with http.request(method, f"/__control/{path}", json=payload) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        created = await control("POST", "keys", {"balances": {"USDT": 250}})
        order = await control(
            "POST",
            "orders",
            {"api_key": created["api_key"], "symbol": "SOL/USDT", "side": "buy", "price": 100, "amount": 1},
        )
        await control("POST", f"keys/{created['api_key']}/state", {"state": "ip_restricted"})
        await control("POST", "faults", {"fault": "rate_limit", "times": 1})
        state = await control("GET", "state")
        orders = await control("GET", f"orders?api_key={created['api_key']}")
        second = await control(
            "POST",
            "orders",
            {"api_key": created["api_key"], "symbol": "XRP/USDT", "side": "buy", "price": 0.5, "amount": 100},
        )
        cancelled = await control("DELETE", f"orders/{second['order_id']}?api_key={created['api_key']}")
        async with http.post("/__control/keys/nope/state", json={"state": "valid"}) as bad:
            bad_status = bad.status

    key = server.key(created["api_key"])
    client = connect(server, key)
    assert await client.load_markets()
    assert isinstance(await raised(client.fetch_balance()), ccxt.RateLimitExceeded | ccxt.DDoSProtection)
    assert CODES["ip_restricted"][server.exchange_id] in str(await raised(client.fetch_balance()))
    assert state["keys"][created["api_key"]] == "ip_restricted"
    assert [o["id"] for o in orders] == [order["order_id"]]
    assert cancelled == {"cancelled": True}
    assert [o["id"] for o in server.open_orders(created["api_key"])] == [order["order_id"]]
    assert server.balances(created["api_key"])["USDT"] == {"free": 150.0, "used": 100.0, "total": 250.0}
    assert bad_status == 400
