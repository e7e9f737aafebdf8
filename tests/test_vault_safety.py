"""A wrong VAULT_KEY is an operator error found at start-up, never a wave of false alerts (issue 11.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.runner import migrate, rotate_vault, run_roles
from bot.settings import Settings
from services.core.clock import FakeClock
from services.core.vault import Credentials, Vault, generate_key
from services.storage.connections import new_connection
from services.storage.db import create_engine, session_factory
from services.storage.models import Connection, ConversationState
from services.storage.sealed import SEALED_FIELD
from services.storage.users import get_or_create_user

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
