"""/orders end to end: the real bot and local Telegram, real ccxt against local exchanges, local 3Commas."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.worker import Worker
from sandbox.exchanges.base import LocalKey
from sandbox.telegram import ChatMessage
from sandbox.threecommas import LocalThreeCommas
from services.core.clock import FakeClock
from services.core.vault import Credentials
from services.orders.listing_gate import COOLDOWN
from services.storage.connections import new_connection
from services.storage.models import AuditEntry, Connection
from services.threecommas.entities import Account
from services.threecommas.links import add_threecommas_connection, save_account_link
from tests.conftest import T0
from tests.harness import BotRig, running_bot

USER = 601
OTHER = 602


@pytest.fixture
async def rig(tmp_path, net, exchanges, tc) -> AsyncIterator[BotRig]:
    async with running_bot(
        f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}",
        clock=FakeClock(T0 + timedelta(minutes=30)),
        transport=net.transport,
        threecommas_api_url=tc.url,
    ) as rig:
        yield rig


async def link_exchange(rig: BotRig, exchange: str, key: LocalKey, user_id: int = USER) -> int:
    """A linked exchange connection, as /link would leave it (the wizard is tested elsewhere)."""
    rig.tg.add_user(user_id)
    await rig.say(user_id, "/start")  # creates the user row
    async with rig.app.sessions.begin() as session:
        connection = new_connection(
            rig.app.vault,
            user_id=user_id,
            exchange=exchange,
            label="Main",
            credentials=Credentials(key.api_key, key.secret, key.passphrase),
            now=rig.clock.now(),
        )
        session.add(connection)
        await session.flush()
        return connection.id


async def map_threecommas(
    rig: BotRig, tc: LocalThreeCommas, exchange_connection_id: int, market: str
) -> tuple[str, int]:
    """A 3Commas key and one account mapped onto the exchange connection; returns (tc api key, account id)."""
    key = tc.add_key()
    account_id = tc.add_account(key.api_key, market)
    async with rig.app.sessions.begin() as session:
        connection = add_threecommas_connection(
            session,
            rig.app.vault,
            user_id=USER,
            credentials=Credentials(key.api_key, key.secret),
            label="",
            now=rig.clock.now(),
        )
        await session.flush()
        account = Account.from_json({"id": account_id, "name": "Main", "market_code": market})
        await save_account_link(
            session,
            user_id=USER,
            tc_connection_id=connection.id,
            account=account,
            exchange_connection_id=exchange_connection_id,
            now=rig.clock.now(),
        )
    return key.api_key, account_id


async def showing(rig: BotRig, message_id: int, needle: str) -> ChatMessage:
    """The message once an edit (or the first send) shows ``needle``."""

    def check() -> ChatMessage | None:
        message = rig.tg.message(USER, message_id)
        return message if needle in message.text else None

    return await rig.tg.wait_for(check)


def line_of(message: ChatMessage, needle: str) -> str:
    lines = message.text.splitlines()
    index = next(i for i, line in enumerate(lines) if needle in line)
    return lines[index - 1] + " " + lines[index]


def finished_eth_deal(tc: LocalThreeCommas, tc_key: str, account: int, ended: str = "completed") -> int:
    """A deal that ended (``ended``) with its ETH/USDT take profit still resting on the exchange."""
    deal = tc.add_deal(
        tc_key,
        account,
        pair="USDT_ETH",
        status="bought",
        orders=[{"side": "sell", "price": "3700", "amount": "0.5", "created_at": T0, "status": "active"}],
    )
    tc.finish_deal(deal, status=ended)
    return deal


@pytest.fixture
async def scenario(rig, exchanges, tc):
    """Binance key with an active-deal order, an orphan of a finished deal, and a manual order."""
    binance = exchanges["binance"]
    key = binance.add_key(balances={"USDT": 10_000, "BTC": 1, "ETH": 5})
    active_id = binance.add_order(key.api_key, "BTC/USDT", "buy", "60000", "0.01", created_at=T0)
    orphan_id = binance.add_order(key.api_key, "ETH/USDT", "sell", "3700", "0.5", created_at=T0)
    manual_id = binance.add_order(key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    cid = await link_exchange(rig, "binance", key)
    tc_key, account = await map_threecommas(rig, tc, cid, "binance")
    tc.add_deal(
        tc_key,
        account,
        pair="USDT_BTC",
        status="bought",
        orders=[{"side": "buy", "price": "60000", "amount": "0.01", "created_at": T0}],
    )
    finished = finished_eth_deal(tc, tc_key, account)
    return {
        "key": key,
        "active": active_id,
        "orphan": orphan_id,
        "manual": manual_id,
        "deal": finished,
        "cid": cid,
    }


async def test_orders_marks_active_orphan_unknown_and_one_tap_cancel_frees_funds(
    rig, exchanges, tc, scenario
):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    assert "3 open orders: 🟢 1 active deal · 🟠 1 orphan · ⚪ 1 unknown" in listing.text
    # orphans first, then unknown, then active
    assert "orphan" in line_of(listing, "SELL 0.5 ETH/USDT") and "locks 0.5 ETH" in listing.text
    assert "active deal" in line_of(listing, "BUY 0.01 BTC/USDT") and "locks 600 USDT" in listing.text
    assert "unknown" in line_of(listing, "BUY 2 SOL/USDT")
    labels = [b.text for b in listing.buttons]
    assert "❌ Cancel 1" in labels and "⚠️ Cancel 2?" in labels
    assert not any(label.endswith(" 3") or label.endswith("3?") for label in labels), (
        "active order is cancellable"
    )
    assert "🧹 Cancel the orphan" in labels  # one orphan: no "all 1 orphans"
    assert all(len(b.callback_data.encode()) <= 64 for b in listing.buttons if b.callback_data)

    cancel_data = next(b.callback_data for b in listing.buttons if b.text == "❌ Cancel 1")
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    edited = await showing(rig, listing.message_id, "freed")
    assert "Cancelled SELL 0.5 ETH/USDT: freed 0.5 ETH." in edited.text
    assert scenario["orphan"] not in binance.orders and scenario["active"] in binance.orders
    assert "❌ Cancel 1" not in [b.text for b in edited.buttons]
    # The page is redrawn as it stands now: counts without the cancelled order, its line says
    # what it freed, and no funds line still counts it as locked.
    assert "2 open orders: 🟢 1 active deal · ⚪ 1 unknown" in edited.text, edited.text
    assert "cancelled" in line_of(edited, "SELL 0.5 ETH/USDT @") and "· freed 0.5 ETH" in edited.text
    assert "locks 0.5 ETH" not in edited.text and "ETH</b>" not in edited.html
    assert "\n\n\n" not in edited.text

    # A second tap on the old button: harmless, no second DELETE reaches the exchange.
    deletes = sum(1 for r in binance.requests if r.method == "DELETE")
    query = rig.tg.user_sends_callback(USER, listing.message_id, cancel_data)
    await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    await showing(rig, listing.message_id, "already cancelled")
    assert sum(1 for r in binance.requests if r.method == "DELETE") == deletes

    async with rig.app.sessions() as session:
        actions = [e.action for e in await session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["order_cancel", "order_cancel_repeat"]


async def test_tap_by_another_user_or_after_the_deal_restarted_cancels_nothing(rig, exchanges, tc, scenario):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    data = next(b.callback_data for b in listing.buttons if b.text == "❌ Cancel 1")

    rig.tg.add_user(OTHER)
    await rig.say(OTHER, "/start")
    theirs = await rig.bot.send_message(OTHER, "a message of theirs")
    query = rig.tg.user_sends_callback(OTHER, theirs.message_id, data)
    answer = await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    assert answer.text == "This button is out of date — send /orders again."
    assert scenario["orphan"] in binance.orders

    tc.set_deal(scenario["deal"], status="bought")  # the deal is active again
    query = rig.tg.user_sends_callback(USER, listing.message_id, data)
    await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    await showing(rig, listing.message_id, "active again")
    assert scenario["orphan"] in binance.orders
    async with rig.app.sessions() as session:
        refused = [
            e.detail["outcome"]
            for e in await session.scalars(select(AuditEntry))
            if e.action == "order_cancel_refused"
        ]
    assert refused == ["deal_active_again"]


async def test_unknown_order_needs_the_explicit_confirmation_and_a_read_only_key_is_explained(
    rig, exchanges, tc, scenario
):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    rig.tg.user_presses(USER, listing, "⚠️ Cancel 2?")
    ask = await showing(rig, listing.message_id, "may belong")
    confirm = next(b.callback_data for b in ask.buttons if b.text == "Yes, cancel this order")
    binance.set_key_state(scenario["key"].api_key, "read_only")
    rig.tg.user_presses(USER, ask, "Yes, cancel this order")
    result = await showing(rig, listing.message_id, "trading permission")
    assert scenario["manual"] in binance.orders
    binance.set_key_state(scenario["key"].api_key, "valid")
    query = rig.tg.user_sends_callback(USER, result.message_id, confirm)
    await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    await rig.tg.wait_for(lambda: scenario["manual"] not in binance.orders)


async def test_three_hundred_orders_page_within_telegram_limits(rig, exchanges):
    binance = exchanges["binance"]
    key = binance.add_key(balances={"USDT": 1_000_000})
    for i in range(300):
        binance.add_order(key.api_key, "XRP/USDT", "buy", f"{0.3 + i / 10000:.4f}", "10", created_at=T0)
    await link_exchange(rig, "binance", key)
    before = len(binance.requests)
    first = await rig.say(USER, "/orders")
    first = await showing(rig, first.message_id, "open orders:")
    assert "300 open orders" in first.text and "Page 1/20" in first.text
    assert len(first.html) <= 4096 and len(first.buttons) <= 100
    assert all(len(b.callback_data.encode()) <= 64 for b in first.buttons if b.callback_data)
    assert not rig.tg.errors
    rig.tg.user_presses(USER, first, "›")
    second = await showing(rig, first.message_id, "Page 2/20")
    assert "16. ⚪ unknown" in second.text
    signed = [r.path for r in binance.requests[before:] if "exchangeInfo" not in r.path]
    assert signed.count("/api/v3/openOrders") == 1


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_requests_per_orders_call(rig, exchanges, exchange):
    server = exchanges[exchange]
    key = server.add_key(balances={"USDT": 100_000, "BTC": 1})
    for i in range(30):
        server.add_order(key.api_key, "BTC/USDT", "buy", str(50000 + i), "0.001", created_at=T0)
    expected = 30
    if exchange != "binance":  # Binance USDⓈ-M is the separate ccxt exchange binanceusdm
        server.add_order(key.api_key, "BTC/USDT:USDT", "sell", "70000", "0.01", created_at=T0)
        expected = 31
    await link_exchange(rig, exchange, key)
    await rig.app.hub.markets(exchange)  # shared and loaded once per process, not per /orders
    before = len(server.requests)
    message = await rig.say(USER, "/orders")
    message = await showing(rig, message.message_id, "open orders:")
    assert f"{expected} open orders" in message.text
    calls = [(r.method, r.path) for r in server.requests[before:]]
    print(f"\n{exchange}: {len(calls)} requests per /orders: {calls}")
    assert len(calls) <= 5  # Bybit: ccxt looks up the account mode (query-api + account/info) per client


async def test_orders_and_cancel_on_a_revoked_key_show_the_key_verdict_and_its_fix(
    rig, exchanges, tc, scenario
):
    """A revoked key is not an outage: /orders and an old Cancel button name the key problem and
    its fix instead of "the exchange did not answer; try again"."""
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    binance.set_key_state(scenario["key"].api_key, "revoked")

    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    edited = await showing(rig, listing.message_id, "refused the key")
    assert "API key revoked, deleted or never existed" in edited.text
    assert "create a new one" in edited.text and "Nothing was cancelled." in edited.text
    assert "did not answer" not in edited.text
    assert scenario["orphan"] in binance.orders

    rig.clock.advance(COOLDOWN.total_seconds())  # the next /orders lists again instead of showing the last
    reply = await rig.say(USER, "/orders")
    reply = await showing(rig, reply.message_id, "refused the key")
    assert "API key revoked, deleted or never existed" in reply.text and "create a new one" in reply.text
    assert "try again in a minute" not in reply.text


@pytest.mark.attack("cancel: the exchange carries the cancel out but the answer is lost; a second tap")
async def test_a_cancel_whose_answer_is_lost_is_reconciled_not_resent(rig, exchanges, tc, scenario):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    data = next(b.callback_data for b in listing.buttons if b.text == "❌ Cancel 1")
    binance.inject("lost_answer", times=1, method="DELETE")  # cancelled, then a 504 (Binance: "UNKNOWN")
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    # GET /api/v3/order shows the order CANCELED: the late answer is reconciled as our cancel.
    edited = await showing(rig, listing.message_id, "SELL 0.5 ETH/USDT is cancelled")
    assert "nothing was cancelled" not in edited.text and "did not answer" not in edited.text
    assert scenario["orphan"] not in binance.orders

    query = rig.tg.user_sends_callback(USER, listing.message_id, data)
    await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    await showing(rig, listing.message_id, "already cancelled")
    assert sum(1 for r in binance.requests if r.method == "DELETE") == 1


@pytest.mark.attack("cancel: no answer and the order is still open; the retry cancels once")
async def test_a_cancel_that_never_arrived_may_be_retried(rig, exchanges, tc, scenario):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    data = next(b.callback_data for b in listing.buttons if b.text == "❌ Cancel 1")
    binance.inject("status_5xx", times=1, method="DELETE", status=503)
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    await showing(rig, listing.message_id, "is still open")
    assert scenario["orphan"] in binance.orders
    rig.tg.user_sends_callback(USER, listing.message_id, data)
    await showing(rig, listing.message_id, "Cancelled SELL 0.5 ETH/USDT: freed 0.5 ETH.")
    assert scenario["orphan"] not in binance.orders


@pytest.mark.attack("cancel: a slow exchange lets Telegram's callback query expire unanswered")
async def test_a_cancel_tap_is_answered_before_the_exchange_is_asked(rig, exchanges, tc, scenario):
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    binance.inject("timeout")  # every private request hangs until released
    query = rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    answer = await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))
    assert "Cancelling" in answer.text
    binance.clear_faults()
    binance.release_hung()
    await showing(rig, listing.message_id, "Cancelled SELL 0.5 ETH/USDT: freed 0.5 ETH.")


async def test_an_orphan_filled_meanwhile_is_reported_filled_not_cancelled(rig, exchanges, tc, scenario):
    """The local Binance answers GET /api/v3/order for finished orders, so the filled branch runs."""
    binance = exchanges["binance"]
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "open orders:")
    binance.fill_order(scenario["key"].api_key, scenario["orphan"])
    deletes = sum(1 for r in binance.requests if r.method == "DELETE")
    rig.tg.user_presses(USER, listing, "❌ Cancel 1")
    edited = await showing(rig, listing.message_id, "already filled")
    assert "SELL 0.5 ETH/USDT was already filled; nothing to cancel." in edited.text
    assert sum(1 for r in binance.requests if r.method == "DELETE") == deletes
    assert any(r.method == "GET" and r.path == "/api/v3/order" for r in binance.requests)


async def test_empty_list_is_tight_and_an_unmapped_3commas_key_asks_for_the_mapping(rig, exchanges, tc):
    key = exchanges["binance"].add_key(balances={"USDT": 100})
    await link_exchange(rig, "binance", key)
    tc_key = tc.add_key()
    async with rig.app.sessions.begin() as session:  # 3Commas linked, its account mapped to nothing
        add_threecommas_connection(
            session,
            rig.app.vault,
            user_id=USER,
            credentials=Credentials(tc_key.api_key, tc_key.secret),
            label="",
            now=rig.clock.now(),
        )
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "no open orders")
    assert "\n\n\n" not in listing.text and not listing.text.endswith("\n")
    assert "Map the account" in listing.text and "Link 3Commas" not in listing.text


@pytest.mark.parametrize("ended", ["completed", "cancelled", "failed"])
async def test_an_orphan_says_how_its_deal_ended(rig, exchanges, tc, ended):
    """Issue 15 §10: "finished deal" for a deal the user cancelled was wrong; say which ending."""
    binance = exchanges["binance"]
    key = binance.add_key(balances={"USDT": 1_000, "ETH": 1})
    binance.add_order(key.api_key, "ETH/USDT", "sell", "3700", "0.5", created_at=T0)
    cid = await link_exchange(rig, "binance", key)
    tc_key, account = await map_threecommas(rig, tc, cid, "binance")
    deal = finished_eth_deal(tc, tc_key, account, ended)
    listing = await showing(rig, (await rig.say(USER, "/orders")).message_id, "1 open order:")
    assert f"🟠 orphan · deal #{deal} ({ended})" in listing.text, listing.text
    assert "finished deal" not in listing.text and "deal:" not in listing.text


@pytest.mark.attack("flooding Orders taps starves others")
async def test_a_flood_of_orders_taps_lists_once_and_another_users_check_runs_on_time(rig, exchanges):
    """40 taps on Refresh and Orders while a listing hangs at the exchange: one listing runs, every
    tap is answered at once, and another user's scheduled check goes through meanwhile."""
    binance = exchanges["binance"]
    key = binance.add_key(balances={"USDT": 10_000})
    binance.add_order(key.api_key, "SOL/USDT", "buy", "100", "2", created_at=T0)
    cid = await link_exchange(rig, "binance", key)
    other_key = binance.add_key(balances={"USDT": 5})
    other = await link_exchange(rig, "binance", other_key, user_id=OTHER)
    listing = await rig.say(USER, "/orders")
    listing = await showing(rig, listing.message_id, "1 open order")

    def listings_of(api_key: str) -> int:
        return sum(1 for r in binance.requests if r.path == "/api/v3/openOrders" and r.api_key == api_key)

    binance.add_order(key.api_key, "XRP/USDT", "buy", "0.5", "20", created_at=T0)
    rig.clock.advance(COOLDOWN.total_seconds())  # the last listing is old enough: one more may run
    binance.inject("timeout", times=1)  # ...and it hangs at the exchange while the taps keep coming
    refresh = next(b.callback_data for b in listing.buttons if "Refresh" in b.text)
    orders = await rig.connection_button("orders", cid)
    sent_before = len(rig.tg.bot_messages(USER))
    first = rig.tg.user_sends_callback(USER, listing.message_id, refresh)
    assert (await rig.tg.wait_for(lambda: rig.tg.callback_answer(first))).text == "Loading open orders…"
    taps = [rig.tg.user_sends_callback(USER, listing.message_id, (refresh, orders)[i % 2]) for i in range(39)]
    answers = {(await rig.tg.wait_for(lambda q=q: rig.tg.callback_answer(q))).text for q in taps}
    assert answers == {"⏳ Already loading these orders; the list shows in a moment."}
    async with asyncio.timeout(5):
        while binance.faults:  # noqa: ASYNC110 - the local exchange offers no event for it
            await asyncio.sleep(0.01)

    # The other user's check is due now; the scheduler's poll runs it at once, not after the flood.
    worker = Worker(rig.app, rig.bot)
    async with asyncio.timeout(5):
        await worker.poll()
    async with rig.app.sessions() as session:
        checked = await session.get(Connection, other)
    assert checked.last_check_at == rig.clock.now() and checked.verdict == "ok"

    binance.release_hung()
    shown = await showing(rig, listing.message_id, "2 open orders")  # the first tap's Refresh
    refresh = next(b.callback_data for b in shown.buttons if "Refresh" in b.text)
    more = [rig.tg.user_sends_callback(USER, listing.message_id, (refresh, orders)[i % 2]) for i in range(10)]
    later = [(await rig.tg.wait_for(lambda q=q: rig.tg.callback_answer(q))).text for q in more]
    assert all(text.startswith("These orders were listed moments ago.") for text in later), later
    assert listings_of(key.api_key) == 2  # the /orders before the flood, and one for 50 taps
    assert len(rig.tg.bot_messages(USER)) == sent_before  # the list was redrawn; taps are toasts
    assert not rig.tg.errors


async def test_a_user_over_their_share_is_told_when_to_try_again(tmp_path, net, exchanges):
    """A share so small that one listing outgrows it: nothing past the budget is sent, and the
    user reads when to come back instead of a hang or "the exchange did not answer"."""
    binance = exchanges["binance"]
    async with running_bot(
        f"sqlite+aiosqlite:///{tmp_path / 'share.db'}",
        clock=FakeClock(T0 + timedelta(minutes=30)),
        transport=net.transport,
        exchange_weight_per_minute={"binance": 400},  # our share 200, a user's 40 a minute
    ) as rig:
        key = binance.add_key(balances={"USDT": 100})
        binance.add_order(key.api_key, "SOL/USDT", "buy", "10", "2", created_at=T0)
        await link_exchange(rig, "binance", key)
        reply = await rig.say(USER, "/orders")
        reply = await showing(rig, reply.message_id, "Try again in")
        assert re.fullmatch(
            r"⏳ You have asked for many listings just now\. Try again in \d+ seconds\.", reply.text
        )
        signed = [r.path for r in binance.requests if r.api_key == key.api_key]
        assert signed == ["/api/v3/openOrders"]  # the balance call did not fit the share: not sent
