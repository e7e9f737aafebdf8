"""The 3Commas client against the local 3Commas, over real HTTP on localhost.

Time is simulated: one fake monotonic clock drives both the server's rate limiter and the
client's :class:`KeyLimiter`, and the client's sleep just moves that clock forward.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from bot.settings import OFFICIAL_THREECOMMAS_API
from sandbox.threecommas import LocalTcKey, LocalThreeCommas
from services.core.clock import FakeClock
from services.core.verdicts import Verdict
from services.threecommas.client import ThreeCommasClient
from services.threecommas.entities import (
    Account,
    Deal,
    SmartTrade,
    SmartTradeParams,
    StopLoss,
    TakeProfitStep,
    symbol_to_tc_pair,
    tc_pair_to_symbol,
)
from services.threecommas.errors import (
    Banned,
    KeyInvalid,
    NotFound,
    PermissionDenied,
    PlanRestricted,
    RateLimited,
    ThreeCommasError,
    Unavailable,
)
from services.threecommas.limiter import DEFAULT_BAN_S, IpGate, KeyLimiter
from tests.production_net import ProductionNet

API = OFFICIAL_THREECOMMAS_API
DOCS_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


class FakeTime:
    """Monotonic seconds that only move when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def local_tc(
    clock: FakeClock, fake_time: FakeTime, net: ProductionNet
) -> AsyncIterator[LocalThreeCommas]:
    """The local 3Commas served as ``api.3commas.io`` over TLS (tests/production_net.py)."""
    server = await net.serve_threecommas(LocalThreeCommas(clock, monotonic=fake_time))
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def session(net: ProductionNet) -> AsyncIterator[aiohttp.ClientSession]:
    async with net.transport.session() as shared:
        yield shared


@pytest.fixture
def key(local_tc: LocalThreeCommas) -> LocalTcKey:
    return local_tc.add_key()


def make_client(
    session: aiohttp.ClientSession,
    local_tc: LocalThreeCommas,
    key: LocalTcKey,
    fake_time: FakeTime,
    *,
    secret: str | None = None,
    limiter: KeyLimiter | None = None,
    **kwargs: object,
) -> ThreeCommasClient:
    return ThreeCommasClient(
        session,
        API,
        key.api_key,
        secret or key.secret,
        limiter=limiter or KeyLimiter(clock=fake_time, sleep=fake_time.sleep),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(
    session: aiohttp.ClientSession, local_tc: LocalThreeCommas, key: LocalTcKey, fake_time: FakeTime
) -> ThreeCommasClient:
    return make_client(session, local_tc, key, fake_time)


# -- signing ---------------------------------------------------------------------------------------


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A bare server that records what arrives, to check signatures against 3Commas' own examples."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(
            {
                "path_qs": request.rel_url.raw_path_qs,
                "signature": request.headers["Signature"],
                "apikey": request.headers["Apikey"],
                "body": (await request.read()).decode(),
            }
        )
        return web.json_response({"valid": True} if request.path.endswith("validate") else [])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/public/api", seen
    finally:
        await runner.cleanup()


async def test_signature_matches_the_documented_example(capture, session) -> None:
    url, seen = capture
    client = ThreeCommasClient(session, url, "docs-key", DOCS_SECRET)
    await client.validate()
    # 3Commas' worked example: HMAC-SHA256 of "/public/api/ver1/validate" with the docs secret.
    assert seen[0]["signature"] == "6b7be7537ea8a01b136b18360ec28dfb701d69c66fa04b2b87152c0b096ac38d"
    assert seen[0]["apikey"] == "docs-key"


async def test_query_and_body_are_signed_exactly_as_sent(capture, session) -> None:
    url, seen = capture
    client = ThreeCommasClient(session, url, "k", DOCS_SECRET)
    await client.deals(scope="active", limit=10)
    with pytest.raises(ThreeCommasError):  # the capture server answers [] where an entity is expected
        await client.create_smart_trade(
            SmartTradeParams(
                account_id=1, pair="USDT_BTC", side="buy", units=Decimal("0.01"), order_type="market"
            )
        )

    def sign(text: str) -> str:
        return hmac.new(DOCS_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()

    get, post = seen
    assert (
        get["path_qs"] == "/public/api/ver1/deals?scope=active&limit=10&order=created_at&order_direction=desc"
    )
    assert get["signature"] == sign(get["path_qs"])
    assert post["path_qs"] == "/public/api/v2/smart_trades"
    assert post["signature"] == sign("/public/api/v2/smart_trades?" + post["body"])


async def test_tampered_secret_is_rejected_as_signature_invalid(session, local_tc, key, fake_time) -> None:
    client = make_client(session, local_tc, key, fake_time, secret=key.secret[:-1] + "x")
    with pytest.raises(KeyInvalid) as caught:
        await client.validate()
    assert caught.value.status == 401
    assert caught.value.error == "signature_invalid"
    assert caught.value.verdict is Verdict.SIGNATURE_INVALID
    assert local_tc.requests[-1].status == 401


async def test_revoked_key_is_key_invalid(client, local_tc, key) -> None:
    await client.validate()
    local_tc.revoke_key(key.api_key)
    with pytest.raises(KeyInvalid) as caught:
        await client.accounts()
    assert caught.value.error == "api_key_invalid_or_expired"
    assert caught.value.message == "Unauthorized. Invalid or expired api key."
    assert caught.value.verdict is Verdict.KEY_INVALID


async def test_server_accepts_both_documented_body_signatures_and_nothing_else(
    session, local_tc, key
) -> None:
    account = local_tc.add_account(key.api_key)
    body = json.dumps(
        {
            "account_id": account,
            "pair": "USDT_BTC",
            "instant": True,
            "position": {"type": "buy", "order_type": "market", "units": {"value": "0.01"}},
        }
    )
    path = "/public/api/v2/smart_trades"
    statuses = []
    for signed in (f"{path}?{body}", f"{path}{body}", f"{path}?{body} "):
        signature = hmac.new(key.secret.encode(), signed.encode(), hashlib.sha256).hexdigest().upper()
        headers = {"Apikey": key.api_key, "Signature": signature, "Content-Type": "application/json"}
        async with session.post(API + "/v2/smart_trades", data=body, headers=headers) as response:
            statuses.append((response.status, (await response.json()).get("error")))
    assert statuses == [(201, None), (201, None), (401, "signature_invalid")]


# -- reading -------------------------------------------------------------------------------------


async def test_validate_accounts_deals_and_smart_trades_parse(client, local_tc, key, clock) -> None:
    await client.validate()
    account_id = local_tc.add_account(key.api_key, exchange="bybit_spot", name="Bybit", balances_usd=250.5)
    local_tc.set_account(account_id, api_keys_state="expire_soon", auto_balance_error=True)
    deal_id = local_tc.add_deal(
        key.api_key,
        account_id,
        pair="USDT_ETH",
        current_price="2500.5",
        bought_amount="0.4",
        bought_average_price="2400",
        take_profit="2.0",
        stop_loss_percentage="5",
        base_order_volume="25",
    )
    trade_id = local_tc.add_smart_trade(
        key.api_key,
        account_id,
        pair="USDT_BTC",
        units="0.01",
        price="50000",
        take_profit=[
            {"price": "52000", "volume": 60},
            {"price": "54000", "volume": 40, "price_type": "last"},
        ],
        stop_loss={"price": "45000"},
    )

    [account] = await client.accounts()
    assert account == Account(
        id=account_id,
        name="Bybit",
        market_code="bybit_spot",
        exchange_name="Bybit Spot",
        api_key_invalid=False,
        api_keys_state="expire_soon",
        is_locked=False,
        lock_reason=None,
        auto_balance_error="true",
        smart_trading_supported=True,
        usd_amount=Decimal("250.5"),
        btc_amount=None,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    assert account.exchange_id == "bybit"

    [deal] = await client.deals(scope="active")
    assert (deal.id, deal.pair, deal.symbol, deal.status, deal.side) == (
        deal_id,
        "USDT_ETH",
        "ETH/USDT",
        "bought",
        "buy",
    )
    assert deal.current_price == Decimal("2500.5")
    assert deal.actual_usd_profit == Decimal("40.20")  # (2500.5 - 2400) * 0.4
    assert (deal.take_profit, deal.stop_loss_percentage, deal.base_order_volume) == (
        Decimal("2.0"),
        Decimal(5),
        Decimal(25),
    )
    assert deal.created_at == clock.now() and not deal.finished and not deal.deal_has_error
    assert (await client.deal(deal_id)).events[0].message == "Base order placed."

    [trade] = await client.smart_trades(status="active")
    assert (trade.id, trade.account_id, trade.symbol, trade.side, trade.order_type) == (
        trade_id,
        account_id,
        "BTC/USDT",
        "buy",
        "limit",
    )
    assert (trade.units, trade.price, trade.status) == (Decimal("0.01"), Decimal(50000), "waiting_position")
    assert trade.take_profit == (
        TakeProfitStep(price=Decimal(52000), volume=Decimal(60)),
        TakeProfitStep(price=Decimal(54000), volume=Decimal(40), price_type="last"),
    )
    assert trade.stop_loss == StopLoss(price=Decimal(45000))
    assert (await client.smart_trade(trade_id)).id == trade_id


async def test_deal_scopes(client, local_tc, key) -> None:
    account = local_tc.add_account(key.api_key)
    active = local_tc.add_deal(key.api_key, account)
    failed = local_tc.add_deal(key.api_key, account)
    cancelled = local_tc.add_deal(key.api_key, account)
    completed = local_tc.add_deal(key.api_key, account)
    local_tc.fail_deal(failed, error_message="Invalid API key")
    local_tc.finish_deal(cancelled, status="cancelled")
    local_tc.finish_deal(completed, status="completed")

    async def ids(scope: str | None) -> set[int]:
        return {deal.id for deal in await client.deals(scope=scope, order="closed_at")}

    assert await ids("active") == {active}
    assert await ids("failed") == {failed}
    assert await ids("cancelled") == {cancelled}
    assert await ids("completed") == {completed}
    assert await ids("finished") == {failed, cancelled, completed}
    assert await ids(None) == {active, failed, cancelled, completed}
    [failed_deal] = await client.deals(scope="failed")
    assert failed_deal.deal_has_error and failed_deal.error_text == "Invalid API key" and failed_deal.finished


async def test_market_orders_of_deal(client, local_tc, key, clock) -> None:
    account = local_tc.add_account(key.api_key)
    placed = clock.now() - timedelta(hours=1)
    deal_id = local_tc.add_deal(
        key.api_key,
        account,
        pair="USDT_SOL",
        orders=[
            {
                "side": "buy",
                "price": "150",
                "amount": "2",
                "filled": "2",
                "status": "filled",
                "created_at": placed,
            },
            {"side": "sell", "price": "155.5", "amount": "2", "created_at": placed.isoformat()},
        ],
    )
    base, take_profit = await client.market_orders_of_deal(deal_id)  # by id: one extra call for the pair
    assert (base.side, base.status, base.deal_order_type, base.price, base.amount_remaining) == (
        "buy",
        "filled",
        "Base",
        Decimal(150),
        Decimal(0),
    )
    assert (
        take_profit.symbol,
        take_profit.side,
        take_profit.status,
        take_profit.price,
        take_profit.amount,
    ) == (
        "SOL/USDT",
        "sell",
        "active",
        Decimal("155.5"),
        Decimal(2),
    )
    assert take_profit.created_at == placed and take_profit.deal_id == deal_id
    assert [r.path.rsplit("/", 1)[-1] for r in local_tc.requests[-2:]] == ["show", "market_orders"]


async def test_forced_mode_shows_paper_accounts_only_in_paper_mode(session, local_tc, key, fake_time) -> None:
    local_tc.add_account(key.api_key, name="Real")
    local_tc.add_account(key.api_key, name="Paper Account 1", paper=True)
    real = make_client(session, local_tc, key, fake_time, forced_mode="real")
    paper = make_client(session, local_tc, key, fake_time, forced_mode="paper")
    assert [a.name for a in await real.accounts()] == ["Real"]
    assert [a.name for a in await paper.accounts()] == ["Paper Account 1"]


async def test_missing_things_are_not_found(client, local_tc, key) -> None:
    with pytest.raises(NotFound):
        await client.deal(999)
    with pytest.raises(NotFound) as caught:
        await client.smart_trade(999)
    assert caught.value.message == "Smart Trade not found"


async def test_accounts_are_paged(session, local_tc, key, fake_time) -> None:
    for number in range(5):
        local_tc.add_account(key.api_key, name=f"acc{number}")
    client = make_client(session, local_tc, key, fake_time)
    client._PAGE_SIZE = 2  # small pages so three are needed
    assert [a.name for a in await client.accounts()] == [f"acc{n}" for n in range(5)]
    assert [r.query for r in local_tc.requests] == [f"page={p}&per_page=2" for p in (1, 2, 3)]


# -- writing -------------------------------------------------------------------------------------


async def test_create_smart_trade_sends_the_documented_json(client, local_tc, key) -> None:
    account = local_tc.add_account(key.api_key)
    params = SmartTradeParams(
        account_id=account,
        pair="USDT_BTC",
        side="buy",
        units=Decimal("0.01"),
        price=Decimal("50000"),
        take_profit=(TakeProfitStep(price=Decimal("52000"), volume=Decimal(100)),),
        stop_loss=StopLoss(price=Decimal("45000.5")),
    )
    trade = await client.create_smart_trade(params)

    received = local_tc.requests[-1]
    assert (received.method, received.path, received.status) == ("POST", "/public/api/v2/smart_trades", 201)
    assert received.body == {
        "account_id": account,
        "pair": "USDT_BTC",
        "position": {
            "type": "buy",
            "order_type": "limit",
            "units": {"value": "0.01"},
            "price": {"value": "50000"},
        },
        "take_profit": {
            "enabled": True,
            "steps": [{"order_type": "limit", "price": {"value": "52000", "type": "bid"}, "volume": "100"}],
        },
        "stop_loss": {
            "enabled": True,
            "order_type": "market",
            "conditional": {"price": {"value": "45000.5", "type": "bid"}},
        },
    }
    assert (trade.account_id, trade.pair, trade.units, trade.price) == (
        account,
        "USDT_BTC",
        Decimal("0.01"),
        Decimal(50000),
    )
    assert trade.stop_loss == StopLoss(price=Decimal("45000.5"))


async def test_start_new_deal(client, local_tc, key) -> None:
    account = local_tc.add_account(key.api_key)
    bot = local_tc.add_bot(key.api_key, account, pairs=["USDT_BTC", "USDT_ETH"], max_active_deals=2)
    deal = await client.start_new_deal(bot, "USDT_ETH")
    assert isinstance(deal, Deal)
    assert (deal.bot_id, deal.pair, deal.status, deal.finished) == (
        bot,
        "USDT_ETH",
        "base_order_placed",
        False,
    )
    assert local_tc.requests[-1].body == {"pair": "USDT_ETH"}
    assert local_tc.requests[-1].path == f"/public/api/ver1/bots/{bot}/start_new_deal"
    with pytest.raises(ThreeCommasError) as caught:
        await client.start_new_deal(bot, "USDT_DOGE")
    assert caught.value.status == 422 and "pair" in caught.value.attributes


async def test_read_only_key_cannot_trade(session, local_tc, fake_time) -> None:
    read_only = local_tc.add_key(can_write=False)
    account = local_tc.add_account(read_only.api_key)
    bot = local_tc.add_bot(read_only.api_key, account)
    client = make_client(session, local_tc, read_only, fake_time)
    await client.accounts()  # reading is fine
    params = SmartTradeParams(
        account_id=account, pair="USDT_BTC", side="buy", units=Decimal(1), order_type="market", instant=True
    )
    for attempt in (client.create_smart_trade(params), client.start_new_deal(bot, None)):
        with pytest.raises(PermissionDenied) as caught:
            await attempt
        assert caught.value.status == 403 and caught.value.verdict is Verdict.PERMISSION_MISSING


def test_smart_trade_params_refuse_what_3commas_would_refuse() -> None:
    base = {"account_id": 1, "pair": "USDT_BTC", "side": "buy", "units": Decimal(1)}
    step = TakeProfitStep(price=Decimal(2), volume=Decimal(50))
    for bad in (
        {"side": "long"},
        {"order_type": "stop"},
        {"units": Decimal(0)},
        {"order_type": "limit"},  # without a price
        {"order_type": "market", "take_profit": (step,)},  # volumes add up to 50
        {"order_type": "market", "take_profit": (TakeProfitStep(price=None, volume=Decimal(100)),)},
        {"order_type": "market", "instant": True, "stop_loss": StopLoss(price=Decimal(1))},
    ):
        with pytest.raises(ValueError):
            SmartTradeParams(**{**base, **bad})  # type: ignore[arg-type]


# -- limits and failures -----------------------------------------------------------------------


async def test_429_blocks_only_its_route_for_the_documented_time(client, local_tc, key, fake_time) -> None:
    # docs quick-start/9_limits: the SmartTrade list blocks 10 s after a 429; no Retry-After comes.
    local_tc.throttle(key.api_key, 10, route="smart_trades")
    await client.accounts()  # another route is not blocked
    await client.smart_trades(status="active")
    assert fake_time.sleeps == [10]
    assert [r.status for r in local_tc.requests] == [200, 429, 200]


async def test_long_429_block_fails_fast_without_calling_again(client, local_tc, key, fake_time) -> None:
    local_tc.throttle(key.api_key, 300)
    with pytest.raises(RateLimited) as caught:
        await client.validate()
    assert caught.value.retry_after == 300  # 3Commas' documented block for the whole API
    assert caught.value.verdict is Verdict.RATE_LIMITED
    with pytest.raises(RateLimited):
        await client.accounts()
    assert len(local_tc.requests) == 1 and fake_time.sleeps == []
    fake_time.now += 300
    await client.validate()


async def test_market_orders_block_like_every_other_route(client, local_tc, key, fake_time) -> None:
    account = local_tc.add_account(key.api_key)
    deal = await client.deal(local_tc.add_deal(key.api_key, account))
    local_tc.throttle(key.api_key, 300)
    with pytest.raises(RateLimited) as caught:
        await client.market_orders_of_deal(deal)
    assert caught.value.retry_after == 300  # not the 60 s of /ver1/deals


async def test_418_bans_our_ip_for_every_key(session, local_tc, key, fake_time) -> None:
    other = local_tc.add_key()
    gate = IpGate(fake_time)
    first = make_client(session, local_tc, key, fake_time, limiter=KeyLimiter(ip=gate, clock=fake_time))
    second = make_client(session, local_tc, other, fake_time, limiter=KeyLimiter(ip=gate, clock=fake_time))
    local_tc.ban(3600)
    with pytest.raises(Banned) as caught:
        await first.validate()
    assert caught.value.status == 418 and caught.value.retry_after == DEFAULT_BAN_S  # 418 names no length
    with pytest.raises(Banned):
        await second.validate()  # another user's key pauses too, without a call
    assert len(local_tc.requests) == 1 and gate.banned_for() == DEFAULT_BAN_S
    fake_time.now += DEFAULT_BAN_S
    with pytest.raises(Banned):
        await second.validate()  # the server's ban was longer: the next 418 re-arms the gate
    fake_time.now += 3600
    await first.validate()
    await second.validate()


async def test_server_escalates_from_429_to_418_for_the_ip_that_ignores_it(
    session, local_tc, key, fake_time
) -> None:
    local_tc.set_rate_limit(per_minute=3, ban_after=2, ban_seconds=120)
    bystander = local_tc.add_key()

    async def careless_call(who: LocalTcKey) -> int:
        # A fresh limiter every call: a client that forgets 3Commas' answers.
        client = make_client(session, local_tc, who, fake_time, limiter=KeyLimiter(max_wait_s=0))
        try:
            await client.validate()
        except RateLimited as error:
            return error.status
        return 200

    assert [await careless_call(key) for _ in range(7)] == [200, 200, 200, 429, 429, 429, 418]
    assert await careless_call(bystander) == 418  # the ban is the IP's, not the key's


async def test_subscription_plan_refusal_is_not_retried(session, local_tc, fake_time) -> None:
    lapsed = local_tc.add_key(subscription_active=False)
    client = make_client(session, local_tc, lapsed, fake_time)
    with pytest.raises(PlanRestricted) as caught:
        await client.validate()
    assert not caught.value.verdict.is_key_problem  # renewing the plan, not the key, fixes it
    assert "subscription plan" in caught.value.message
    assert len(local_tc.requests) == 1 and fake_time.sleeps == []


async def test_limiter_keeps_a_burst_under_100_per_minute(session, local_tc, key, fake_time) -> None:
    class CountingLimiter(KeyLimiter):
        acquired = 0

        async def acquire(self, route: str = "default", *, interactive: bool = False) -> None:
            await super().acquire(route, interactive=interactive)
            self.acquired += 1

    async def sleep_after_in_flight_calls_land(seconds: float) -> None:
        # Simulated minutes pass in an instant; calls already sent must reach the server first,
        # as they would in real time (latency is milliseconds, the window a minute).
        while len(local_tc.requests) < limiter.acquired:  # noqa: ASYNC110 - the server offers no event
            await asyncio.sleep(0.001)
        await fake_time.sleep(seconds)

    limiter = CountingLimiter(clock=fake_time, sleep=sleep_after_in_flight_calls_land)
    client = make_client(session, local_tc, key, fake_time, limiter=limiter)
    await asyncio.gather(*(client.validate() for _ in range(250)))
    assert len(local_tc.requests) == 250
    assert {r.status for r in local_tc.requests} == {
        200
    }  # the server, counting by the same clock, never refused
    assert fake_time.now - 1000.0 >= 120  # 95 + 95 + 60: the last batch waited two minutes


async def test_limiter_window_never_exceeds_its_budget(fake_time) -> None:
    limiter = KeyLimiter(clock=fake_time, sleep=fake_time.sleep)
    stamps = []

    async def one() -> None:
        await limiter.acquire()
        stamps.append(fake_time.now)

    await asyncio.gather(*(one() for _ in range(350)))
    assert max(sum(1 for t in stamps if start <= t < start + 60) for start in stamps) == 95


async def test_network_failures_are_unavailable(session) -> None:
    probe = web.AppRunner(web.Application())
    await probe.setup()
    site = web.TCPSite(probe, "127.0.0.1", 0)
    await site.start()
    port = probe.addresses[0][1]
    await probe.cleanup()  # nothing listens there any more
    client = ThreeCommasClient(session, f"http://127.0.0.1:{port}/public/api", "k", "s")
    with pytest.raises(Unavailable) as caught:
        await client.validate()
    assert caught.value.verdict is Verdict.NETWORK


def test_client_repr_masks_the_key() -> None:
    client = ThreeCommasClient(None, "https://api.3commas.io/public/api", "A" * 64, "S" * 64)  # type: ignore[arg-type]
    assert "A" * 10 not in repr(client) and "S" not in repr(client).split("key=")[1]


# -- parsing -------------------------------------------------------------------------------------


def test_parsing_is_defensive() -> None:
    deal = Deal.from_json(
        {
            "id": "42",
            "pair": "USDT_BTCUSDT",
            "market_type": "futures",
            "status": "failed",
            "current_price": "not a number",
            "take_profit": 2,
            "deal_has_error": "true",
            "created_at": "2025-09-26T17:26:26.529Z",
            "bot_events": "nonsense",
        }
    )
    assert (deal.id, deal.symbol, deal.finished, deal.current_price, deal.take_profit) == (
        42,
        "BTC/USDT:USDT",
        True,
        None,
        Decimal(2),
    )
    assert deal.deal_has_error and deal.created_at == datetime(2025, 9, 26, 17, 26, 26, 529000, tzinfo=UTC)
    assert Deal.from_json({"id": 1, "pair": "BTC-USDT"}).symbol is None
    assert SmartTrade.from_json({"id": 1, "pair": "USDT_BTCUSDT"}).symbol == "BTC/USDT:USDT"
    assert SmartTrade.from_json({"id": 1, "pair": "USDT_BTC", "status": "odd"}).status == "unknown"
    with pytest.raises(ThreeCommasError):
        Account.from_json({"name": "no id"})


@pytest.mark.parametrize(
    ("pair", "futures", "symbol"),
    [
        ("USDT_BTC", False, "BTC/USDT"),
        ("BTC_ETH", False, "ETH/BTC"),
        ("USDT_BTCUSDT", True, "BTC/USDT:USDT"),
        ("BNFCR_BTCUSDT", True, "BTC/USDT:USDT"),
        ("USD_BTCUSD", True, "BTC/USD:BTC"),
    ],
)
def test_pair_to_symbol(pair: str, futures: bool, symbol: str) -> None:
    assert tc_pair_to_symbol(pair, futures=futures) == symbol


@given(
    base=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8),
    quote=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=5),
)
def test_spot_pairs_round_trip(base: str, quote: str) -> None:
    assert tc_pair_to_symbol(symbol_to_tc_pair(f"{base}/{quote}")) == f"{base}/{quote}"


def test_bad_pairs_are_refused() -> None:
    for bad in ("BTCUSDT", "_BTC", "USDT_", "A_B_C"):
        with pytest.raises(ValueError):
            tc_pair_to_symbol(bad)
    with pytest.raises(ValueError):
        symbol_to_tc_pair("BTCUSDT")


# -- sandbox control over HTTP -----------------------------------------------------------------


async def test_control_api_over_http(session, local_tc, fake_time) -> None:
    control_url = local_tc.control_url.replace(f"127.0.0.1:{local_tc.port}", "api.3commas.io")

    async def control(method: str, **kwargs: object) -> dict:
        async with session.post(f"{control_url}/{method}", json=kwargs) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    key = await control("add_key", can_write=False)
    account = (await control("add_account", api_key=key["api_key"], exchange="okex", name="OKX"))["id"]
    await control("set_account", account_id=account, is_locked=True, lock_reason="Subscription expired")
    deal = (await control("add_deal", api_key=key["api_key"], account_id=account, current_price="1.5"))["id"]
    await control("fail_deal", deal_id=deal, error_message="API key expired")

    client = make_client(session, local_tc, LocalTcKey(key["api_key"], key["secret"]), fake_time)
    [acc] = await client.accounts()
    assert (acc.exchange_id, acc.is_locked, acc.lock_reason) == ("okx", True, "Subscription expired")
    [failed] = await client.deals(scope="failed")
    assert failed.id == deal and failed.error_text == "API key expired"

    async with session.get(f"{control_url}/requests") as response:
        log = await response.json()
    assert [entry["status"] for entry in log] == [200, 200]
    async with session.post(f"{control_url}/drop_database", json={}) as response:
        assert response.status == 404


# -- issue 12 findings: mode, RSA, failed SmartTrades ------------------------------------------


async def test_paper_mode_in_the_app_hides_nothing_from_us(client, local_tc, key, session) -> None:
    real = local_tc.add_account(key.api_key, name="Real")
    local_tc.add_account(key.api_key, name="Paper", paper=True)
    local_tc.set_app_mode(key.api_key, "paper")  # the user tries paper trading in the app
    assert [a.id for a in await client.accounts()] == [real]
    # What a client without the header would have seen: only the paper account.
    path = "/public/api/ver1/accounts"
    signature = hmac.new(key.secret.encode(), path.encode(), hashlib.sha256).hexdigest()
    async with session.get(
        API.removesuffix("/public/api") + path,
        headers={"Apikey": key.api_key, "Signature": signature},
    ) as response:
        assert [a["name"] for a in await response.json()] == ["Paper"]
    assert {r.path for r in local_tc.requests} == {path}


def _pem(private: rsa.RSAPrivateKey) -> str:
    """The private key as ``openssl genrsa`` writes it (docs quick-start/4_how_to_create_an_rsa_key_pair)."""
    encoding, form = serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL
    return private.private_bytes(encoding, form, serialization.NoEncryption()).decode()


async def test_rsa_signed_requests_verify_in_the_local_3commas(session, local_tc, fake_time) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key = local_tc.add_key(rsa_public_pem=public)
    account = local_tc.add_account(key.api_key)
    client = make_client(session, local_tc, key, fake_time, secret=pem)
    await client.validate()
    await client.deals(scope="active")  # a signed query
    updated = await client.update_account_keys(account, "fresh-exchange-key", "fresh-secret")  # a signed body
    assert updated.api_key_invalid is False
    assert [r.status for r in local_tc.requests] == [200, 200, 201]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(KeyInvalid) as caught:
        await make_client(session, local_tc, key, fake_time, secret=forged).validate()
    assert caught.value.verdict is Verdict.SIGNATURE_INVALID


async def test_401_from_an_ip_off_the_whitelist_is_not_called_revoked(client, local_tc, key) -> None:
    local_tc.set_whitelist(key.api_key, ["203.0.113.7"])  # keysentry's address is not on it
    with pytest.raises(KeyInvalid) as caught:
        await client.validate()
    assert caught.value.ip_possible  # the guard counts these across keys


async def test_docs_failed_smart_trade_is_done_and_its_orders_are_orphan_candidates() -> None:
    from services.orders.listing import deal_orders_of_smart_trade

    case = json.loads((Path(__file__).parent / "corpus/threecommas/smart_trade_failed_docs.json").read_text())
    payload = dict(case["response"]["body"][0])
    assert payload["data"]["finished"] is False and payload["status"]["type"] == "failed"
    payload["position"] = {**payload["position"], "order_type": "limit"}  # a limit entry that may still sit
    trade = SmartTrade.from_json(payload)
    assert trade.finished
    assert {order.deal_status for order in deal_orders_of_smart_trade(trade)} == {"finished"}


async def test_reset_breaks_every_account_and_update_repairs_one(client, local_tc, key) -> None:
    first = local_tc.add_account(key.api_key, name="Main")
    second = local_tc.add_account(key.api_key, exchange="binance_futures", name="Futures")
    deal = local_tc.add_deal(key.api_key, first, bought_amount="0.1", bought_average_price="60000")
    counts = local_tc.reset_exchange_keys(key.api_key)
    assert counts["accounts"] == 2 and counts["deals"] == 1
    assert all(a.key_broken for a in await client.accounts())
    assert (await client.deal(deal)).status == "failed"
    with pytest.raises(ThreeCommasError) as caught:
        await client.load_balances(first)
    assert caught.value.error == "invalid_api_key"
    await client.update_account_keys(first, "new-exchange-key", "new-exchange-secret")
    assert not (await client.load_balances(first)).key_broken
    assert (await client.account(second)).key_broken
    assert (await client.account(second)).market.exchange == "binanceusdm"  # type: ignore[union-attr]
