"""/link end to end: the real Dispatcher and Bot, the local Telegram, real ccxt against local exchanges."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text

from bot.callbacks import ExchangeCb, ExchangePageCb, LinkStepCb
from sandbox.exchanges.base import LocalKey
from sandbox.telegram import ChatMessage
from services.storage.models import AuditEntry, Connection
from tests.harness import BotRig, running_bot

USER = 501
SIGNATURE_REASON = "the secret does not match the key"
REVOKED_REASON = "API key revoked, deleted or never existed"


@pytest.fixture
async def rig(tmp_path, net, exchanges) -> AsyncIterator[BotRig]:
    async with running_bot(f"sqlite+aiosqlite:///{tmp_path / 'link.db'}", transport=net.transport) as rig:
        yield rig


async def wizard(rig: BotRig, exchange: str, key: LocalKey, *, secret: str | None = None) -> ChatMessage:
    """Walk /link → exchange button → label → key → secret (→ passphrase); return the bot's verdict."""
    tg = rig.tg
    prompt = await rig.say(USER, "/link")
    tg.user_presses(USER, prompt, ExchangeCb(exchange=exchange).pack())
    await tg.wait_for(lambda: "label" in tg.message(USER, prompt.message_id).text)
    prompt = (await rig.say(USER, "Main & <b>")).text
    assert "Now send the API key" in prompt and ("Fast Connect" in prompt) == (exchange == "binance")
    await rig.say(USER, key.api_key)
    reply = await rig.say(USER, secret or key.secret)
    if key.passphrase:
        assert "passphrase" in reply.text
        reply = await rig.say(USER, key.passphrase)
    return reply


async def connection_rows(rig: BotRig) -> list[Connection]:
    async with rig.app.sessions() as session:
        return list(await session.scalars(select(Connection)))


async def raw_database_text(rig: BotRig) -> str:
    """Every column of every row that could hold a secret, as one string to search."""
    async with rig.app.sessions() as session:
        rows = [
            *(await session.execute(text("SELECT * FROM connections"))).all(),
            *(await session.execute(text("SELECT * FROM conversation_states"))).all(),
            *(await session.execute(text("SELECT * FROM audit_log"))).all(),
        ]
    return repr(rows)


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_wizard_links_a_key_deletes_secrets_and_stores_no_plaintext(rig, exchanges, exchange):
    key = exchanges[exchange].add_key(balances={"USDT": 1500, "BTC": 0.25}, can_withdraw=True)
    reply = await wizard(rig, exchange, key)

    assert "linked" in reply.text, rig.tg.transcript(USER)
    assert "Main &amp; &lt;b&gt;" in reply.html  # the label is user text: escaped
    assert "1,500.00 USD" in reply.text and "BTC" in reply.text
    assert "Withdrawals are enabled" in reply.text
    secrets = [key.api_key, key.secret] + ([key.passphrase] if key.passphrase else [])
    carrying = [m for m in rig.tg.user_messages(USER) if m.text in secrets]
    assert len(carrying) == len(secrets) and all(m.deleted for m in carrying)
    assert not any(s in m.text for m in rig.tg.bot_messages(USER) for s in secrets)

    [row] = await connection_rows(rig)
    assert (row.exchange, row.label, row.verdict, row.user_id) == (exchange, "Main & <b>", "ok", USER)
    assert row.last_ok_at == rig.clock.now() and row.balances["USDT"]["total"] == 1500
    stored = await raw_database_text(rig)
    assert key.secret not in stored and key.api_key not in stored
    assert not key.passphrase or key.passphrase not in stored
    assert rig.app.vault.open(row.credentials).secret == key.secret
    async with rig.app.sessions() as session:
        assert await session.scalar(select(AuditEntry.action)) == "connection_linked"


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_wrong_secret_shows_the_signature_reason_and_saves_nothing(rig, exchanges, exchange):
    key = exchanges[exchange].add_key()
    wrong = key.secret[:-4] + ("aaaa" if not key.secret.endswith("aaaa") else "bbbb")
    reply = await wizard(rig, exchange, key, secret=wrong)
    assert SIGNATURE_REASON in reply.text and "Nothing was saved" in reply.text, rig.tg.transcript(USER)
    assert await connection_rows(rig) == []


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_revoked_key_shows_key_invalid_and_saves_nothing(rig, exchanges, exchange):
    key = exchanges[exchange].add_key()
    exchanges[exchange].set_key_state(key.api_key, "revoked")
    reply = await wizard(rig, exchange, key)
    assert REVOKED_REASON in reply.text, rig.tg.transcript(USER)
    assert await connection_rows(rig) == []


async def test_one_message_link_is_deleted_at_once(rig, exchanges):
    key = exchanges["okx"].add_key()
    reply = await rig.say(USER, f"/link okx {key.api_key} {key.secret} {key.passphrase}")
    assert "linked" in reply.text, rig.tg.transcript(USER)
    [command] = rig.tg.user_messages(USER)
    assert command.deleted
    [row] = await connection_rows(rig)
    assert (row.exchange, row.label) == ("okx", "")

    binance = exchanges["binance"].add_key()
    reply = await rig.say(USER, f"/link binance {binance.api_key} {binance.secret}")
    assert "linked" in reply.text and len(await connection_rows(rig)) == 2
    assert all(m.deleted for m in rig.tg.user_messages(USER))


async def test_bad_input_is_explained_deleted_and_changes_nothing(rig, exchanges):
    tg = rig.tg
    assert "do not know" in (await rig.say(USER, "/link kraken2000 AAAAAAAAAA BBBBBBBBBB")).text
    assert "Usage" in (await rig.say(USER, "/link okx AAAAAAAAAA BBBBBBBBBB")).text  # no passphrase
    assert all(m.deleted for m in tg.user_messages(USER))

    prompt = await rig.say(USER, "/link")
    assert "do not know" in (await rig.say(USER, "not-an-exchange")).text
    tg.user_presses(USER, prompt, ExchangePageCb(page=1).pack())
    await tg.wait_for(lambda: any(b.text == "‹" for b in tg.message(USER, prompt.message_id).buttons))
    tg.user_sends_callback(USER, prompt.message_id, ExchangeCb(exchange="binance").pack())
    await tg.wait_for(lambda: "label" in tg.message(USER, prompt.message_id).text)
    assert "at most 64" in (await rig.say(USER, "x" * 65)).text
    tg.user_presses(USER, prompt, LinkStepCb(step="skip").pack())
    await tg.wait_for_bot_message(USER, contains="API key")
    bad_keys = ["🔑" * 20, "short key with spaces", "A" * 10_240, "\x00\x01binary\x02\x03"]
    for bad in bad_keys:
        reply = await rig.say(USER, bad)
        assert "again" in reply.text, tg.transcript(USER)
    assert all(m.deleted for m in tg.user_messages(USER) if m.text in bad_keys)
    assert await connection_rows(rig) == []

    key = exchanges["binance"].add_key()
    await rig.say(USER, key.api_key)  # the wizard is still at the key step
    assert "linked" in (await rig.say(USER, key.secret)).text


async def test_cancel_leaves_the_wizard_at_any_step(rig, exchanges):
    await rig.say(USER, "/link binance")
    await rig.say(USER, "Main")
    await rig.say(USER, exchanges["binance"].add_key().api_key)
    assert "Cancelled" in (await rig.say(USER, "/cancel")).text
    assert "Nothing to cancel" in (await rig.say(USER, "/cancel")).text
    async with rig.app.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Connection)) == 0
        states = (await session.execute(text("SELECT state, data FROM conversation_states"))).all()
    assert all(state is None and data in ("{}", {}) for state, data in states)

    prompt = await rig.say(USER, "/link")
    rig.tg.user_presses(USER, prompt, LinkStepCb(step="cancel").pack())
    await rig.tg.wait_for(lambda: "Cancelled" in rig.tg.message(USER, prompt.message_id).text)
    stale = rig.tg.user_sends_callback(USER, prompt.message_id, ExchangeCb(exchange="binance").pack())
    assert "over" in (await rig.tg.wait_for(lambda: rig.tg.callback_answer(stale))).text


async def test_start_button_opens_the_wizard(rig):
    welcome = await rig.say(USER, "/start")
    await rig.press(USER, welcome, "Link")
    choice = await rig.tg.wait_for_bot_message(USER)
    assert [b.text for b in choice.buttons][:3] == ["Binance", "Bybit", "OKX"]
    assert not rig.tg.errors


async def test_wrong_okx_passphrase_says_passphrase_not_revoked(rig, exchanges):
    """OKX answers 50105 for a wrong passphrase: the key works, so never tell the user to delete it."""
    key = exchanges["okx"].add_key()
    reply = await rig.say(USER, f"/link okx {key.api_key} {key.secret} wrong-{key.passphrase}")
    assert "passphrase does not match" in reply.text, rig.tg.transcript(USER)
    assert "revoked" not in reply.text and "Delete the old key" not in reply.text
