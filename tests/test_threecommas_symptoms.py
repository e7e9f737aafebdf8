"""3Commas symptoms of the reset, through the real bot: the local 3Commas reports, the local
exchange's public ticker says where the market really is, the local Telegram shows what the
trader hears. Time is the FakeClock's."""

from __future__ import annotations

from tests.test_monitoring import Monitor, monitor


def count(m: Monitor, *needles: str) -> int:
    return sum(all(n in x.text for n in needles) for x in m.messages(1))


RU = 2
"""A second trader, whose Telegram speaks Russian, with the same story on a 3Commas key of their own."""


def count_for(m: Monitor, user: int, *needles: str) -> int:
    return sum(all(n in x.text for n in needles) for x in m.messages(user))


async def test_smart_trade_stale_upnl_alerts_once_and_recovers_once(tmp_path) -> None:
    """Profit and current price of an entered SmartTrade freeze while Binance's ticker moves:
    one alert naming the SmartTrade, with the profit it shows and the one at the live price (in
    the trader's language); when 3Commas follows the market again: one recovery."""
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, binance = m.tc, m.exchanges["binance"]
        assert tc is not None
        tc.set_price("USDT_SOL", "150")
        trades = {}
        for user, language in ((1, "en"), (RU, "ru")):
            _, api_key = await m.link_threecommas(user, tc, language=language)
            account = tc.add_account(api_key, exchange="binance", name="Main")
            trades[user] = tc.add_smart_trade(
                api_key, account, pair="USDT_SOL", units="10", order_type="market",
                take_profit=[{"price": "170", "volume": 100}],
            )  # fmt: skip
        await m.tick(0)  # the first look only records what exists
        assert m.messages(1) == m.messages(RU) == []

        for trade in trades.values():
            tc.freeze_smart_trade(trade)
        binance.set_price("SOL/USDT", "156")  # the market moves 4 %; 3Commas' figures do not
        await m.run_for(40 * 60, step=60)  # the poll interval
        subject = f"SmartTrade #{trades[1]} SOL/USDT"
        assert count(m, subject, "UPNL stopped updating") == 1
        [alert] = [x for x in m.messages(1) if "UPNL stopped updating" in x.text]
        assert "3Commas shows a profit of 0.00 USD; at the live price 156 it is 60.00 USD" in alert.text
        assert "Unchanged for 17 minutes." in alert.text, alert.text
        ru_subject = f"SmartTrade #{trades[RU]} SOL/USDT"
        [ru_alert] = [x for x in m.messages(RU) if "UPNL перестал обновляться" in x.text]
        assert ru_subject in ru_alert.text, ru_alert.text
        assert (
            "3Commas показывает прибыль 0,00 USD, а по текущей цене 156 она составляет 60,00 USD"
            in ru_alert.text
        ), ru_alert.text
        assert "Без изменений 17 минут." in ru_alert.text and "live price" not in ru_alert.text

        for trade in trades.values():
            tc.freeze_smart_trade(trade, frozen=False)
        tc.set_price("USDT_SOL", "156")  # 3Commas follows the market again
        await m.run_for(10 * 60, step=60)  # the poll interval
        assert count(m, subject, "resolved after") == 1
        assert count_for(m, RU, ru_subject, "проблема устранена через") == 1, m.rig.tg.transcript(RU)
        await m.run_for(30 * 60, step=60)  # the poll interval
        assert count(m, subject, "UPNL stopped updating") == 1
        assert count(m, subject, "resolved after") == 1
        assert count_for(m, RU, "UPNL перестал обновляться") == 1


async def test_a_deal_and_a_smart_trade_3commas_cannot_cancel_or_close_alert_once_and_recover_once(
    tmp_path,
) -> None:
    """The trader cancels a deal and closes a SmartTrade in 3Commas while the account's exchange
    key is broken: both stay pending with the exchange's complaint (corpus threecommas/
    deal_cancel_failed_docs_silent, smart_trade_close_failed_docs_silent). One alert each, naming
    the trade and what to do; once the key works and the request goes through, one recovery each."""
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc = m.tc
        assert tc is not None
        tc.set_price("USDT_ETH", "3500")  # where the local Binance's ticker is too
        tc.set_price("USDT_SOL", "150")
        accounts, deals, trades = {}, {}, {}
        for user, language in ((1, "en"), (RU, "ru")):
            _, api_key = await m.link_threecommas(user, tc, language=language)
            accounts[user] = account = tc.add_account(api_key, exchange="binance", name="Main")
            deals[user] = tc.add_deal(api_key, account, pair="USDT_ETH", bought_amount="0.5")
            trades[user] = tc.add_smart_trade(
                api_key, account, pair="USDT_SOL", units="10", order_type="market",
                take_profit=[{"price": "170", "volume": 100}],
            )  # fmt: skip
        deal, trade = deals[1], trades[1]
        await m.tick(0)
        assert m.messages(1) == m.messages(RU) == []

        for user in (1, RU):
            tc.set_account(accounts[user], api_key_invalid=True)
            tc.request_deal_action(deals[user], "cancel")
            tc.request_smart_trade_action(trades[user], "close")
        await m.run_for(40 * 60, step=60)  # the poll interval
        [cannot_cancel] = [x for x in m.messages(1) if "3Commas cannot cancel it" in x.text]
        assert f"deal #{deal} ETH/USDT" in cannot_cancel.text
        assert "still cancel_pending" in cannot_cancel.text and "Invalid API key" in cannot_cancel.text
        assert "/orders" in cannot_cancel.text and "update the key in 3Commas" in cannot_cancel.text
        [cannot_close] = [x for x in m.messages(1) if "cannot close it at market price" in x.text]
        assert f"SmartTrade #{trade} SOL/USDT" in cannot_close.text
        assert "still panic_sell_pending" in cannot_close.text
        [ru_cancel] = [x for x in m.messages(RU) if "3Commas не может её отменить" in x.text]
        assert f"сделка #{deals[RU]} ETH/USDT" in ru_cancel.text, ru_cancel.text
        assert "Отмена запрошена, но статус всё ещё cancel_pending" in ru_cancel.text, ru_cancel.text
        assert "3Commas сообщает: Invalid API key" in ru_cancel.text and "/orders" in ru_cancel.text
        [ru_close] = [x for x in m.messages(RU) if "3Commas не может закрыть её по рынку" in x.text]
        assert f"SmartTrade #{trades[RU]} SOL/USDT" in ru_close.text
        assert "Закрытие по рынку запрошено, но статус всё ещё panic_sell_pending спустя" in ru_close.text
        assert not [x for x in m.messages(RU) if "asked to" in x.text.lower() or "still" in x.text]

        for user in (1, RU):
            tc.set_account(accounts[user], api_key_invalid=False)
            tc.request_deal_action(deals[user], "cancel")
            tc.request_smart_trade_action(trades[user], "close")
        await m.run_for(10 * 60, step=60)  # the poll interval
        assert count(m, f"deal #{deal} ETH/USDT", "resolved after") == 1
        assert count(m, f"SmartTrade #{trade} SOL/USDT", "resolved after") == 1, "\n---\n".join(
            x.text for x in m.messages(1)
        )
        await m.run_for(20 * 60, step=60)  # the poll interval
        assert count(m, "3Commas cannot cancel it") == 1
        assert count(m, "cannot close it at market price") == 1
