"""Start-up against an unreachable Telegram: a clear line, retries with back-off, no traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys

from bot.runner import RETRY_MAX_S, connect_telegram
from sandbox.telegram import running_local_telegram
from services.core.vault import generate_key


async def test_telegram_down_at_start_is_retried_with_back_off(caplog):
    async with running_local_telegram(rate_limits=False) as tg:
        bot = tg.make_bot()
        tg.set_down(True)  # Telegram's front end answers 502 pages
        waits: list[float] = []

        async def pause(seconds: float) -> None:  # stands in for the wait; nothing sleeps
            waits.append(seconds)
            if len(waits) == 8:
                tg.set_down(False)

        with caplog.at_level(logging.WARNING, logger="bot.runner"):
            assert await connect_telegram(bot, bot.get_me, asyncio.Event(), pause=pause)
        await bot.session.close()
    assert waits == [1, 2, 4, 8, 16, 32, RETRY_MAX_S, RETRY_MAX_S]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 8
    assert all(line.startswith(f"Telegram is unreachable at {tg.url} (") for line in lines)
    assert all(tg.token not in line for line in lines)


async def test_stopping_while_telegram_is_unreachable_ends_the_retries():
    async with running_local_telegram(rate_limits=False) as tg:
        bot = tg.make_bot()
        tg.set_down(True)
        stop = asyncio.Event()

        async def pause(_seconds: float) -> None:
            stop.set()  # SIGTERM arrives during the first wait

        assert not await connect_telegram(bot, bot.get_me, stop, pause=pause)
        await bot.session.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_process_keeps_running_while_telegram_is_unreachable(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BOT_TOKEN": "123456:UNREACHABLE",
        "TELEGRAM_API_URL": f"http://127.0.0.1:{_free_port()}",  # nobody listens there
        "VAULT_KEY": generate_key(),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
        "WEB_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Telegram is unreachable" in line:
                break
        os.kill(process.pid, signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    log = "".join(lines) + rest
    assert process.returncode == 0, log
    assert "Telegram is unreachable at http://127.0.0.1:" in log and "retrying in 1 s" in log
    assert "worker" in log and "started" in log  # checking and queueing go on meanwhile
    assert "Traceback" not in log
    assert "alembic" not in log.lower()  # migrations ran, quietly


async def test_migrate_role_brings_the_schema_up_to_date_and_returns(tmp_path):
    from bot.runner import migrate
    from bot.settings import Settings
    from services.storage.db import create_engine, migrations_current

    url = f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}"
    await migrate(Settings(_env_file=None, database_url=url))
    engine = create_engine(url)
    try:
        assert await migrations_current(engine)
    finally:
        await engine.dispose()
