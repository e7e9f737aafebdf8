"""Rough edges a new user hit (issue 15), each checked where the user sees it: through the real
Dispatcher and Bot, the local Telegram and real ccxt against the local exchanges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from bot.i18n import build_i18n
from bot.notifications import render
from bot.views.threecommas import (
    account_key_alert,
    account_lines,
    cancel_confirmation,
    checklist,
    recreated,
)
from sandbox.telegram import ChatMessage
from services.core.vault import Credentials, mask, redact, remember
from services.core.verdicts import Verdict
from services.monitoring.events import Alert, Notice, Target
from services.storage import audit
from services.storage.models import Connection, FailedDeal
from services.threecommas.checklist import ChecklistState
from services.threecommas.recreate import RecreateOutcome, RecreateResult
from tests.harness import BotRig, running_bot
from tests.test_monitoring import monitor
from tests.test_sandbox_run import sandbox_commands

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
    await rig.press(USER, menu, "🔕 Binance ·")
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


# ----------------------------------------------------------------------------- §1: one key, one connection


async def test_the_same_key_twice_is_refused_and_names_the_connection_that_holds_it(rig, exchanges):
    key = exchanges["binance"].add_key()
    hint = f"{key.api_key[:4]}…{key.api_key[-4:]}"
    first = await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    assert f"Binance · {hint}" in first.text and "linked" in first.text, first.text
    again = await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    assert f"already linked as Binance · {hint}" in again.text, again.text
    assert "Update API key" in again.text and "Nothing was saved" in again.text
    assert [b.text for b in again.buttons] == ["🔑 Update API key"]
    status = await rig.say(USER, "/status")
    assert "Your connections</b>: 1" in status.html and f"1. Binance · {hint}" in status.text
    # the button opens that connection's key steps
    await rig.press(USER, again, "Update API key")
    assert f"New key for Binance · {hint}" in (await rig.tg.wait_for_bot_message(USER)).text


async def test_the_same_3commas_key_twice_is_refused_before_3commas_is_asked(tmp_path):
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, tg = m.tc, m.rig.tg
        assert tc is not None
        key = tc.add_key()
        tc.add_account(key.api_key, name="Main")
        tg.add_user(USER)
        hint = f"{key.api_key[:4]}…{key.api_key[-4:]}"

        async def send_key(reply: str) -> ChatMessage:
            await m.rig.say(USER, "/link3c")
            await m.rig.say(USER, key.api_key)
            tg.user_sends(USER, key.secret)
            return await tg.wait_for_bot_message(USER, contains=reply)

        first = await send_key("linked")
        assert f"3Commas key {hint} linked" in first.text, first.text
        await tg.wait_for_bot_message(USER, contains="which of your keysentry connections")
        asked = len(tc.requests)
        again = await send_key("already linked")
        assert f"already linked as 3Commas · {hint}" in again.text, again.text
        assert "/status" in again.text and "Nothing was saved" in again.text
        assert len(tc.requests) == asked  # the duplicate never reached 3Commas
        sent = [x for x in tg.chat(USER) if not x.from_bot and x.text in (key.api_key, key.secret)]
        assert len(sent) == 4 and all(x.deleted for x in sent)
        async with m.rig.app.sessions() as session:
            rows = (await session.scalars(select(Connection).where(Connection.kind == "threecommas"))).all()
        assert len(rows) == 1


async def test_connections_without_label_are_told_apart_by_key_hint_everywhere(rig, exchanges):
    keys = [exchanges["binance"].add_key() for _ in range(2)]
    hints = [f"{k.api_key[:4]}…{k.api_key[-4:]}" for k in keys]
    for k in keys:
        await rig.say(USER, f"/link binance {k.api_key} {k.secret}")
    status = await rig.say(USER, "/status")
    assert f"1. Binance · {hints[0]}" in status.text and f"2. Binance · {hints[1]}" in status.text
    picker = await rig.say(USER, "/orders")
    assert [b.text for b in picker.buttons][:2] == [f"Binance · {h}" for h in hints], picker.buttons
    menu = await rig.say(USER, "/mute")
    assert any(f"Binance · {hints[1]}, 24 h" in b.text for b in menu.buttons), menu.buttons
    for k in keys:  # the hint never shows more than 8 characters of the key
        assert all(k.api_key[:5] not in b.text and k.api_key[-5:] not in b.text for b in menu.buttons)


def test_a_key_hint_survives_redaction_and_shows_at_most_eight_characters():
    key = "AbCd1234EfGh5678IjKl9012MnOp"
    remember(Credentials(key, "s3cr3t-s3cr3t-s3cr3t-s3cr3t"))
    hint = mask(key)
    assert hint == "AbCd…MnOp" and sum(c != "…" for c in hint) == 8
    assert redact(f"Binance · {hint}") == f"Binance · {hint}"
    assert redact(f"key {key}") == "key [redacted]"
    assert len(mask("shortkey123")) - 1 <= 8 and mask("12345678") == "…"


async def test_a_new_key_for_a_failing_connection_replaces_it_keeping_mutes(rig, exchanges):
    old = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {old.api_key} {old.secret}")
    await rig.press(USER, await rig.say(USER, "/mute"), "🔕 Binance ·")  # the old connection's mute
    exchanges["binance"].set_key_state(old.api_key, "revoked")
    status = await rig.say(USER, "/status")
    await rig.press(USER, status, "Refresh")
    new = exchanges["binance"].add_key()
    question = await rig.say(USER, f"/link binance {new.api_key} {new.secret}")
    old_hint, new_hint = (f"{k.api_key[:4]}…{k.api_key[-4:]}" for k in (old, new))
    assert f"Your Binance · {old_hint} is failing" in question.text, question.text
    assert "Replace the failing one?" in question.text
    await rig.press(USER, question, "Replace the failing one")
    saved = await rig.tg.wait_for_bot_message(USER)
    assert f"New key saved for Binance · {new_hint}" in saved.text, saved.text
    status = await rig.say(USER, "/status")
    assert "Your connections</b>: 1" in status.html and new_hint in status.text and "🔕 until" in status.text
    assert old_hint not in status.text
    async with rig.app.sessions() as session:  # the same row: what names it by id (incidents, the
        [row] = (await session.scalars(select(Connection))).all()  # 3Commas mapping, history) stays
    assert row.id == 1 and row.key_fingerprint == rig.app.vault.fingerprint(new.api_key)
    # a second new key while nothing fails is linked without a question
    other = exchanges["binance"].add_key()
    assert "linked" in (await rig.say(USER, f"/link binance {other.api_key} {other.secret}")).text


async def test_a_new_key_may_still_be_linked_beside_the_failing_one(rig, exchanges):
    old = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {old.api_key} {old.secret}")
    exchanges["binance"].set_key_state(old.api_key, "revoked")
    await rig.press(USER, await rig.say(USER, "/status"), "Refresh")
    new = exchanges["binance"].add_key()
    question = await rig.say(USER, f"/link binance {new.api_key} {new.secret}")
    await rig.press(USER, question, "Link as a new connection")
    assert "linked" in (await rig.tg.wait_for_bot_message(USER)).text
    assert "Your connections</b>: 2" in (await rig.say(USER, "/status")).html


# ----------------------------------------------------------------------------- §5: /history in sentences


async def test_history_tells_links_alerts_recoveries_and_actions_in_sentences_a_page_at_a_time(tmp_path):
    async with monitor(tmp_path, "binance") as m:
        rig, binance = m.rig, m.exchanges["binance"]
        rig.tg.add_user(1)
        key = binance.add_key()
        assert "linked" in (await rig.say(1, f"/link binance {key.api_key} {key.secret}")).text
        title = f"Binance · {key.api_key[:4]}…{key.api_key[-4:]}"
        await m.tick(0)
        binance.set_key_state(key.api_key, "revoked")
        await m.until_failing_seen(1)
        await m.run_for(120)
        binance.set_key_state(key.api_key, "valid")
        await m.run_for(120)
        async with rig.app.sessions.begin() as session:  # what recreate and cancel record
            audit.record(
                session, 1, "deal_recreate", rig.clock.now(), connection_id=1,
                source="deal:2300000001", outcome="created", ref="deal:2300000003", error=None,
                reconciled=False,
            )  # fmt: skip
            audit.record(
                session, 1, "order_cancel", rig.clock.now(), connection_id=1, row_id=3,
                outcome="cancelled", order_id="77", symbol="BTC/USDT", attribution="orphan",
                deal_ref="deal:2300000002", freed=["BTC", "0.01"], reconciled=None,
            )  # fmt: skip
            for _ in range(6):
                audit.record(session, 1, "connection_removed", rig.clock.now(), connection_id=99,
                             exchange="okx", key_hint="Zz12…9876")  # fmt: skip
        rig.tg.user_sends(1, "/history")
        first = await rig.tg.wait_for_bot_message(1, contains="Your history")
        text = first.text
        assert f"keysentry recreated the failed deal #2300000001 on {title} as deal #2300000003." in text
        assert f"keysentry cancelled the BTC/USDT order on {title}. 0.01 BTC is free again." in text
        assert "You removed OKX · Zz12…9876." in text
        for internal in ("deal_recreate", "source=", "outcome=", "error=None", "freed=", "['B"):
            assert internal not in text, text
        assert [b.text for b in first.buttons] == ["Next ›"]
        await rig.press(1, first, "Next")  # answered at once, then the message is edited

        def turned(needle: str) -> ChatMessage | None:
            message = rig.tg.message(1, first.message_id)
            return message if needle in message.text else None

        second = await rig.tg.wait_for(lambda: turned("works again"))
        assert f"🟢 {title} works again" in second.text, second.text
        assert f"🔴 {title} stopped working: API key revoked" in second.text
        assert f"🔗 You linked {title}." in second.text
        assert [b.text for b in second.buttons] == ["‹ Previous"]
        await rig.press(1, second, "Previous")
        assert await rig.tg.wait_for(lambda: turned("recreated the failed deal"))


async def test_history_in_russian_is_russian(rig, exchanges):
    rig.tg.add_user(USER + 2, language_code="ru")
    key = exchanges["binance"].add_key()
    await rig.say(USER + 2, f"/link binance {key.api_key} {key.secret}")
    text = (await rig.say(USER + 2, "/history")).text
    assert "Вы подключили" in text and "You linked" not in text, text


# ----------------------------------------------------------------------------- §10: wording


async def test_key_prompts_are_the_exchanges_own_and_permissions_read_trade_withdraw(rig, exchanges):
    prompts = {}
    for exchange in ("binance", "bybit"):
        await rig.say(USER, f"/link {exchange}")
        await rig.press(USER, rig.tg.last_bot_message(USER), "Skip")
        prompts[exchange] = (await rig.tg.wait_for_bot_message(USER, contains="API key")).text
        await rig.say(USER, "/cancel")
    assert "Bybit" in prompts["bybit"] and "Fast Connect" not in prompts["bybit"], prompts["bybit"]
    assert prompts["bybit"].split("\n\n")[1] != prompts["binance"].split("\n\n")[1]
    key = exchanges["bybit"].add_key()
    reply = await rig.say(USER, f"/link bybit {key.api_key} {key.secret}")
    [line] = [x for x in reply.text.splitlines() if x.startswith("Permissions:")]
    assert set(line.removeprefix("Permissions: ").split(", ")) <= {"read", "trade", "withdraw"}, line


async def test_link3c_asks_for_the_key_in_plain_words(rig):
    text = (await rig.say(USER, "/link3c")).text
    assert "Send the API key you created in 3Commas" in text and "of your 3Commas key" not in text


async def test_deal_alert_and_recreate_preview_speak_the_exchanges_pair_and_currency(tmp_path):
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc = m.tc
        _, api_key = await m.link_threecommas(1, tc)
        account = tc.add_account(api_key, exchange="binance", name="Main")
        deal = tc.add_deal(
            api_key,
            account,
            pair="USDT_ETH",
            current_price="3000",
            bought_amount="0.5",
            base_order_volume="10",
        )
        await m.tick(0)
        tc.fail_deal(deal, error_message="Invalid API key")
        await m.run_for(120, step=30)
        [alert] = [x for x in m.messages(1) if "it failed" in x.text]
        assert f"deal #{deal} ETH/USDT" in alert.text and "USDT_ETH" not in alert.text, alert.text
        await m.rig.press(1, alert, "Recreate")
        shown = await m.rig.tg.wait_for_bot_message(1, contains="exactly these parameters")
        assert "/ver1/" not in shown.text and "start_new_deal" not in shown.text, shown.text
        assert "start a new deal" in shown.text and "base order 10 USDT" in shown.text


async def test_an_empty_orders_list_has_no_blank_run(rig, exchanges):
    key = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    listing = await rig.say(USER, "/orders")
    listing = await rig.tg.wait_for(
        lambda: (m := rig.tg.message(USER, listing.message_id)) and "no open orders" in m.text and m
    )
    assert "\n\n\n" not in listing.text and not listing.text.endswith("\n"), repr(listing.text)


async def test_a_key_linked_before_fingerprints_existed_is_still_recognised(rig, exchanges):
    key = exchanges["binance"].add_key()
    await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    async with rig.app.sessions.begin() as session:  # as migration 0010 leaves an older row
        await session.execute(update(Connection).values(key_fingerprint=None, key_hint=key.api_key[:4] + "…"))
    again = await rig.say(USER, f"/link binance {key.api_key} {key.secret}")
    assert "already linked as" in again.text, again.text
    async with rig.app.sessions() as session:
        [row] = (await session.scalars(select(Connection))).all()
    assert row.key_fingerprint == rig.app.vault.fingerprint(key.api_key)
    assert key.api_key not in row.key_fingerprint and row.key_hint == f"{key.api_key[:4]}…{key.api_key[-4:]}"


# ----------------------------------------------------------------------------- §9: plurals and locale formats


def _spaced(text: str) -> str:
    """Babel groups Russian thousands with a no-break space; compare with a plain one."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


async def test_reset_mapping_and_alert_speak_russian_plurals_names_and_numbers(tmp_path):
    """The README sandbox story in Russian: the mapping question names the account the way every
    3Commas message does, /sandbox_reset counts with all three Russian forms (1 аккаунт, 2 сделки,
    5 ботов), and the account alert's last good balance is formatted the Russian way."""
    async with monitor(
        tmp_path, "binance", threecommas=True, routers=sandbox_commands, poll_interval_seconds=10
    ) as m:
        rig, tg, tc = m.rig, m.rig.tg, m.tc
        assert tc is not None
        tg.add_user(USER, language_code="ru")
        created = await rig.say(USER, "/sandbox_key binance")
        [link] = [line for line in created.text.splitlines() if line.startswith("/link binance ")]
        await rig.say(USER, link)
        tc_key, tc_secret = (await rig.say(USER, "/sandbox_3c")).text.splitlines()[-2:]
        [(account, facts)] = tc._accounts.items()
        for name in ("SOL long", "ADA long"):  # 5 bots in all, with the one the new deal runs on
            tc.add_bot(facts.owner, account, pairs=["USDT_SOL"], name=name)
        tc.set_account(account, balances_usd=1234.5)
        tc.add_deal(facts.owner, account, pair="USDT_SOL", current_price="150", bought_amount="1")
        await rig.say(USER, "/link3c")
        await rig.say(USER, tc_key)
        tg.user_sends(USER, tc_secret)
        mapping = await tg.wait_for_bot_message(USER, contains="keysentry он соответствует")
        assert mapping.text.startswith("Аккаунт 3Commas «Main» (Binance):"), mapping.text
        await rig.press(USER, mapping, "Binance")

        await m.tick(0)  # the first look records the last good balance
        reset = await rig.say(USER, "/sandbox_reset")
        assert "Сломаны: 1 аккаунт. Упали: 2 сделки и 1 SmartTrade. Выключены: 5 ботов." in reset.text, (
            reset.text
        )
        await m.run_for(60)
        alert = await tg.wait_for_bot_message(USER, contains="Последний известный баланс")
        assert "Последний известный баланс: 1 234,50 USD." in _spaced(alert.text), alert.text


def _checklist_state(deals: int, trades: int, orphans: int) -> ChecklistState:
    rows = [FailedDeal(kind="deal") for _ in range(deals)] + [
        FailedDeal(kind="smart_trade") for _ in range(trades)
    ]
    return ChecklistState(
        checklist_id=1, account_id=1, account_name="Main", market_code="binance", key_ok=True,
        pending=rows, recreated=0, orphans=orphans, locked={"BTC": Decimal("0.01")}, list_id=1,
        old_key_deleted=False, done_at=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("locale", "n", "failed", "locking", "button"),
    [
        (
            "en",
            1,
            "Failed since the incident: 1 deal and 1 SmartTrade",
            "1 orphan order of finished deals locks",
            "Cancel 1 orphan",
        ),
        (
            "en",
            2,
            "Failed since the incident: 2 deals and 2 SmartTrades",
            "2 orphan orders of finished deals lock",
            "Cancel 2 orphans",
        ),
        (
            "en",
            5,
            "Failed since the incident: 5 deals and 5 SmartTrades",
            "5 orphan orders of finished deals lock",
            "Cancel 5 orphans",
        ),
        (
            "ru",
            1,
            "С момента инцидента упали: 1 сделка и 1 SmartTrade",
            "1 осиротевший ордер завершённых сделок блокирует",
            "Отменить 1 ордер",
        ),
        (
            "ru",
            2,
            "С момента инцидента упали: 2 сделки и 2 SmartTrade",
            "2 осиротевших ордера завершённых сделок блокируют",
            "Отменить 2 ордера",
        ),
        (
            "ru",
            5,
            "С момента инцидента упали: 5 сделок и 5 SmartTrade",
            "5 осиротевших ордеров завершённых сделок блокируют",
            "Отменить 5 ордеров",
        ),
    ],
)
def test_recovery_checklist_counts_in_the_languages_plural_forms(locale, n, failed, locking, button):
    i18n = build_i18n()
    state = _checklist_state(n, n, n)
    with i18n.context(), i18n.use_locale(locale):
        text, _markup = checklist(state)
        _confirm, markup = cancel_confirmation(state)
    assert failed in text and locking in text and "(s)" not in text, text
    assert [b.text for row in markup.inline_keyboard for b in row] == ["✅ " + button]


@pytest.mark.parametrize(
    ("locale", "lines"),
    [
        (
            "en",
            [
                "3Commas refused: Validation error — units: is too small",
                "1 was not created (3Commas did not answer in time); it can be sent again.",
                "For 1, 3Commas cannot tell yet whether it was created, so nothing was sent again.",
                "2 are no longer linked and were not sent.",
            ],
        ),
        (
            "ru",
            [
                "3Commas отказал: Validation error — units: is too small",
                "1 не создана (3Commas не ответил вовремя); её можно отправить снова.",
                "Для 1 из них 3Commas пока не может подтвердить создание, поэтому повторно ничего не "
                "отправлено.",
                "2 больше не подключены и не отправлялись.",
            ],
        ),
    ],
)
def test_recreate_all_says_why_some_were_not_sent_in_the_users_language(locale, lines):
    """Only 3Commas' own refusals are quoted; what keysentry knows about the rest is said in words,
    never as its internal codes (not_created, not_found)."""
    results = [
        RecreateResult(RecreateOutcome.CREATED, "deal:1", "bought"),
        RecreateResult(RecreateOutcome.REFUSED, error="Validation error — units: is too small"),
        RecreateResult(RecreateOutcome.NOT_CREATED),
        RecreateResult(RecreateOutcome.UNVERIFIED, error="3Commas 0 timeout: no answer within 10 s"),
        RecreateResult(RecreateOutcome.GONE),
        RecreateResult(RecreateOutcome.GONE),
    ]
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        text = recreated(results)
    assert text.splitlines()[1:] == lines, text
    assert not any(code.value in text for code in RecreateOutcome if "_" in code.value), text


@pytest.mark.parametrize(("locale", "shown"), [("en", "1,234.50"), ("ru", "1 234,50"), ("es", "1.234,50")])
def test_last_good_balance_is_formatted_in_the_users_locale(locale, shown):
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
        alert = account_key_alert({"name": "Main", "market_code": "binance", "last_good_usd": "1234.5"})
        [line] = account_lines(
            {
                "accounts": {"7": {"name": "Main", "market_code": "binance"}},
                "balances": {"7": {"usd": "1234.5"}},
            }
        )
    assert f"{shown} USD." in _spaced(alert) and f"{shown} USD" in _spaced(line), (alert, line)
