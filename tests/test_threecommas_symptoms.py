"""3Commas symptoms of the reset, through the real bot: the local 3Commas reports, the local
exchange's public ticker says where the market really is, the local Telegram shows what the
trader hears. Time is the FakeClock's."""

from __future__ import annotations

from tests.test_monitoring import Monitor, monitor


def count(m: Monitor, *needles: str) -> int:
    return sum(all(n in x.text for n in needles) for x in m.messages(1))


async def test_smart_trade_stale_upnl_alerts_once_and_recovers_once(tmp_path) -> None:
    """Profit and current price of an entered SmartTrade freeze while Binance's ticker moves:
    one alert naming the SmartTrade; when 3Commas follows the market again: one recovery."""
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, binance = m.tc, m.exchanges["binance"]
        assert tc is not None
        _, api_key = await m.link_threecommas(1, tc)
        account = tc.add_account(api_key, exchange="binance", name="Main")
        tc.set_price("USDT_SOL", "150")
        trade = tc.add_smart_trade(
            api_key, account, pair="USDT_SOL", units="10", order_type="market",
            take_profit=[{"price": "170", "volume": 100}],
        )  # fmt: skip
        await m.tick(0)  # the first look only records what exists
        assert m.messages(1) == []

        tc.freeze_smart_trade(trade)
        binance.set_price("SOL/USDT", "156")  # the market moves 4 %; 3Commas' figures do not
        await m.run_for(40 * 60, step=60)  # the poll interval
        subject = f"SmartTrade #{trade} SOL/USDT"
        assert count(m, subject, "UPNL stopped updating") == 1
        [alert] = [x for x in m.messages(1) if "UPNL stopped updating" in x.text]
        assert "at the live price 156.0 it is 60.00" in alert.text

        tc.freeze_smart_trade(trade, frozen=False)
        tc.set_price("USDT_SOL", "156")  # 3Commas follows the market again
        await m.run_for(10 * 60, step=60)  # the poll interval
        assert count(m, subject, "resolved after") == 1
        await m.run_for(30 * 60, step=60)  # the poll interval
        assert count(m, subject, "UPNL stopped updating") == 1
        assert count(m, subject, "resolved after") == 1


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
        _, api_key = await m.link_threecommas(1, tc)
        account = tc.add_account(api_key, exchange="binance", name="Main")
        tc.set_price("USDT_ETH", "3500")  # where the local Binance's ticker is too
        tc.set_price("USDT_SOL", "150")
        deal = tc.add_deal(api_key, account, pair="USDT_ETH", bought_amount="0.5")
        trade = tc.add_smart_trade(
            api_key, account, pair="USDT_SOL", units="10", order_type="market",
            take_profit=[{"price": "170", "volume": 100}],
        )  # fmt: skip
        await m.tick(0)
        assert m.messages(1) == []

        tc.set_account(account, api_key_invalid=True)
        tc.request_deal_action(deal, "cancel")
        tc.request_smart_trade_action(trade, "close")
        await m.run_for(40 * 60, step=60)  # the poll interval
        [cannot_cancel] = [x for x in m.messages(1) if "3Commas cannot cancel it" in x.text]
        assert f"deal #{deal} ETH/USDT" in cannot_cancel.text
        assert "still cancel_pending" in cannot_cancel.text and "Invalid API key" in cannot_cancel.text
        assert "/orders" in cannot_cancel.text and "update the key in 3Commas" in cannot_cancel.text
        [cannot_close] = [x for x in m.messages(1) if "cannot close it at market price" in x.text]
        assert f"SmartTrade #{trade} SOL/USDT" in cannot_close.text
        assert "still panic_sell_pending" in cannot_close.text

        tc.set_account(account, api_key_invalid=False)
        tc.request_deal_action(deal, "cancel")
        tc.request_smart_trade_action(trade, "close")
        await m.run_for(10 * 60, step=60)  # the poll interval
        assert count(m, f"deal #{deal} ETH/USDT", "resolved after") == 1
        assert count(m, f"SmartTrade #{trade} SOL/USDT", "resolved after") == 1, "\n---\n".join(
            x.text for x in m.messages(1)
        )
        await m.run_for(20 * 60, step=60)  # the poll interval
        assert count(m, "3Commas cannot cancel it") == 1
        assert count(m, "cannot close it at market price") == 1
