"""3Commas symptoms → observations, snapshots between polls, and recreate plans."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from typing import Any

import aiohttp
import pytest

from bot.i18n import build_i18n
from bot.views.threecommas import plan_lines
from sandbox.threecommas import LocalThreeCommas
from services.core.clock import FakeClock
from services.core.verdicts import Verdict
from services.storage.models import FailedDeal
from services.threecommas.checks import (
    GONE,
    Observation,
    Snapshot,
    TcState,
    Thresholds,
    fetch_state,
    price_requests,
    run_checks,
)
from services.threecommas.client import ThreeCommasClient
from services.threecommas.entities import Account, Bot, Deal, SmartTrade, TakeProfitStep
from services.threecommas.errors import KeyInvalid, Unavailable
from services.threecommas.findings import (
    AccountSymptom,
    AccountTrouble,
    BalancesFailing,
    StaleBasis,
    StaleUpnl,
    StuckAction,
    StuckClosing,
    finding,
)
from services.threecommas.limiter import KeyLimiter
from services.threecommas.recreate import Caveat, PlanWarning, RecreatePlan, recreate, recreate_params

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def account(**fields: Any) -> Account:
    return Account.from_json(
        {
            "id": 7,
            "name": "Main",
            "market_code": "binance",
            "api_key_invalid": False,
            "api_keys_state": "ok",
            "is_locked": False,
            "lock_reason": None,
            "auto_balance_error": None,
            **fields,
        }
    )


def deal(**fields: Any) -> Deal:
    return Deal.from_json(
        {
            "id": 456,
            "bot_id": 99,
            "bot_name": "BTC long",
            "account_id": 7,
            "pair": "USDT_BTC",
            "status": "bought",
            "finished?": False,
            "created_at": "2025-12-31T10:00:00.000Z",
            "updated_at": "2026-01-01T11:59:00.000Z",
            "current_price": "50000",
            "bought_amount": "0.02",
            "bought_average_price": "49000",
            "sold_amount": "0.0",
            "take_profit": "2.0",
            "stop_loss_percentage": "5.0",
            "base_order_volume": "25.0",
            "deal_has_error": False,
            "error_message": None,
            "strategy": "long",
            "market_type": "spot",
            **fields,
        }
    )


def failed_deal(deal_id: int, status: str = "failed", **fields: Any) -> Deal:
    return deal(
        id=deal_id, status=status, **{"finished?": True, "closed_at": "2026-01-01T11:58:00.000Z", **fields}
    )


def trade(**fields: Any) -> SmartTrade:
    return SmartTrade.from_json(
        {
            "id": 321,
            "account": {"id": 7},
            "pair": "USDT_ETH",
            "status": {"type": "waiting_position", "title": "Pending Position Opened"},
            "position": {
                "type": "buy",
                "order_type": "limit",
                "units": {"value": "1.5"},
                "price": {"value": "2400"},
                "status": {"type": "order_placed"},
            },
            "take_profit": {
                "enabled": True,
                "steps": [
                    {"order_type": "limit", "price": {"type": "bid", "value": "2600"}, "volume": "50.0"},
                    {"order_type": "limit", "price": {"type": "last", "value": "2800"}, "volume": "50.0"},
                ],
            },
            "stop_loss": {
                "enabled": True,
                "order_type": "market",
                "conditional": {"price": {"value": "2200", "type": "bid"}},
            },
            "data": {"entered_amount": "0.0", "closed_amount": "0.0", "finished": False},
            **fields,
        }
    )


def state(accounts=(), deals=(), trades=()) -> TcState:
    return TcState(list(accounts) or [account()], list(deals), list(trades))


def failing(observations: list[Observation]) -> list[Observation]:
    return [o for o in observations if not o.ok]


# -- healthy ---------------------------------------------------------------------------------------


def test_healthy_key_reports_every_state_ok() -> None:
    result = run_checks(state(deals=[deal()], trades=[trade()]), None, prices={"BTC/USDT": 50010}, now=T0)
    assert failing(result.observations) == []
    assert {o.check_kind for o in result.observations} == {
        "tc_key",
        "tc_account:7",
        "deal_error:456",
        "stale_upnl:456",
        "smart_trade_error:321",
    }
    assert all(len(o.check_kind) <= 48 and len(o.verdict_or_reason) <= 24 for o in result.observations)


# -- accounts and the key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "in_detail"),
    [
        ({"api_key_invalid": True}, "key_invalid", "no longer use"),
        ({"api_key_invalid": True, "api_keys_state": "expired"}, "key_expired", "no longer use"),
        ({"api_keys_state": "expired"}, "key_expired", "no longer use"),
        ({"api_keys_state": "expire_soon"}, "keys_expire_soon", "expires soon"),
        (
            {"is_locked": True, "lock_reason": "Subscription expired"},
            "account_locked",
            "Subscription expired",
        ),
        ({"auto_balance_error": "Cannot load balances"}, "auto_balance_error", "Cannot load balances"),
        ({"auto_balance_error": True}, "auto_balance_error", "auto-balance error"),
        ({"api_keys_state": "disabled"}, "keys_state_unknown", "'disabled'"),
    ],
)
def test_each_account_symptom_raises_exactly_one_observation(fields, reason, in_detail) -> None:
    result = run_checks(state(accounts=[account(**fields)]), None, prices={}, now=T0)
    [problem] = failing(result.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == ("tc_account:7", reason)
    assert in_detail in problem.detail
    assert problem.subject["account_id"] == 7 and problem.subject["exchange"] == "binance"
    assert result.snapshot.failing == {"tc_account:7"}


def test_several_account_symptoms_name_the_worst_and_list_all() -> None:
    sick = account(api_key_invalid=True, is_locked=True, lock_reason="Banned", api_keys_state="expired")
    [problem] = failing(run_checks(state(accounts=[sick]), None, prices={}, now=T0).observations)
    assert problem.verdict_or_reason == "key_expired"
    assert problem.subject["symptoms"] == ["key_expired", "account_locked"]
    assert "Banned" in problem.detail
    assert finding(problem.check_kind, problem.verdict_or_reason, problem.subject) == AccountTrouble(
        (AccountSymptom.KEY_EXPIRED, AccountSymptom.LOCKED), lock_reason="Banned"
    )


def test_3commas_key_rejected_reports_only_tc_key_and_keeps_the_snapshot() -> None:
    before = run_checks(state(deals=[deal()]), None, prices={"BTC/USDT": 50000}, now=T0).snapshot
    error = KeyInvalid(401, "api_key_invalid_or_expired", "Unauthorized. Invalid or expired api key.")
    result = run_checks(None, before, prices={}, now=T0 + timedelta(minutes=1), key_error=error)
    assert result.observations == [
        Observation("tc_key", False, "key_invalid", str(error), {}),
    ]
    assert result.snapshot.upnl == before.upnl and result.snapshot.failing == {"tc_key"}
    recovered = run_checks(state(deals=[deal()]), result.snapshot, prices={}, now=T0 + timedelta(minutes=2))
    assert next(o for o in recovered.observations if o.check_kind == "tc_key").ok


def test_transient_3commas_failure_keeps_its_transient_verdict() -> None:
    result = run_checks(None, None, prices={}, now=T0, key_error=Unavailable(502, "http_502"))
    [observation] = result.observations
    assert Verdict(observation.verdict_or_reason).is_transient


# -- deal and SmartTrade errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"deal_has_error": True, "error_message": "Insufficient funds"}, "deal_error"),
        ({"deal_has_error": True, "error_message": None}, "deal_error"),
        ({"error_message": "Invalid API key"}, "key_invalid"),
        ({"error_message": "Your API key expired"}, "key_expired"),
        ({"failed_message": "IP not in whitelist"}, "ip_not_allowed"),
        ({"deal_has_error": True, "error_message": "No permission to trade"}, "permission_missing"),
    ],
)
def test_deal_errors(fields, reason) -> None:
    result = run_checks(state(deals=[deal(**fields)]), None, prices={}, now=T0)
    [problem] = failing(result.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == ("deal_error:456", reason)
    assert problem.subject["ref"] == "deal:456" and problem.subject["bot_id"] == 99


def test_error_text_unrelated_to_the_api_without_the_flag_is_not_a_symptom() -> None:
    result = run_checks(state(deals=[deal(error_message="Waiting for signal")]), None, prices={}, now=T0)
    assert failing(result.observations) == []


def test_smart_trade_error() -> None:
    broken = trade(
        status={"type": "waiting_targets", "error": "Binance: Invalid API-key, IP, or permissions"}
    )
    [problem] = failing(run_checks(state(trades=[broken]), None, prices={}, now=T0).observations)
    assert problem.check_kind == "smart_trade_error:321"
    assert problem.verdict_or_reason == "ip_not_allowed"  # the exchange's text names the IP first
    assert "Invalid API-key" in problem.detail


def test_failing_state_of_a_closed_deal_is_closed_once() -> None:
    first = run_checks(state(deals=[deal(deal_has_error=True)]), None, prices={}, now=T0)
    assert first.snapshot.failing == {"deal_error:456"}
    second = run_checks(state(), first.snapshot, prices={}, now=T0 + timedelta(minutes=1))
    [closing] = [o for o in second.observations if o.check_kind == "deal_error:456"]
    assert closing.ok and closing.verdict_or_reason == GONE
    third = run_checks(state(), second.snapshot, prices={}, now=T0 + timedelta(minutes=2))
    assert all(o.check_kind != "deal_error:456" for o in third.observations)


# -- stale UPNL ------------------------------------------------------------------------------------


def stale_observation(result) -> Observation | None:
    return next((o for o in result.observations if o.check_kind == "stale_upnl:456"), None)


def test_stale_upnl_when_price_froze_and_market_moved() -> None:
    frozen = deal(current_price="50000")
    first = run_checks(state(deals=[frozen]), None, prices={"BTC/USDT": 50000}, now=T0)
    assert stale_observation(first).ok
    later = T0 + timedelta(minutes=16)
    second = run_checks(state(deals=[frozen]), first.snapshot, prices={"BTC/USDT": 51500}, now=later)
    [problem] = failing(second.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == ("stale_upnl:456", "stale_upnl")
    assert problem.subject["deal_price"] == "50000" and problem.subject["live_price"] == "51500"
    assert "16 min" in problem.detail and "3.00%" in problem.detail


def test_no_stale_upnl_when_the_market_did_not_move() -> None:
    frozen = deal(current_price="50000")
    first = run_checks(state(deals=[frozen]), None, prices={"BTC/USDT": 50000}, now=T0)
    second = run_checks(
        state(deals=[frozen]), first.snapshot, prices={"BTC/USDT": 50100}, now=T0 + timedelta(hours=3)
    )  # 0.2 % is within the default epsilon
    assert failing(second.observations) == []


def test_no_stale_upnl_when_the_deal_keeps_updating_or_too_early() -> None:
    first = run_checks(state(deals=[deal()]), None, prices={"BTC/USDT": 50000}, now=T0)
    moving = deal(current_price="51000", updated_at="2026-01-01T12:20:00.000Z")
    second = run_checks(
        state(deals=[moving]), first.snapshot, prices={"BTC/USDT": 53000}, now=T0 + timedelta(minutes=20)
    )
    assert stale_observation(second).ok  # new values: the freeze clock restarted
    third = run_checks(
        state(deals=[moving]), second.snapshot, prices={"BTC/USDT": 53000}, now=T0 + timedelta(minutes=30)
    )
    assert stale_observation(third).ok  # frozen for 10 min only
    custom = Thresholds(stale_upnl_after=timedelta(minutes=5))
    fourth = run_checks(
        state(deals=[moving]),
        second.snapshot,
        prices={"BTC/USDT": 53000},
        now=T0 + timedelta(minutes=30),
        thresholds=custom,
    )
    assert not stale_observation(fourth).ok


def test_stale_upnl_without_a_live_price_is_neither_raised_nor_cleared() -> None:
    frozen = deal(current_price="50000")
    first = run_checks(state(deals=[frozen]), None, prices={"BTC/USDT": 50000}, now=T0)
    stale = run_checks(
        state(deals=[frozen]), first.snapshot, prices={"BTC/USDT": 55000}, now=T0 + timedelta(hours=1)
    )
    assert stale.snapshot.failing == {"stale_upnl:456"}
    blind = run_checks(state(deals=[frozen]), stale.snapshot, prices={}, now=T0 + timedelta(hours=2))
    assert stale_observation(blind) is None
    assert blind.snapshot.failing == {"stale_upnl:456"}


# -- failed / cancelled events ---------------------------------------------------------------------


def test_failed_deal_is_reported_once_and_history_is_not_news() -> None:
    baseline = run_checks(state(deals=[failed_deal(100)]), None, prices={}, now=T0)
    assert all(not o.is_event for o in baseline.observations)

    news = [
        failed_deal(100),
        failed_deal(789, error_message="Invalid API key"),
        failed_deal(790, "cancelled"),
    ]
    second = run_checks(state(deals=news), baseline.snapshot, prices={}, now=T0 + timedelta(minutes=1))
    events = [o for o in second.observations if o.is_event]
    assert [(o.check_kind, o.verdict_or_reason) for o in events] == [
        ("deal_failed:789", "deal_failed"),
        ("deal_failed:790", "deal_cancelled"),
    ]
    subject = events[0].subject
    assert subject["pair"] == "USDT_BTC" and subject["side"] == "buy" and subject["bot_id"] == 99
    assert (subject["amount"], subject["take_profit_percent"], subject["stop_loss_percent"]) == (
        "0.02",
        "2.0",
        "5.0",
    )
    assert subject["error"] == "Invalid API key"
    assert subject["recreate"]["path"] == "/ver1/bots/99/start_new_deal"
    assert second.snapshot.failing == frozenset()  # events are not states

    third = run_checks(state(deals=news), second.snapshot, prices={}, now=T0 + timedelta(minutes=2))
    assert [o for o in third.observations if o.is_event] == []


def test_a_key_error_before_the_first_success_does_not_spoil_the_baseline() -> None:
    down = run_checks(None, None, prices={}, now=T0, key_error=Unavailable(0, "network"))
    first = run_checks(
        state(deals=[failed_deal(100)]), down.snapshot, prices={}, now=T0 + timedelta(minutes=1)
    )
    assert [o for o in first.observations if o.is_event] == []


def test_failed_smart_trade_event_carries_its_parameters() -> None:
    baseline = run_checks(state(), None, prices={}, now=T0)
    dead = trade(
        status={"type": "failed", "error": "Invalid API key"}, data={"finished": True, "entered_amount": "0"}
    )
    result = run_checks(state(trades=[dead]), baseline.snapshot, prices={}, now=T0)
    [event] = [o for o in result.observations if o.is_event]
    assert (event.check_kind, event.verdict_or_reason) == ("smart_trade_failed:321", "deal_failed")
    assert event.subject["take_profit"] == [
        {"price": "2600", "volume": "50.0", "price_type": "bid"},
        {"price": "2800", "volume": "50.0", "price_type": "last"},
    ]
    assert event.subject["stop_loss"] == {"price": "2200", "price_type": "bid"}
    assert event.subject["recreate"]["body"]["position"]["units"] == {"value": "1.5"}


def test_remembered_failures_are_bounded() -> None:
    limits = Thresholds(remembered_finished=2)
    result = run_checks(
        state(deals=[failed_deal(i) for i in (1, 2, 3)]), None, prices={}, now=T0, thresholds=limits
    )
    assert result.snapshot.seen_failed_deals == {2, 3}


def test_snapshot_survives_json_storage() -> None:
    first = run_checks(state(deals=[deal(), failed_deal(5)]), None, prices={"BTC/USDT": 1}, now=T0)
    stored = json.loads(json.dumps(first.snapshot.to_dict()))
    assert Snapshot.from_dict(stored) == first.snapshot


def test_long_details_fit_the_incident_column() -> None:
    noisy = deal(deal_has_error=True, error_message="x" * 1000)
    [problem] = failing(run_checks(state(deals=[noisy]), None, prices={}, now=T0).observations)
    assert len(problem.detail) == 300


def test_price_requests_name_exchange_and_symbols() -> None:
    futures = deal(id=2, pair="USDT_ETHUSDT", market_type="futures")
    assert price_requests(state(deals=[deal(), futures, failed_deal(3)])) == {
        "binance": {"BTC/USDT", "ETH/USDT:USDT"}
    }


# -- recreate ------------------------------------------------------------------------------------


def test_recreate_plan_for_a_smart_trade_that_never_entered() -> None:
    plan = recreate_params(trade(status={"type": "failed"}))
    assert (plan.kind, plan.method, plan.path, plan.source_ref) == (
        "smart_trade",
        "POST",
        "/v2/smart_trades",
        "smart_trade:321",
    )
    assert plan.body == {
        "account_id": 7,
        "pair": "USDT_ETH",
        "position": {
            "type": "buy",
            "order_type": "limit",
            "units": {"value": "1.5"},
            "price": {"value": "2400"},
        },
        "take_profit": {
            "enabled": True,
            "steps": [
                {"order_type": "limit", "price": {"value": "2600", "type": "bid"}, "volume": "50.0"},
                {"order_type": "limit", "price": {"value": "2800", "type": "last"}, "volume": "50.0"},
            ],
        },
        "stop_loss": {
            "enabled": True,
            "order_type": "market",
            "conditional": {"price": {"value": "2200", "type": "bid"}},
        },
    }
    assert plan.summary == "Buy 1.5 ETH/USDT at 2400 again" and plan.warnings == ()
    assert "⚠️" not in shown(plan, "en")


def shown(plan: RecreatePlan, locale: str) -> str:
    """The plan's confirmation lines as a user of ``locale`` reads them, from the stored JSON."""
    row = FailedDeal(kind=plan.kind, params=json.loads(json.dumps(plan.to_dict())))
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        return "\n".join(plan_lines(row))


def test_recreate_plan_for_an_entered_smart_trade_only_protects_the_coins() -> None:
    entered = trade(
        status={"type": "failed"},
        data={
            "entered_amount": "1.5",
            "closed_amount": "0.5",
            "average_enter_price": "2390.5",
            "finished": True,
        },
    )
    plan = recreate_params(entered)
    assert plan.body["skip_enter_step"] is True
    assert plan.body["position"] == {
        "type": "buy",
        "order_type": "market",
        "units": {"value": "1.0"},
        "price": {"value": "2390.5"},
    }
    assert plan.warnings == (
        PlanWarning(Caveat.ONLY_PROTECTS, amount=Decimal("1.0"), currency="ETH", price=Decimal("2390.5")),
    )
    assert (
        "⚠️ The position was already entered (1 ETH at 2390.5); the new SmartTrade only places the "
        "take profit and stop loss for it, it does not buy again."
    ) in shown(plan, "en")
    assert (
        "⚠️ Позиция уже была открыта (1 ETH по 2390.5); новый SmartTrade только выставляет для неё "
        "тейк-профит и стоп-лосс и не покупает заново."
    ) in shown(plan, "ru")
    closed = trade(data={"entered_amount": "1.5", "closed_amount": "1.5"})
    with pytest.raises(ValueError, match="already closed"):
        recreate_params(closed)


def test_recreate_plan_for_a_dca_deal() -> None:
    plan = recreate_params(failed_deal(789, error_message="Invalid API key"))
    assert (plan.kind, plan.method, plan.path, plan.body) == (
        "dca_deal",
        "POST",
        "/ver1/bots/99/start_new_deal",
        {"pair": "USDT_BTC"},
    )
    assert (plan.bot_id, plan.pair, plan.smart_trade) == (99, "USDT_BTC", None)
    assert plan.summary == "Start a new deal on bot BTC long for BTC/USDT"
    assert plan.warnings == (
        PlanWarning(
            Caveat.BOT_SETTINGS_NOW,
            currency="USDT",
            take_profit=Decimal("2.0"),
            stop_loss=Decimal("5.0"),
            base_order=Decimal("25.0"),
        ),
        PlanWarning(Caveat.HELD_NOT_SOLD, amount=Decimal("0.02"), currency="BTC"),
    )
    english = shown(plan, "en")
    assert (
        "⚠️ The new deal uses the bot's current settings (the old deal had take profit 2 %, stop loss 5 %, "
        "base order 25 USDT)."
    ) in english
    assert "⚠️ The old deal had bought 0.02 BTC; the new deal buys again, it does not sell those." in english
    russian = shown(plan, "ru")
    assert (
        "⚠️ Новая сделка использует текущие настройки бота (у старой сделки были: тейк-профит 2 %, "
        "стоп-лосс 5 %, базовый ордер 25 USDT)."
    ) in russian
    assert "⚠️ Старая сделка уже купила 0.02 BTC; новая сделка покупает заново и их не продаёт." in russian
    assert "The new deal" not in russian, russian
    with pytest.raises(ValueError):
        recreate_params(failed_deal(790, bot_id=None))


def test_recreate_plan_for_a_market_smart_trade_warns_of_the_price_of_the_moment() -> None:
    market = trade(
        position={
            "type": "buy",
            "order_type": "market",
            "units": {"value": "1.5"},
            "price": {"value": "2400"},
            "status": {"type": "order_placed"},
        }
    )
    plan = recreate_params(market)
    assert plan.warnings == (PlanWarning(Caveat.MARKET_PRICE, price=Decimal("2400")),)
    assert "⚠️ A market entry fills at the current price, not at the original 2400." in shown(plan, "en")
    assert "⚠️ Вход по рынку исполнится по текущей цене, а не по исходной 2400." in shown(plan, "ru")
    assert "⚠️ Una entrada a mercado se ejecuta al precio del momento, no al original de 2400." in (
        shown(plan, "es")
    )


def test_a_plan_stored_with_english_warnings_shows_them_as_they_were() -> None:
    """Plans stored before warnings were typed held English sentences: shown as written, in any
    language, next to parameters in the user's language."""
    params = recreate_params(failed_deal(789)).to_dict()
    params["warnings"] = ["The new deal uses the bot's current settings (the old deal had take profit % 2)."]
    row = FailedDeal(kind="dca_deal", params=params)
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale("ru"):
        lines = plan_lines(row)
    assert unescape(lines[-1]) == "⚠️ " + params["warnings"][0]
    assert lines[0].startswith("DCA-бот BTC long")


def test_smart_trade_without_absolute_target_prices_cannot_be_recreated() -> None:
    percent_only = trade(
        take_profit={"enabled": True, "steps": [{"price": {"type": "bid", "percent": "5"}, "volume": "100"}]}
    )
    with pytest.raises(ValueError, match="absolute price"):
        recreate_params(percent_only)


# -- end to end against the local 3Commas ----------------------------------------------------------


@pytest.fixture
async def local_tc(clock: FakeClock) -> AsyncIterator[LocalThreeCommas]:
    server = LocalThreeCommas(clock)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_poll_cycle_against_the_local_3commas(local_tc: LocalThreeCommas, clock: FakeClock) -> None:
    key = local_tc.add_key()
    account_id = local_tc.add_account(key.api_key)
    healthy = local_tc.add_deal(key.api_key, account_id, pair="USDT_ETH", current_price="2500")
    stuck = local_tc.add_deal(key.api_key, account_id, pair="USDT_BTC", current_price="50000")
    doomed = local_tc.add_deal(key.api_key, account_id, pair="USDT_SOL", current_price="150")
    local_tc.add_smart_trade(
        key.api_key,
        account_id,
        pair="USDT_BTC",
        price="48000",
        take_profit=[{"price": "52000", "volume": 100}],
    )
    async with aiohttp.ClientSession() as session:
        client = ThreeCommasClient(session, local_tc.url, key.api_key, key.secret, limiter=KeyLimiter())
        first = run_checks(await fetch_state(client), None, prices={"BTC/USDT": 50000}, now=clock.now())
        assert failing(first.observations) == []

        clock.advance(minutes=20)
        local_tc.freeze_upnl(stuck)
        local_tc.set_price("USDT_BTC", "51000")
        local_tc.set_price("USDT_ETH", "2600")
        local_tc.fail_deal(doomed, error_message="Invalid API key")
        local_tc.set_account(account_id, api_keys_state="expire_soon")
        prices = {"BTC/USDT": 51000.0, "ETH/USDT": 2600.0}
        second = run_checks(await fetch_state(client), first.snapshot, prices=prices, now=clock.now())
        assert sorted((o.check_kind, o.verdict_or_reason, o.ok) for o in failing(second.observations)) == [
            (f"deal_failed:{doomed}", "deal_failed", False),
            (f"stale_upnl:{stuck}", "stale_upnl", False),
            (f"tc_account:{account_id}", "keys_expire_soon", False),
        ]
        assert f"stale_upnl:{healthy}" not in second.snapshot.failing

        event = next(o for o in second.observations if o.is_event)
        plan = recreate_params(await client.deal(event.subject["deal_id"]))
        new_deal = await recreate(client, plan)
        assert isinstance(new_deal, Deal) and new_deal.pair == "USDT_SOL" and not new_deal.finished
        assert local_tc.requests[-1].body == plan.body

        [smart] = await client.smart_trades(status="active")
        local_tc.fail_smart_trade(smart.id)
        failed_trade = await client.smart_trade(smart.id)
        replacement = await recreate(client, recreate_params(failed_trade))
        assert isinstance(replacement, SmartTrade)
        assert replacement.take_profit == (TakeProfitStep(price=Decimal(52000), volume=Decimal(100)),)
        assert replacement.stop_loss is None and replacement.id != smart.id

        third = run_checks(await fetch_state(client), second.snapshot, prices=prices, now=clock.now())
        assert [o.check_kind for o in third.observations if o.is_event] == [f"smart_trade_failed:{smart.id}"]
        fourth = run_checks(await fetch_state(client), third.snapshot, prices=prices, now=clock.now())
        assert [o for o in fourth.observations if o.is_event] == []


# -- issue 13: SmartTrade UPNL by recomputation, balances, bots ------------------------------------


def entered_trade(profit: str, price: str) -> SmartTrade:
    return trade(
        status={"type": "waiting_targets", "title": "Waiting Targets"},
        data={
            "entered_amount": "1.5",
            "closed_amount": "0.0",
            "average_enter_price": "2400",
            "current_price": {"last": price},
            "finished": False,
        },
        profit={"usd": profit},
    )


def test_smart_trade_stale_upnl_alerts_once_and_recovers_once() -> None:
    kind = "smart_trade_upnl:321"
    frozen = entered_trade(profit="150", price="2500")  # right at 2500: (2500 - 2400) × 1.5
    first = run_checks(state(trades=[frozen]), None, prices={"ETH/USDT": 2500}, now=T0)
    assert next(o for o in first.observations if o.check_kind == kind).ok
    # 3Commas keeps showing 150 while ETH is at 2600: at the live price the profit is 300.
    second = run_checks(
        state(trades=[frozen]), first.snapshot, prices={"ETH/USDT": 2600}, now=T0 + timedelta(minutes=16)
    )
    [problem] = failing(second.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == (kind, "stale_upnl")
    assert problem.subject["upnl_live"] == "300.00" and "150" in problem.detail
    assert finding(kind, "stale_upnl", problem.subject) == StaleUpnl(
        StaleBasis.PROFIT, Decimal("150"), Decimal("300.00"), Decimal("2600"), Decimal("0.0417"), 16
    )
    third = run_checks(
        state(trades=[frozen]), second.snapshot, prices={"ETH/USDT": 2600}, now=T0 + timedelta(minutes=17)
    )
    assert [o.check_kind for o in failing(third.observations)] == [kind]  # still one incident, no new one
    moving = entered_trade(profit="300", price="2600")
    fourth = run_checks(
        state(trades=[moving]), third.snapshot, prices={"ETH/USDT": 2600}, now=T0 + timedelta(minutes=18)
    )
    assert failing(fourth.observations) == [] and kind not in fourth.snapshot.failing


def test_recomputation_catches_a_deal_whose_update_time_keeps_moving() -> None:
    # updated_at ticks on every poll, profit stays: the old freeze check would have missed it.
    def stuck(minute: int) -> Deal:
        return deal(
            actual_usd_profit="20", current_price="50000", updated_at=f"2026-01-01T12:{minute:02d}:00.000Z"
        )

    first = run_checks(state(deals=[stuck(0)]), None, prices={"BTC/USDT": 50000}, now=T0)
    later = run_checks(
        state(deals=[stuck(16)]), first.snapshot, prices={"BTC/USDT": 52000}, now=T0 + timedelta(minutes=16)
    )
    [problem] = failing(later.observations)
    assert problem.check_kind == "stale_upnl:456" and problem.subject["upnl_live"] == "60.00"


def test_balances_that_fail_to_load_keep_the_last_good_balance() -> None:
    healthy = account(usd_amount="1234.5")
    first = run_checks(TcState([healthy], [], [], None, {}), None, prices={}, now=T0)
    assert first.snapshot.balances[7].usd == Decimal("1234.5")
    broken = TcState([account(usd_amount="0")], [], [], None, {7: "invalid_api_key"})
    second = run_checks(broken, first.snapshot, prices={}, now=T0 + timedelta(hours=1))
    [problem] = failing(second.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == ("tc_balances:7", "balances_not_loading")
    assert problem.subject["last_good_usd"] == "1234.5" and problem.subject["last_good_at"] == T0.isoformat()
    assert finding(problem.check_kind, problem.verdict_or_reason, problem.subject) == BalancesFailing(
        "invalid_api_key", Decimal("1234.5"), T0
    )
    # Between reloads nothing is judged: the incident stays as it is.
    between = run_checks(
        TcState([account(usd_amount="0")], [], [], None, None),
        second.snapshot,
        prices={},
        now=T0 + timedelta(hours=1, minutes=1),
    )
    assert "tc_balances:7" in between.snapshot.failing and between.snapshot.balances[7].usd == Decimal(
        "1234.5"
    )


def test_a_key_broken_account_alerts_once_with_its_last_good_balance() -> None:
    first = run_checks(TcState([account(usd_amount="900")], [], [], None, {}), None, prices={}, now=T0)
    reset = account(api_key_invalid=True, api_keys_state="expired", usd_amount="0")
    second = run_checks(
        TcState([reset], [], [], None, {7: "invalid_api_key"}), first.snapshot, prices={}, now=T0
    )
    [problem] = failing(second.observations)  # no second "balances" alert for the same cause
    assert problem.check_kind == "tc_account:7" and problem.subject["key_state"] == "expired"
    assert problem.subject["last_good_usd"] == "900"


def test_a_bot_switched_off_is_reported_once() -> None:
    def bot(enabled: bool) -> Bot:
        return Bot.from_json({"id": 11, "account_id": 7, "name": "BTC long", "is_enabled": enabled})

    first = run_checks(TcState([account()], [], [], [bot(True)]), None, prices={}, now=T0)
    second = run_checks(TcState([account()], [], [], [bot(False)]), first.snapshot, prices={}, now=T0)
    [event] = [o for o in second.observations if o.is_event]
    assert (event.check_kind, event.verdict_or_reason) == ("bot_disabled:11", "bot_disabled")
    third = run_checks(TcState([account()], [], [], [bot(False)]), second.snapshot, prices={}, now=T0)
    assert not [o for o in third.observations if o.is_event]


# -- cannot be cancelled / closed ------------------------------------------------------------------


def test_a_cancel_pending_with_an_error_fails_at_once_and_names_the_trade() -> None:
    """corpus threecommas/deal_cancel_failed_docs_silent: cancel_pending plus error_message."""
    stuck = deal(status="cancel_pending", deal_has_error=True, error_message="Invalid API key")
    result = run_checks(state(deals=[stuck]), None, prices={}, now=T0)
    [problem] = failing(result.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == ("deal_error:456", "cannot_cancel")
    assert problem.detail == (
        "deal 456 on USDT_BTC: asked to cancel it, still cancel_pending after 0 min: Invalid API key"
    )
    assert finding(problem.check_kind, problem.verdict_or_reason, problem.subject) == StuckClosing(
        StuckAction.CANCEL, "cancel_pending", 0, "Invalid API key"
    )


def test_a_close_that_hangs_without_an_error_fails_after_stuck_after() -> None:
    """corpus threecommas/smart_trade_panic_sell_pending_docs: pending is normal for a while."""
    closing = trade(status={"type": "panic_sell_pending", "title": "Closing at Market Price"})
    kind = "smart_trade_error:321"
    first = run_checks(state(trades=[closing]), None, prices={}, now=T0)
    assert failing(first.observations) == [] and first.snapshot.pending == {kind: T0}
    early = run_checks(state(trades=[closing]), first.snapshot, prices={}, now=T0 + timedelta(minutes=14))
    assert failing(early.observations) == []
    late = run_checks(state(trades=[closing]), early.snapshot, prices={}, now=T0 + timedelta(minutes=15))
    [problem] = failing(late.observations)
    assert (problem.check_kind, problem.verdict_or_reason) == (kind, "cannot_close")
    assert "still panic_sell_pending after 15 min" in problem.detail
    # The close went through: the trade is gone from the active list; its recovery still names it.
    stored = Snapshot.from_dict(json.loads(json.dumps(late.snapshot.to_dict())))
    done = run_checks(state(), stored, prices={}, now=T0 + timedelta(minutes=16))
    [gone] = [o for o in done.observations if o.check_kind == kind]
    assert gone.ok and gone.subject == {"pair": "USDT_ETH", "symbol": "ETH/USDT"}
    assert done.snapshot.pending == {} and done.snapshot.named == {}


def test_a_failed_market_close_is_read_from_market_close_status() -> None:
    """corpus threecommas/smart_trade_close_failed_docs_silent."""
    closing = trade(
        status={"type": "panic_sell_pending"},
        market_close={"status": {"basic_type": "failed", "error": "Invalid API key"}},
    )
    [problem] = failing(run_checks(state(trades=[closing]), None, prices={}, now=T0).observations)
    assert problem.verdict_or_reason == "cannot_close" and problem.detail.endswith("Invalid API key")
