"""Issue 13 end to end, through the real bot: the mass key reset, the repair wizard, the checklist.

Real aiogram against the local Telegram, real ccxt against the local Binance (api.binance.com over
TLS), the real 3Commas client against the local 3Commas, time on the FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, text

from bot.app import build_bot, close_context, make_context
from bot.i18n import build_i18n
from bot.views.threecommas import repair_result
from bot.worker import Worker
from services.core.vault import Credentials
from services.storage import money_actions
from services.storage.db import create_engine
from services.storage.models import AuditEntry, MoneyAction, ThreeCommasAccountLink
from services.threecommas import checklist as recovery
from services.threecommas import repair
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.repair import RepairOutcome, RepairTarget, repair_account
from tests.test_monitoring import Monitor, monitor

NEW_KEY = "NEWexchangeKEY0123456789abcdef"
NEW_SECRET = "NEWexchangeSECRET0123456789abcdefXYZ"


async def reset_story(m: Monitor, *, can_write_accounts: bool = True) -> dict[str, int]:
    """User 1: a Binance key in keysentry, a 3Commas key whose account "Main" trades on it, an
    active deal with its take profit resting on Binance, a cancelled deal whose order still rests
    there (an orphan), an active SmartTrade; then the reset breaks every key 3Commas holds."""
    tc = m.tc
    assert tc is not None
    binance = m.exchanges["binance"]
    cid, binance_key = await m.link(1, "binance")
    tc_cid, api_key = await m.link_threecommas(1, tc)
    tc.set_rate_limit(per_minute=10_000)  # a long story in fast time; limits have their own tests
    if not can_write_accounts:
        tc._keys[api_key].can_write_accounts = False
    account = tc.add_account(api_key, exchange="binance", name="Main", balances_usd=2500)
    now = m.rig.clock.now()
    active = tc.add_deal(
        api_key, account, pair="USDT_ETH", current_price="3000",
        bought_amount="0.5", bought_average_price="2900",
        orders=[{"side": "sell", "price": "3150", "amount": "0.5", "created_at": now}],
    )  # fmt: skip
    cancelled = tc.add_deal(
        api_key, account, pair="USDT_BTC", current_price="65000", bought_amount="0.01",
        orders=[{"side": "sell", "price": "68000", "amount": "0.01", "created_at": now}],
    )  # fmt: skip
    tc.finish_deal(cancelled, status="cancelled")
    tc.set_price("USDT_SOL", "150")
    trade = tc.add_smart_trade(
        api_key, account, pair="USDT_SOL", price="140", take_profit=[{"price": "160", "volume": 100}]
    )
    binance.set_balance(binance_key, "ETH", 1)
    binance.set_balance(binance_key, "BTC", 0.05)
    binance.add_order(binance_key, "ETH/USDT", "sell", "3150", "0.5", created_at=now)
    binance.add_order(binance_key, "BTC/USDT", "sell", "68000", "0.01", created_at=now)
    async with m.rig.app.sessions.begin() as session:
        session.add(
            ThreeCommasAccountLink(
                user_id=1, tc_connection_id=tc_cid, account_id=account, account_name="Main",
                market_code="binance", exchange_connection_id=cid, updated_at=now,
            )
        )  # fmt: skip
    await m.tick(0)  # the first look only records what exists
    assert m.messages(1) == []
    counts = tc.reset_exchange_keys(api_key)
    await m.run_for(10 * 60, step=30)
    return {
        "account": account,
        "active": active,
        "trade": trade,
        "tc_cid": tc_cid,
        "binance_key": binance_key,
        **counts,
    }


async def test_reset_wizard_checklist_recreate_cancel_done(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for name in ("services", "bot", "handlers", "aiogram"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, binance, tg = m.tc, m.exchanges["binance"], m.rig.tg
        assert tc is not None
        story = await reset_story(m)
        assert (story["accounts"], story["deals"], story["smart_trades"]) == (1, 1, 1)

        # One alert per broken account, naming it, with the 3Commas fix.
        alerts = [x for x in m.messages(1) if "can no longer use the API key" in x.text]
        assert len(alerts) == 1
        [alert] = alerts
        assert (
            "3Commas account «Main» (Binance)" in alert.text
            and "Last good balance: 2,500.00 USD." in alert.text
        )
        assert [b.text for b in alert.buttons] == ["🔧 Update key in 3Commas"]

        # The wizard: the key goes to accounts/update, every message with it is deleted.
        await m.rig.press(1, alert, "Update key in 3Commas")
        intro = await tg.wait_for_bot_message(1, contains="New exchange key")
        assert "Fast Connect" in intro.text and "IP addresses" in intro.text
        asked = await m.rig.say(1, NEW_KEY)
        assert "secret" in asked.text
        tg.user_sends(1, NEW_SECRET)
        ok = await tg.wait_for_bot_message(1, contains="accepted the new key")
        assert "works again" in ok.text
        [update] = [r for r in tc.requests if r.path.endswith("/ver1/accounts/update")]
        assert update.body == {"account_id": story["account"], "api_key": NEW_KEY, "secret": NEW_SECRET}
        assert any(r.path.endswith("/load_balances") and r.status == 201 for r in tc.requests)
        sent_by_user = [x for x in tg.chat(1) if not x.from_bot and x.text in (NEW_KEY, NEW_SECRET)]
        assert len(sent_by_user) == 2 and all(x.deleted for x in sent_by_user)

        # The checklist: what the reset left behind, from live data.
        checklist = await tg.wait_for_bot_message(1, contains="Recovery:")
        assert "✅ Key updated in 3Commas" in checklist.text
        assert "Failed since the incident: 1 deal and 1 SmartTrade" in checklist.text
        assert "2 orphan orders of finished deals lock" in checklist.text

        await m.rig.press(1, checklist, "Recreate all")
        confirm = await tg.wait_for_bot_message(1, contains="each exactly as below")
        assert "ETH/USDT" in confirm.text and "SOL/USDT" in confirm.text
        await m.rig.press(1, confirm, "Recreate all 2")
        await tg.wait_for(lambda: "Recreated 2" in tg.message(1, confirm.message_id).text)
        await m.rig.press(1, confirm, "Recreate all 2")  # a second tap sends nothing again
        await tg.wait_for(lambda: "Recreated 0; 2 had been" in tg.message(1, confirm.message_id).text)
        assert sum(r.path.endswith("/start_new_deal") for r in tc.requests) == 1
        assert sum(r.method == "POST" and r.path.endswith("/v2/smart_trades") for r in tc.requests) == 1

        await tg.wait_for(lambda: "recreated (2)" in tg.message(1, checklist.message_id).text)
        now_shown = tg.message(1, checklist.message_id)
        await m.rig.press(1, now_shown, "Cancel orphans")
        cancel = await tg.wait_for_bot_message(1, contains="orphan orders locking")
        await m.rig.press(1, cancel, "Cancel 2 orphans")
        await tg.wait_for(lambda: "Cancelled 2 of 2" in tg.message(1, cancel.message_id).text)
        assert binance.open_orders(story["binance_key"]) == []
        await tg.wait_for(
            lambda: "✅ No orphan orders lock funds" in tg.message(1, checklist.message_id).text
        )

        await m.rig.press(1, tg.message(1, checklist.message_id), "Old key deleted")
        done = await tg.wait_for_bot_message(1, contains="fully recovered")
        assert "«Main»" in done.text
        await tg.wait_for(lambda: "🎉 Everything is done." in tg.message(1, checklist.message_id).text)
        await m.rig.press(1, tg.message(1, checklist.message_id), "Refresh") if any(
            "Refresh" in b.text for b in tg.message(1, checklist.message_id).buttons
        ) else None
        # The account turns green in monitoring too; the "done" message still came only once.
        await m.run_for(5 * 60, step=30)
        assert sum("fully recovered" in x.text for x in m.messages(1)) == 1
        # Asked again afterwards, the checklist is this one, ticks kept, and it is not done twice.
        [recovered] = [x for x in m.messages(1) if any("What is left to do" in b.text for b in x.buttons)]
        tg.mark_read(1)
        await m.rig.press(1, recovered, "What is left to do")
        again = await tg.wait_for_bot_message(1, contains="Recovery:")
        assert "✅ Old key deleted on the exchange" in again.text and "🎉 Everything is done." in again.text
        assert again.buttons == []
        await m.tick(30)
        assert sum("fully recovered" in x.text for x in m.messages(1)) == 1

        # The new exchange key was never logged or stored in plaintext.
        assert not any(NEW_KEY in r.getMessage() or NEW_SECRET in r.getMessage() for r in caplog.records)
        async with m.rig.app.sessions() as session:
            for table in ("conversation_states", "audit_log", "outbox", "connections"):
                dump = " ".join(
                    str(row) for row in (await session.execute(text(f"SELECT * FROM {table}"))).all()
                )
                assert NEW_KEY not in dump and NEW_SECRET not in dump, table
            [audited] = (
                await session.scalars(select(AuditEntry).where(AuditEntry.action == "tc_account_key_update"))
            ).all()
            assert audited.detail["outcome"] == "fixed"
            [action] = (
                await session.scalars(select(MoneyAction).where(MoneyAction.kind == "tc_key_update"))
            ).all()
            assert action.state == "done" and NEW_KEY not in action.target


async def test_without_accounts_write_the_user_gets_steps_and_a_confirmation(tmp_path) -> None:
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, tg = m.tc, m.rig.tg
        assert tc is not None
        story = await reset_story(m, can_write_accounts=False)
        [alert] = [x for x in m.messages(1) if "can no longer use the API key" in x.text]
        # /status lists the account under its 3Commas key, red, with the last good balance and the fix.
        tg.user_sends(1, "/status")
        status = await tg.wait_for_bot_message(1, contains="Your connections")
        assert "🔴 3Commas account «Main» (Binance): key expired · last good balance 2,500.00 USD" in (
            status.text
        )
        assert any("Update key in 3Commas" in b.text for b in status.buttons)
        await m.rig.press(1, alert, "Update key in 3Commas")
        await tg.wait_for_bot_message(1, contains="New exchange key")
        await m.rig.say(1, NEW_KEY)
        tg.user_sends(1, NEW_SECRET)
        steps = await tg.wait_for_bot_message(1, contains="ACCOUNTS_WRITE")
        assert f"https://app.3commas.io/accounts/{story['account']}" in steps.html
        await m.rig.press(1, steps, "I updated it in 3Commas")
        waiting = await tg.wait_for_bot_message(1, contains="still shows the key")
        assert "keep watching" in waiting.text

        # The trader fixes it in 3Commas' web app; the button now confirms and opens the checklist.
        tc.set_account(story["account"], api_key_invalid=False, api_keys_state="ok")
        await m.rig.press(1, steps, "I updated it in 3Commas")
        await tg.wait_for_bot_message(1, contains="works again")
        checklist = await tg.wait_for_bot_message(1, contains="Recovery:")
        assert "✅ Key updated in 3Commas" in checklist.text
        # Monitoring sees it too: one recovery for the account, with the checklist button.
        await m.run_for(5 * 60, step=30)
        recovered = [x for x in m.messages(1) if "resolved after" in x.text and "3Commas account" in x.text]
        assert len(recovered) == 1 and any("What is left to do" in b.text for b in recovered[0].buttons)


async def test_link3c_accepts_a_self_generated_rsa_key(tmp_path) -> None:
    """3Commas self-generated keys: the user keeps the PEM private key, requests are RSA-signed and
    verified against the public key in the local 3Commas (docs quick-start/4 and 5)."""
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
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, tg = m.tc, m.rig.tg
        assert tc is not None
        key = tc.add_key(rsa_public_pem=public)
        tc.add_account(key.api_key, name="Main")
        tg.add_user(1)
        await m.rig.say(1, "/link3c")
        await m.rig.say(1, key.api_key)
        tg.user_sends(1, pem)
        linked = await tg.wait_for_bot_message(1, contains="linked")
        assert "1 exchange account" in linked.text
        assert [r.status for r in tc.requests] == [200, 200]  # validate and accounts, both RSA-signed
        assert all(x.deleted for x in tg.chat(1) if not x.from_bot and x.text.startswith("-----BEGIN"))


async def test_the_checklist_follows_what_the_poller_sees_without_a_tap(tmp_path) -> None:
    """The trader fixes the key in 3Commas' web app, recreates the failed deal from its own alert and
    cancels the orphans on the exchange: the one checklist message edits itself each time."""
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tc, binance, tg = m.tc, m.exchanges["binance"], m.rig.tg
        assert tc is not None
        story = await reset_story(m, can_write_accounts=False)
        [alert] = [x for x in m.messages(1) if "can no longer use the API key" in x.text]
        await m.rig.press(1, alert, "Update key in 3Commas")
        await tg.wait_for_bot_message(1, contains="New exchange key")
        await m.rig.say(1, NEW_KEY)
        tg.user_sends(1, NEW_SECRET)
        steps = await tg.wait_for_bot_message(1, contains="ACCOUNTS_WRITE")
        await m.rig.press(1, steps, "What is left to do")
        checklist = await tg.wait_for_bot_message(1, contains="Recovery:")
        assert "⏳ Key: 3Commas still cannot use it" in checklist.text

        def shown() -> str:
            return tg.message(1, checklist.message_id).text

        tc.set_account(story["account"], api_key_invalid=False, api_keys_state="ok")
        await m.run_for(2 * 60, step=30)
        assert "✅ Key updated in 3Commas" in shown()
        assert "Failed since the incident: 1 deal and 1 SmartTrade" in shown()

        [failed] = [
            x for x in m.messages(1) if "it failed" in x.text and f"deal #{story['active']}" in x.text
        ]
        await m.rig.press(1, failed, "Recreate")
        confirm = await tg.wait_for_bot_message(1, contains="exactly these parameters")
        await m.rig.press(1, confirm, "Recreate")
        await tg.wait_for(lambda: any(r.path.endswith("/start_new_deal") for r in tc.requests))
        await m.run_for(2 * 60, step=30)
        assert "Failed since the incident: 0 deals and 1 SmartTrade" in shown()

        assert "2 orphan orders of finished deals lock" in shown()
        for order in binance.open_orders(story["binance_key"]):
            assert binance.cancel_order(story["binance_key"], order["id"])
        # The exchange's orders are listed again at most every 15 minutes (a listing weighs ~100).
        before = len(binance.requests)
        await m.run_for(5 * 60, step=30)
        assert not any(r.path == "/api/v3/openOrders" for r in binance.requests[before:])
        await m.run_for(15 * 60, step=30)
        assert "✅ No orphan orders lock funds" in shown()
        assert sum("Recovery:" in x.text for x in m.messages(1)) == 1  # one message, edited in place
        assert "fully recovered" not in " ".join(x.text for x in m.messages(1))  # the old key is not ticked

        # The last steps by tap and from the SmartTrade's own alert: done is said once, by whoever
        # sees it first, and the refresher does not say it again.
        await m.rig.press(1, tg.message(1, checklist.message_id), "Old key deleted")
        # The reset's failures came as one message; its second Recreate is the SmartTrade's.
        assert f"SmartTrade #{story['trade']}" in failed.text
        query = tg.user_presses(1, failed, failed.buttons[1].callback_data)
        await tg.wait_for(lambda: tg.callback_answer(query))
        confirm = await tg.wait_for_bot_message(1, contains="exactly these parameters")
        await m.rig.press(1, confirm, "Recreate")
        await tg.wait_for(
            lambda: any(r.method == "POST" and r.path.endswith("/v2/smart_trades") for r in tc.requests)
        )
        await m.run_for(5 * 60, step=30)
        assert "🎉 Everything is done." in shown()
        assert sum("fully recovered" in x.text for x in m.messages(1)) == 1


# ----------------------------------------------------------------------------- several workers


@contextlib.asynccontextmanager
async def another_worker(m: Monitor) -> AsyncIterator[Worker]:
    """A second worker process's worth on the same database: its own engine, app and bot."""
    assert m.net is not None
    settings = m.rig.app.settings
    engine = create_engine(settings.database_url)
    app = make_context(settings, engine, clock=m.rig.clock, transport=m.net.transport)
    bot = build_bot(settings)
    try:
        yield Worker(app, bot)
    finally:
        await bot.session.close()
        await close_context(app)


async def shown_checklists(m: Monitor, accounts: int) -> tuple[list[int], dict[int, int]]:
    """User 1's 3Commas key with ``accounts`` accounts, each with its checklist on screen (a
    placeholder text the first redraw replaces); returns the account ids and checklist → message."""
    tc = m.tc
    assert tc is not None
    tc_cid, api_key = await m.link_threecommas(1, tc)
    deps, now = m.rig.app.order_deps, m.rig.clock.now()
    ids, messages = [], {}
    for n in range(accounts):
        account = tc.add_account(api_key, name=f"Acc{n}")
        async with m.rig.app.sessions.begin() as session:
            session.add(
                ThreeCommasAccountLink(
                    user_id=1, tc_connection_id=tc_cid, account_id=account, account_name=f"Acc{n}",
                    market_code="binance", exchange_connection_id=None, updated_at=now,
                )
            )  # fmt: skip
        checklist_id = await recovery.start_checklist(
            deps, user_id=1, tc_connection_id=tc_cid, account_id=account
        )
        sent = await m.rig.bot.send_message(1, "📋 Recovery: loading…")
        await recovery.remember_message(deps, checklist_id, 1, sent.message_id, sent.text or "")
        ids.append(account)
        messages[checklist_id] = sent.message_id
    return ids, messages


def account_reads(m: Monitor, accounts: list[int]) -> dict[int, int]:
    """3Commas reads of each account so far (a redraw reads its account once)."""
    assert m.tc is not None
    reads = dict.fromkeys(accounts, 0)
    for r in m.tc.requests:
        tail = r.path.rsplit("/ver1/accounts/", 1)[-1]
        if r.method == "GET" and tail.isdigit() and int(tail) in reads:
            reads[int(tail)] += 1
    return reads


def edits(m: Monitor) -> int:
    return sum(r.method == "editMessageText" for r in m.rig.tg.requests)


async def both_for(m: Monitor, workers: list[Worker], seconds: int) -> list[int]:
    """Both workers' checklist job, as their schedulers run it (every 5 s, at the same moments),
    for ``seconds``; how many checklists each one redrew."""
    redrawn = [0] * len(workers)
    for _ in range(0, seconds, 5):
        done = await asyncio.gather(*(w.checklists.run_once() for w in workers))
        redrawn = [a + b for a, b in zip(redrawn, done, strict=True)]
        m.rig.clock.advance(5)
    return redrawn


async def test_two_workers_redraw_each_checklist_once_per_interval_between_them(tmp_path) -> None:
    """Every worker runs the checklist job; each checklist is still read from 3Commas once per
    interval, and the text shown is known to all of them, so nobody edits it again unchanged."""
    async with monitor(tmp_path, threecommas=True) as m, another_worker(m) as other:
        tc, tg = m.tc, m.rig.tg
        assert tc is not None
        accounts, messages = await shown_checklists(m, 3)
        workers = [m.worker, other]
        for w in workers:
            w.checklists.batch = 1  # one checklist a claim: the two workers' claims interleave
        every = int(m.worker.checklists.every.total_seconds())
        assert other.checklists.every == m.worker.checklists.every

        before = account_reads(m, accounts)
        assert sum(await both_for(m, workers, every)) == 3
        assert account_reads(m, accounts) == {a: before[a] + 1 for a in accounts}
        assert edits(m) == 3  # the placeholders, redrawn
        for message_id in messages.values():
            assert "Recovery:" in tg.message(1, message_id).text
            assert "Key updated in 3Commas" in tg.message(1, message_id).text

        for interval in (2, 3, 4):
            assert sum(await both_for(m, workers, every)) == 3
            assert account_reads(m, accounts) == {a: before[a] + interval for a in accounts}
        assert edits(m) == 3  # nothing changed: no edit, whichever worker redrew which checklist

        # 3Commas stops using the first account's key: the next interval shows it, once.
        tc.set_account(accounts[0], api_key_invalid=True, api_keys_state="invalid")
        assert sum(await both_for(m, workers, every)) == 3
        assert account_reads(m, accounts) == {a: before[a] + 5 for a in accounts}
        assert edits(m) == 4
        first = messages[min(messages)]  # the first account's checklist
        assert "3Commas still cannot use it" in tg.message(1, first).text
        assert not [r for r in tg.requests if r.status != 200]


async def test_a_checklist_claimed_by_a_worker_that_died_is_redrawn_after_the_interval(tmp_path) -> None:
    async with monitor(tmp_path, threecommas=True) as m:
        tc, tg = m.tc, m.rig.tg
        assert tc is not None
        accounts, messages = await shown_checklists(m, 2)
        refresher = m.worker.checklists
        every = refresher.every
        async with another_worker(m) as doomed:
            # Its round claims both checklists; the process dies before it redraws either.
            claimed = await recovery.claim_due_checklists(doomed.app.sessions, m.rig.clock.now(), every)
            assert sorted(c.id for c in claimed) == sorted(messages)
        before = account_reads(m, accounts)

        # The survivor leaves them alone for the interval the dead worker claimed them for...
        for _ in range(int(every.total_seconds()) // 5 - 1):
            m.rig.clock.advance(5)
            assert await refresher.run_once() == 0
        assert account_reads(m, accounts) == before
        assert all("loading" in tg.message(1, message_id).text for message_id in messages.values())

        # ...then takes them over.
        m.rig.clock.advance(5)
        assert await refresher.run_once() == 2
        assert account_reads(m, accounts) == {a: before[a] + 1 for a in accounts}
        for message_id in messages.values():
            assert "Key updated in 3Commas" in tg.message(1, message_id).text
        assert await refresher.run_once() == 0  # and claimed them for the next interval


async def test_a_key_already_on_its_way_to_3commas_is_not_sent_again(sessions, tc, clock) -> None:
    """Another tap is giving this very key to 3Commas right now: nothing is sent a second time,
    and the trader is told so in their language (not as if 3Commas had not answered)."""
    key = tc.add_key()
    account = tc.add_account(key.api_key, "binance", name="Main")
    target = RepairTarget(1, account, "Main", "binance", Credentials(key.api_key, key.secret), "v")
    new_key = Credentials(NEW_KEY, NEW_SECRET)
    now, access = clock.now(), ThreeCommasAccess(tc.url)
    action = repair._action_target(target, new_key)
    other_tap = await money_actions.claim(sessions, user_id=1, kind=repair.ACTION, target=action, now=now)
    assert other_tap.claimed
    result = await repair_account(sessions, access, target, new_key, user_id=1, now=now)
    assert (result.outcome, result.error) == (RepairOutcome.IN_PROGRESS, None)
    assert not [r for r in tc.requests if r.method == "POST"]
    i18n = build_i18n()
    shown = {}
    for locale in ("en", "ru", "es"):
        with i18n.context(), i18n.use_locale(locale):
            shown[locale] = repair_result(result, "Main", "binance")
    assert shown["en"] == (
        "⏳ This key is already on its way to 3Commas for 3Commas account «Main» (Binance); nothing was "
        "sent again."
    )
    assert shown["ru"] == (
        "⏳ Аккаунт 3Commas «Main» (Binance): этот ключ уже отправляется в 3Commas; повторно ничего не "
        "отправлено."
    )
    assert shown["es"].startswith("⏳ Cuenta de 3Commas «Main» (Binance): esta clave ya va de camino")
