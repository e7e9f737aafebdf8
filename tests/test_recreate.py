"""Recreate a failed SmartTrade / DCA deal through the bot against the local 3Commas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.keyboards import recreate_button
from sandbox.threecommas import LocalThreeCommas
from services.core.vault import Credentials
from services.storage.button_tokens import failed_deal_token
from services.storage.models import FailedDeal
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.links import add_threecommas_connection
from services.threecommas.recreate import recreate_params, store_failed_deal
from tests.harness import BotRig, running_bot

USER = 701


@pytest.fixture
async def rig(tmp_path, tc) -> AsyncIterator[BotRig]:
    async with running_bot(f"sqlite+aiosqlite:///{tmp_path / 'rc.db'}", threecommas_api_url=tc.url) as rig:
        rig.tg.add_user(USER)
        await rig.say(USER, "/start")
        yield rig


async def failed_alert(
    rig: BotRig,
    tc: LocalThreeCommas,
    *,
    can_write: bool = True,
    dca: bool = False,
    user: int = USER,
    bought: str | None = None,
):
    """A failed deal stored as the monitoring engine would, and the alert carrying its button."""
    key = tc.add_key(can_write=can_write)
    account = tc.add_account(key.api_key, "binance")
    if dca:
        item_id = tc.add_deal(key.api_key, account, pair="USDT_ETH", status="bought", bought_amount=bought)
        tc.fail_deal(item_id)
    else:
        item_id = tc.add_smart_trade(
            key.api_key,
            account,
            pair="USDT_BTC",
            side="buy",
            units="0.01",
            price="60000",
            take_profit=[{"price": "66000", "volume": 100}],
            stop_loss={"price": "55000"},
        )
        tc.fail_smart_trade(item_id)
    credentials = Credentials(key.api_key, key.secret)
    async with ThreeCommasAccess(tc.url).open(credentials) as client:
        item = await (client.deal(item_id) if dca else client.smart_trade(item_id))
    async with rig.app.sessions.begin() as session:
        connection = add_threecommas_connection(
            session, rig.app.vault, user_id=user, credentials=credentials, label="", now=rig.clock.now()
        )
        await session.flush()
        row_id = await store_failed_deal(
            session,
            user_id=user,
            tc_connection_id=connection.id,
            plan=recreate_params(item).to_dict(),
            error="Invalid API key",
            now=rig.clock.now(),
        )
        version = failed_deal_token(await session.get(FailedDeal, row_id))
    with rig.app.i18n.context(), rig.app.i18n.use_locale("en"):
        markup = recreate_button(row_id, version)
    return await rig.bot.send_message(user, "SmartTrade failed", reply_markup=markup)


async def confirm(rig: BotRig, alert) -> str:
    rig.tg.user_presses(USER, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    rig.tg.user_presses(USER, shown, "✅ Recreate")
    await rig.tg.wait_for(lambda: rig.tg.message(USER, shown.message_id).edits)
    return shown.text + "\n" + rig.tg.message(USER, shown.message_id).text


async def test_recreate_smart_trade_shows_parameters_and_sends_them(rig, tc):
    alert = await failed_alert(rig, tc)
    rig.tg.user_presses(USER, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    for part in (
        "Pair: BTC/USDT",
        "Side: buy",
        "Amount: 0.01 (limit 60000)",
        "Take profit: 66000 × 100%",
        "Stop loss: 55000",
    ):
        assert part in shown.text
    go = shown.buttons[0].callback_data
    rig.tg.user_presses(USER, shown, "✅ Recreate")
    await rig.tg.wait_for(
        lambda: "3Commas created smart_trade:" in rig.tg.message(USER, shown.message_id).text
    )
    posts = [r for r in tc.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].path.endswith("/v2/smart_trades")
    body = posts[0].body
    assert body["pair"] == "USDT_BTC" and body["position"] == {
        "type": "buy",
        "order_type": "limit",
        "units": {"value": "0.01"},
        "price": {"value": "60000"},
    }
    assert body["take_profit"]["steps"][0]["price"]["value"] == "66000"
    assert body["stop_loss"]["conditional"]["price"]["value"] == "55000"

    # A second confirmation (an old button, a double tap) sends nothing.
    query = rig.tg.user_sends_callback(USER, shown.message_id, go)
    await rig.tg.wait_for(lambda: "Already recreated" in rig.tg.message(USER, shown.message_id).text)
    assert rig.tg.callback_answer(query) is not None
    assert len([r for r in tc.requests if r.method == "POST"]) == 1


async def test_recreate_dca_deal_starts_a_new_deal_on_the_bot(rig, tc):
    alert = await failed_alert(rig, tc, dca=True)
    text = await confirm(rig, alert)
    assert "Pair: ETH/USDT" in text and "DCA bot" in text
    posts = [r for r in tc.requests if r.method == "POST"]
    assert (
        len(posts) == 1
        and posts[0].path.endswith("/start_new_deal")
        and posts[0].body == {"pair": "USDT_ETH"}
    )
    assert "3Commas created deal:" in text


async def test_a_russian_trader_reads_what_will_differ_in_russian(rig, tc):
    """The plan's warnings (the bot's settings of today, coins the old deal left bought) are typed
    and worded in the trader's language, like the parameters above them."""
    ru = USER + 1
    rig.tg.add_user(ru, language_code="ru")
    await rig.say(ru, "/start")
    alert = await failed_alert(rig, tc, dca=True, user=ru, bought="0.5")
    rig.tg.user_presses(ru, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(ru, contains="с точно такими параметрами")
    assert "Пара: ETH/USDT" in shown.text, shown.text
    assert (
        "⚠️ Новая сделка использует текущие настройки бота (у старой сделки были: тейк-профит 1.5 %, "
        "базовый ордер 10 USDT)."
    ) in shown.text, shown.text
    assert "⚠️ Старая сделка уже купила 0.5 ETH; новая сделка покупает заново и их не продаёт." in (shown.text)
    assert "The new deal" not in shown.text and "bought" not in shown.text

    english = await failed_alert(rig, tc, dca=True, bought="0.5")
    rig.tg.user_presses(USER, english.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    assert "⚠️ The new deal uses the bot's current settings" in shown.text, shown.text
    assert "⚠️ The old deal had bought 0.5 ETH; the new deal buys again, it does not sell those." in shown.text


async def test_read_only_key_is_told_it_needs_write_permission(rig, tc):
    alert = await failed_alert(rig, tc, can_write=False)
    text = await confirm(rig, alert)
    assert "needs write permission" in text
    assert [r.status for r in tc.requests if r.method == "POST"] == [403]


def _edits(rig: BotRig, message_id: int) -> list[str]:
    """Every text the bot put into one message, in order (what the user saw, step by step)."""
    return [
        r.params.get("text", "")
        for r in rig.tg.requests
        if r.method == "editMessageText" and int(r.params.get("message_id", 0)) == message_id
    ]


async def _trades_created(tc: LocalThreeCommas) -> int:
    return sum(1 for r in tc.requests if r.method == "POST" and r.path.endswith("/v2/smart_trades"))


@pytest.mark.attack("recreate: the create answer is lost but 3Commas created it; a second tap")
async def test_a_lost_create_answer_is_reconciled_and_never_creates_twice(rig, tc):
    alert = await failed_alert(rig, tc)
    rig.tg.user_presses(USER, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    go = shown.buttons[0].callback_data
    tc.lose_answers(1, carried_out=True)  # 3Commas creates the trade; the gateway answers 504
    rig.tg.user_presses(USER, shown, "✅ Recreate")
    await rig.tg.wait_for(lambda: "answered late" in rig.tg.message(USER, shown.message_id).text)
    steps = _edits(rig, shown.message_id)
    assert "checking whether it was created" in steps[0] and "did create smart_trade:" in steps[-1]
    assert "refused" not in " ".join(steps)

    query = rig.tg.user_sends_callback(USER, shown.message_id, go)  # the user taps again
    await rig.tg.wait_for(lambda: "Already recreated" in rig.tg.message(USER, shown.message_id).text)
    assert rig.tg.callback_answer(query) is not None
    assert await _trades_created(tc) == 1  # exactly one create request ever left
    assert len(tc._smart_trades) == 2  # the failed original and its one replacement


@pytest.mark.attack("recreate: the create never reached 3Commas; the retry creates exactly one")
async def test_a_create_that_never_arrived_is_reconciled_then_may_be_retried(rig, tc):
    alert = await failed_alert(rig, tc)
    rig.tg.user_presses(USER, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    go = shown.buttons[0].callback_data
    tc.lose_answers(1, carried_out=False)
    rig.tg.user_presses(USER, shown, "✅ Recreate")
    await rig.tg.wait_for(lambda: "did not create it" in rig.tg.message(USER, shown.message_id).text)
    assert len(tc._smart_trades) == 1
    rig.tg.user_sends_callback(USER, shown.message_id, go)
    await rig.tg.wait_for(
        lambda: "3Commas created smart_trade:" in rig.tg.message(USER, shown.message_id).text
    )
    assert await _trades_created(tc) == 2 and len(tc._smart_trades) == 2


@pytest.mark.attack("recreate: 3Commas still down after a lost answer; nothing is sent again")
async def test_an_unverifiable_create_is_not_sent_again(rig, tc):
    alert = await failed_alert(rig, tc)
    rig.tg.user_presses(USER, alert.message_id, 0)
    shown = await rig.tg.wait_for_bot_message(USER, contains="exactly these parameters")
    go = shown.buttons[0].callback_data
    tc.lose_answers(1, carried_out=True, down_after=2)  # and both reconciliations find it down
    rig.tg.user_presses(USER, shown, "✅ Recreate")
    await rig.tg.wait_for(lambda: "cannot be asked yet" in rig.tg.message(USER, shown.message_id).text)
    rig.tg.user_sends_callback(USER, shown.message_id, go)
    await rig.tg.wait_for(lambda: len(_edits(rig, shown.message_id)) >= 4)
    assert "cannot be asked yet" in rig.tg.message(USER, shown.message_id).text
    assert await _trades_created(tc) == 1
