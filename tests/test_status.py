"""/status end to end: pages within Telegram's limits, Refresh, Update API key, Remove, ownership."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from sandbox.telegram import CallbackAnswer, ChatMessage
from services.core.vault import Credentials
from services.storage.connections import new_connection
from services.storage.models import AuditEntry, Connection, OutboxMessage
from services.storage.users import get_or_create_user
from tests import test_link
from tests.harness import BotRig, running_bot

rig = test_link.rig

OWNER, STRANGER = 601, 602
OUT_OF_DATE = "This button is out of date — send /status again."


async def link_binance(rig: BotRig, server) -> tuple[int, object]:
    key = server.add_key(balances={"USDT": 900, "USDC": 100, "BTC": 0.5})
    reply = await rig.say(OWNER, f"/link binance {key.api_key} {key.secret}")
    assert "linked" in reply.text, rig.tg.transcript(OWNER)
    async with rig.app.sessions() as session:
        return await session.scalar(select(Connection.id)), key


async def press(rig: BotRig, user: int, message: ChatMessage, data: tuple[str, int] | str) -> CallbackAnswer:
    """Tap ``data``: packed, or (action, connection id) drawn as the bot would draw it now."""
    packed = data if isinstance(data, str) else await rig.connection_button(*data)
    query = rig.tg.user_sends_callback(user, message.message_id, packed)
    return await rig.tg.wait_for(lambda: rig.tg.callback_answer(query))


async def row(rig: BotRig, cid: int) -> Connection | None:
    async with rig.app.sessions() as session:
        return await session.get(Connection, cid)


async def test_forty_connections_page_within_telegram_limits(rig):
    now = rig.clock.now()
    async with rig.app.sessions.begin() as session:
        await get_or_create_user(session, OWNER, "en", now)
        for n in range(40):
            c = new_connection(
                rig.app.vault,
                user_id=OWNER,
                exchange=("binance", "bybit", "okx", "kucoin")[n % 4],
                label=f"{n:02d}" + "<&>" * 20 + "x",  # 64 characters that grow when escaped
                credentials=Credentials(f"key-{n:04d}-abcdefgh", "secret"),
                now=now,
            )
            c.balances = {f"COIN{i}": {"free": 1.0, "total": 1.0 + i} for i in range(60)} | {
                "USDT": {"free": 5.0, "total": 12.5}
            }
            c.verdict, c.verdict_detail, c.last_check_at = "unknown", "<" * 300, now
            session.add(c)

    page = await rig.say(OWNER, "/status")
    seen: list[str] = []
    for number in range(1, 6):
        assert f"page {number} of 5" in page.text
        assert len(page.text) <= 4096 and len(page.buttons) <= 100
        assert all(len(b.callback_data.encode()) <= 64 for b in page.buttons if b.callback_data)
        seen += re.findall(r"^[🟢🟡🔴⚪] (\d+)\. ", page.text, flags=re.MULTILINE)
        assert "+ 60 other coins" in page.text
        if number < 5:
            edits = page.edits
            await rig.press(OWNER, page, "Next")
            await rig.tg.wait_for(lambda e=edits: page.edits > e)
    assert seen == [str(n) for n in range(1, 41)]
    await rig.press(OWNER, page, "Previous")
    await rig.tg.wait_for(lambda: "page 4 of 5" in page.text)
    assert not rig.tg.errors, rig.tg.transcript(OWNER)


async def test_refresh_after_revocation_then_update_key(rig, exchanges):
    binance = exchanges["binance"]
    cid, key = await link_binance(rig, binance)
    rig.clock.advance(120)
    page = await rig.say(OWNER, "/status")
    assert (
        page.text.count("🟢") == 1
        and "2 min ago" in page.text
        and "≈ 1,000.00 USD + 1 other coin" in page.text
    )
    assert page.buttons[0].text.startswith("🔄")

    binance.set_key_state(key.api_key, "revoked")
    assert (await press(rig, OWNER, page, ("refresh", cid))).text == "Checking…"  # answered at once
    await rig.tg.wait_for(lambda: "🔴" in page.text)
    assert "🔴" in page.text and "API key revoked" in page.text and "last OK: 2 min ago" in page.text
    assert page.buttons[0].text.startswith("⛔") and "Update API key" in page.buttons[0].text
    stored = await row(rig, cid)
    assert (stored.verdict, stored.last_check_at, stored.next_poll_at) == ("key_invalid",) + (
        rig.clock.now(),
    ) * 2
    async with rig.app.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 0  # the poller alerts

    new_key = binance.add_key()
    await press(rig, OWNER, page, ("update", cid))
    assert "New key for" in (await rig.tg.wait_for_bot_message(OWNER)).text
    await rig.say(OWNER, new_key.api_key)
    rejected = await rig.say(OWNER, "x" * 64)
    assert "the secret does not match" in rejected.text and "old key stays" in rejected.text
    assert rig.app.vault.open((await row(rig, cid)).credentials).secret == key.secret

    await press(rig, OWNER, page, ("update", cid))
    await rig.tg.wait_for_bot_message(OWNER)
    await rig.say(OWNER, new_key.api_key)
    saved = await rig.say(OWNER, new_key.secret)
    assert "New key saved" in saved.text, rig.tg.transcript(OWNER)
    assert all(m.deleted for m in rig.tg.user_messages(OWNER) if not m.text.startswith("/"))
    stored = await row(rig, cid)
    assert rig.app.vault.open(stored.credentials).secret == new_key.secret and stored.verdict == "ok"
    page = await rig.say(OWNER, "/status")
    assert "🟢" in page.text and not any(b.text.startswith("⛔") for b in page.buttons)
    async with rig.app.sessions() as session:
        assert [c.id for c in await session.scalars(select(Connection))] == [cid]
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["connection_linked", "key_updated"]


async def test_slow_refresh_shows_checking_first(rig, exchanges):
    cid, _ = await link_binance(rig, exchanges["binance"])
    page = await rig.say(OWNER, "/status")
    exchanges["binance"].inject("latency", latency_ms=1300, times=1)
    rig.tg.user_sends_callback(OWNER, page.message_id, await rig.connection_button("refresh", cid))
    await rig.tg.wait_for(lambda: "checking…" in page.text)
    await rig.tg.wait_for(lambda: "checking…" not in page.text and "🟢" in page.text)


async def test_remove_confirms_and_a_replay_is_harmless(rig, exchanges):
    cid, _ = await link_binance(rig, exchanges["binance"])
    page = await rig.say(OWNER, "/status")
    await press(rig, OWNER, page, ("remove", cid))
    await rig.tg.wait_for(lambda: "Remove" in page.text)
    assert await row(rig, cid) is not None
    confirm = await rig.connection_button("rm_yes", cid)
    assert (await press(rig, OWNER, page, confirm)).text == "Removing…"  # answered at once
    await rig.tg.wait_for(lambda: "Nothing linked yet" in page.text and "Removed" in page.text)
    assert await row(rig, cid) is None
    # The same words as for an id that was never theirs: the answer tells nothing about other users.
    assert (await press(rig, OWNER, page, confirm)).text == OUT_OF_DATE
    async with rig.app.sessions() as session:
        removals = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "connection_removed")
        )
    assert removals == 1


async def test_another_users_buttons_are_refused_and_change_nothing(rig, exchanges):
    cid, _ = await link_binance(rig, exchanges["binance"])
    before = await row(rig, cid)
    page = await rig.say(STRANGER, "/status")
    for action in ("refresh", "update", "remove", "rm_yes"):
        answer = await press(rig, STRANGER, page, (action, cid))
        assert answer.text == OUT_OF_DATE, action
    assert (await press(rig, STRANGER, page, ("orders", cid))).text == OUT_OF_DATE
    after = await row(rig, cid)
    assert (after.updated_at, after.credentials, after.last_check_at) == (
        before.updated_at,
        before.credentials,
        before.last_check_at,
    )
    # The stranger's next message is not taken as an API key: no wizard was started for them.
    assert "Nothing to cancel" in (await rig.say(STRANGER, "/cancel")).text

    for forged in (
        "c:refresh:abc",
        "c:explode:1",
        "c:refresh",
        "sp:x",
        "lx:binance",
        "lxp:9",
        "c:" + "9" * 60,
    ):
        answer = await press(rig, STRANGER, page, forged)
        assert answer.text, forged
    assert not rig.tg.errors, rig.tg.transcript(STRANGER)


async def test_refresh_past_the_users_share_says_when_and_checks_nothing(tmp_path, net, exchanges):
    """Refresh is the user's tap: it draws on their fair share of the exchange's budget, not on
    what is kept for everyone's scheduled checks. Past it, nothing is sent, the stored result
    stays, and the page says when Refresh works again."""
    binance = exchanges["binance"]
    async with running_bot(
        f"sqlite+aiosqlite:///{tmp_path / 'share.db'}",
        transport=net.transport,
        exchange_weight_per_minute={"binance_sapi": 60},  # our share 30, a user's 6 a minute
    ) as rig:
        cid, key = await link_binance(rig, binance)  # the link's key check: 1 of the 6
        page = await rig.say(OWNER, "/status")

        def signed() -> int:
            return sum(1 for r in binance.requests if r.api_key == key.api_key)

        for n in range(1, 6):  # each Refresh: the key check and the balances, redrawn after both
            await press(rig, OWNER, page, ("refresh", cid))
            await rig.tg.wait_for(lambda n=n: signed() == 2 + 2 * n)
        binance.set_key_state(key.api_key, "revoked")  # a check now would turn the row red

        await press(rig, OWNER, page, ("refresh", cid))
        await rig.tg.wait_for(lambda: "try Refresh again in 10 seconds" in page.text)
        assert signed() == 12  # nothing was sent
        assert (await row(rig, cid)).verdict == "ok"  # nothing was written
        assert "🟢" in page.text  # the page still shows the last real result
