"""A wrong VAULT_KEY is an operator error found at start-up, never a wave of false alerts (issue 11.3)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.metrics import METRICS
from bot.runner import migrate, rotate_vault, run_roles
from bot.settings import Settings
from services.core.clock import FakeClock
from services.core.vault import Credentials, Vault, generate_key
from services.storage.connections import new_connection
from services.storage.db import create_engine, session_factory
from services.storage.models import Connection, ConversationState, Incident, OutboxMessage
from services.storage.sealed import SEALED_FIELD
from services.storage.users import get_or_create_user
from tests.test_monitoring import monitor

SECRET = "Zx9SuperSecretValue0123456789abcdefABCDEF0123456789xyz"


async def _database_sealed_with(tmp_path: Path, key: str) -> str:
    """A database holding one connection and one half-done wizard, both sealed with ``key``."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}"
    await migrate(Settings(_env_file=None, database_url=url))
    vault, now = Vault([key]), FakeClock().now()
    engine = create_engine(url)
    async with session_factory(engine).begin() as session:
        await get_or_create_user(session, 42, "en", now)
        session.add(
            new_connection(
                vault,
                user_id=42,
                exchange="binance",
                label="",
                credentials=Credentials("k" * 64, SECRET),
                now=now,
            )
        )
        fragment = vault.seal(Credentials("A" * 64, "")).decode()
        session.add(
            ConversationState(
                key="fsm:42:42", state="Link:secret", data={SEALED_FIELD: fragment}, updated_at=now
            )
        )
    await engine.dispose()
    return url


@pytest.mark.attack("VAULT_KEY replaced without rotating: the bot starts and alerts every user")
async def test_a_vault_key_that_opens_nothing_stops_the_start_with_one_line(tmp_path):
    url = await _database_sealed_with(tmp_path, generate_key())
    settings = Settings(
        _env_file=None, bot_token="123456:NEVER-USED", database_url=url, vault_key=[generate_key()]
    )
    # SystemExit with a message: Python prints that one line to stderr and exits 1, no traceback.
    with pytest.raises(SystemExit) as stopped:
        await run_roles(settings, stop=asyncio.Event())
    assert str(stopped.value).startswith("VAULT_KEY does not open the stored credentials")
    assert "\n" not in str(stopped.value)


@pytest.mark.attack("rotate-vault with a wrong key: traceback, wizard state left behind")
async def test_rotate_vault_reseals_wizard_state_and_fails_in_one_line_on_a_wrong_key(tmp_path):
    old = generate_key()
    url = await _database_sealed_with(tmp_path, old)
    with pytest.raises(SystemExit) as stopped:
        await rotate_vault(Settings(_env_file=None, database_url=url, vault_key=[generate_key()]))
    assert str(stopped.value).startswith("VAULT_KEY does not open the stored secrets")

    new = generate_key()
    assert await rotate_vault(Settings(_env_file=None, database_url=url, vault_key=[new, old])) == 2
    engine = create_engine(url)
    only_new = Vault([new])
    async with session_factory(engine)() as session:
        assert only_new.open((await session.scalars(select(Connection))).one().credentials).secret == SECRET
        state = (await session.scalars(select(ConversationState))).one()
        assert only_new.open(state.data[SEALED_FIELD].encode()).api_key == "A" * 64
    await engine.dispose()


ADMIN = 9000
UNAVAILABLE = "temporarily unavailable"


@pytest.mark.attack("VAULT_KEY changed after start: the user of an unopenable row gets a false alert")
async def test_a_credential_that_will_not_open_at_run_time_is_the_operators_error(tmp_path, caplog):
    """One row sealed under a key this process does not hold, found by the worker at run time: an
    ERROR line, a metric and one admin message; its user hears nothing, no incident is opened, and
    /orders and the buttons answer a neutral "temporarily unavailable". The other user is checked."""
    async with monitor(tmp_path, "binance", admin_chat_ids=frozenset({ADMIN})) as m:
        tg, app = m.rig.tg, m.rig.app
        tg.add_user(ADMIN)
        await m.link(1, "binance")
        unopenable, _ = await m.link(2, "binance")
        async with app.sessions.begin() as session:
            row = await session.get(Connection, unopenable)
            row.credentials = Vault([generate_key()]).seal(Credentials("k" * 64, SECRET))
        before = METRICS.vault_failures.labels("check")._value.get()
        await m.run_for(300)
        assert m.messages(2) == [], tg.transcript(2)
        async with app.sessions() as session:
            incidents = select(Incident).where(Incident.connection_id == unopenable)
            assert (await session.scalars(incidents)).all() == []
            row = await session.get(Connection, unopenable)
            assert row.last_check_at is None and row.state != "failing"
            queued = select(OutboxMessage).where(OutboxMessage.user_id == 2)
            assert (await session.scalars(queued)).all() == []
        assert [r for r in m.exchanges["binance"].requests if r.api_key != "k" * 64]  # user 1 is checked
        [notice] = m.messages(ADMIN)  # five minutes of failing checks, one message
        assert "VAULT_KEY" in notice.text and "rotate-vault" in notice.text
        assert METRICS.vault_failures.labels("check")._value.get() >= before + 5
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all("VAULT_KEY" in e for e in errors), errors

        await m.rig.say(2, "/orders")
        await tg.wait_for_bot_message(2, contains=UNAVAILABLE)
        page = await m.rig.say(2, "/status")
        assert "not checked yet" in page.text and "unexpected" not in page.text
        tg.mark_read(2)
        await m.rig.press(2, page, "Refresh")  # answered "Checking…" at once: the text comes as a message
        await tg.wait_for_bot_message(2, contains=UNAVAILABLE)
        tg.mark_read(2)
        await m.rig.press(2, page, "Orders")  # answered "Loading…" at once: the text comes as a message
        await tg.wait_for_bot_message(2, contains=UNAVAILABLE)
        assert not [x for x in tg.bot_messages(2) if "went wrong" in x.text or "decrypt" in x.text]
        assert not [e for e in tg.errors if "query is too old" not in (e.description or "")], tg.transcript(2)
