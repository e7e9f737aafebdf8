"""Rough edges a new user hit (issue 15), each checked where the user sees it: through the real
Dispatcher and Bot, the local Telegram and real ccxt against the local exchanges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bot.i18n import build_i18n
from bot.notifications import render
from services.core.verdicts import Verdict
from services.monitoring.events import Alert, Notice, Target
from tests.harness import BotRig, running_bot

USER = 701
EGRESS = ("203.0.113.7", "2001:db8::7")
CODED = "<code>203.0.113.7</code>, <code>2001:db8::7</code>"


@pytest.fixture
async def rig(tmp_path, net, exchanges) -> AsyncIterator[BotRig]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'polish.db'}"
    async with running_bot(url, transport=net.transport, egress_ips=EGRESS) as rig:
        yield rig


# ----------------------------------------------------------------------------- §2, §6, §10: link-time wording


async def test_ip_restricted_key_at_link_names_our_ips_and_the_way_on(rig, exchanges):
    key = exchanges["bybit"].add_key()
    exchanges["bybit"].set_key_state(key.api_key, "ip_restricted")
    reply = await rig.say(USER, f"/link bybit {key.api_key} {key.secret}")
    assert "did not accept the key" in reply.text, rig.tg.transcript(USER)
    assert CODED in reply.html
    assert "send /link again" in reply.text
    assert "Update API key" not in reply.text  # no such button at link time
    assert reply.text.count("Nothing was saved") == 1


async def test_unreachable_exchange_at_link_is_not_blamed_on_the_key(rig, exchanges):
    exchanges["bybit"].inject("status_5xx", times=20)
    key = exchanges["bybit"].add_key()
    reply = await rig.say(USER, f"/link bybit {key.api_key} {key.secret}")
    assert "could not check the key" in reply.text, rig.tg.transcript(USER)
    assert "Nothing to do on your side" not in reply.text
    assert "Send /link again in a few minutes" in reply.text
    assert reply.text.count("Nothing was saved") == 1


async def test_key_without_whitelist_gets_the_ips_to_whitelist(rig, exchanges):
    key = exchanges["binance"].add_key()
    reply = await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    assert "linked" in reply.text, rig.tg.transcript(USER)
    assert "No IP whitelist" in reply.text and CODED in reply.html


# ----------------------------------------------------------------------------- §6: /help, /status, alerts


async def test_help_and_status_say_where_keysentry_connects_from(rig, exchanges):
    assert CODED in (await rig.say(USER, "/help")).html
    key = exchanges["okx"].add_key()
    await rig.say(USER, f"/link okx {key.api_key} {key.secret} {key.passphrase}")
    assert CODED in (await rig.say(USER, "/status")).html


def test_ip_alert_names_the_configured_ips():
    i18n = build_i18n()
    notice = Notice(
        Target(1, "binance", "Main"),
        Alert(Verdict.IP_NOT_ALLOWED, "request ip: 198.51.100.1", datetime(2026, 1, 1, tzinfo=UTC)),
    )
    with i18n.context(), i18n.use_locale("en"):
        text = render(notice, EGRESS)
        fallback = render(notice)
    assert CODED in text and "198.51.100.1" not in text
    assert "<code>198.51.100.1</code>" in fallback  # without EGRESS_IPS: what the exchange saw


# ----------------------------------------------------------------------------- §7: mutes are visible


async def test_status_marks_muted_connections_and_mute_lists_them_with_unmute(rig, exchanges):
    key = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    menu = await rig.say(USER, "/mute")
    assert "Muted now" not in menu.text
    await rig.press(USER, menu, "Binance, 24 h")
    status = await rig.say(USER, "/status")
    assert "🔕 until" in status.text and "UTC" in status.text, status.text
    menu = await rig.say(USER, "/mute")
    assert "Muted now" in menu.text and "Binance" in menu.text
    await rig.press(USER, menu, "Unmute Binance")
    assert "🔕" not in (await rig.say(USER, "/status")).text
    assert "Muted now" not in (await rig.say(USER, "/mute")).text


async def test_muting_everything_shows_on_status(rig, exchanges):
    key = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    await rig.press(USER, await rig.say(USER, "/mute"), "All, 1 h")
    status = await rig.say(USER, "/status")
    assert "All alerts muted until" in status.text and "🔕 until" in status.text


# ----------------------------------------------------------------------------- §9: plurals and locale formats


async def test_russian_user_sees_russian_number_format_and_plural_forms(rig, exchanges):
    rig.tg.add_user(USER + 1, language_code="ru")
    key = exchanges["binance"].add_key(balances={"USDT": 2500, "BTC": 0.05, "ETH": 1.2, "SOL": 3})
    reply = await rig.say(USER + 1, f"/link binance {key.api_key} {key.secret}")
    text = reply.text.replace("\u00a0", " ").replace("\u202f", " ")
    assert "2 500,00" in text and "2,500.00" not in text, text
    assert "0,05 BTC" in text
    menu = await rig.say(USER + 1, "/mute")
    assert any("7 дней" in b.text for b in menu.buttons), [b.text for b in menu.buttons]
