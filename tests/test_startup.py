"""Start-up against an unreachable Telegram: a clear line, retries with back-off, no traceback; and
``python -m bot`` itself riding out such an outage, then stopping cleanly on SIGTERM (exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

from bot.runner import RETRY_MAX_S, connect_telegram, run_roles
from bot.settings import Settings
from sandbox.telegram import running_local_telegram
from services.core.vault import generate_key

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:UNREACHABLE"
USER = 901


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


@contextlib.contextmanager
def _refusing_port() -> Iterator[tuple[socket.socket, int]]:
    """A local port nobody answers on (bound, never listening: connections are refused) and held
    until the socket is closed, so a server started later gets that very port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock, sock.getsockname()[1]


class _Unreachable(logging.Handler):
    """Sets ``seen`` on the first "Telegram is unreachable" line."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Telegram is unreachable"):
            self.seen.set()


async def test_stopping_while_telegram_is_unreachable_stops_the_run_cleanly(tmp_path):
    """SIGTERM (here: the stop event its handler sets) during the start-up retries: run_roles
    returns, which is exit 0 for ``python -m bot``; the test below sends the real signal."""
    loop = asyncio.get_running_loop()
    unreachable = _Unreachable()
    logging.getLogger("bot.runner").addHandler(unreachable)
    stop = asyncio.Event()
    try:
        with _refusing_port() as (_, port):
            settings = Settings(
                _env_file=None,
                bot_token="123456:UNREACHABLE",
                telegram_api_url=f"http://127.0.0.1:{port}",
                vault_key=[generate_key()],
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
                web_port=0,
            )
            running = asyncio.create_task(run_roles(settings, stop=stop))
            seen = asyncio.ensure_future(unreachable.seen.wait())
            await asyncio.wait({running, seen}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            seen.cancel()
            assert unreachable.seen.is_set() and not running.done()
            stop.set()
            await asyncio.wait_for(running, 10)
    finally:
        stop.set()
        logging.getLogger("bot.runner").removeHandler(unreachable)
        for sig in (signal.SIGTERM, signal.SIGINT):  # run_roles installed its own
            loop.remove_signal_handler(sig)


class _Output:
    """What a child process writes (stderr into stdout), read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self.lines: list[str] = []

    async def until(self, text: str | None) -> bool:
        """Read up to the first line containing ``text`` (None: to the end): False if the process
        ended first."""
        while line := (await self._stream.readline()).decode():
            self.lines.append(line)
            if text is not None and text in line:
                return True
        return False

    @property
    def text(self) -> str:
        return "".join(self.lines)


async def _or_exit(process: asyncio.subprocess.Process, waiting: Awaitable[object]) -> None:
    """Wait for ``waiting``, or stop waiting when the process ends first."""
    exited = asyncio.ensure_future(process.wait())
    waited = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({exited, waited}, return_when=asyncio.FIRST_COMPLETED)
        if waited.done():
            waited.result()  # an AssertionError of a timed-out wait, with the transcript
    finally:
        for task in (exited, waited):
            task.cancel()


async def test_python_m_bot_rides_out_an_unreachable_telegram_and_exits_0_on_sigterm(tmp_path):
    """The real process, as an operator starts it: Telegram unreachable at start (one line, retried;
    the worker side runs meanwhile), then answering (polling, /start replied), then SIGTERM: exit 0
    within 10 s, "shutting down", no traceback. One process for the whole story: each start costs
    seconds of CPU importing aiogram, ccxt and SQLAlchemy."""
    env = {name: os.environ[name] for name in ("PATH", "LANG", "TMPDIR") if name in os.environ}
    with _refusing_port() as (held, port):
        env |= {
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": f"http://127.0.0.1:{port}",  # nobody answers there yet
            "VAULT_KEY": generate_key(),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
            "WEB_PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = _Output(process)
        draining: asyncio.Task[bool] | None = None
        try:
            # Start-up imports aiogram and ccxt: seconds of CPU, more on a busy machine.
            assert await asyncio.wait_for(output.until("Telegram is unreachable"), 100), output.text
            [line] = [x for x in output.lines if "Telegram is unreachable" in x]
            assert f"Telegram is unreachable at http://127.0.0.1:{port} (" in line, line
            assert "retrying in 1 s" in line and TOKEN not in line, line
            assert any("worker" in x and "started" in x for x in output.lines), output.text  # checks go on
            assert process.returncode is None, output.text

            held.close()  # Telegram comes back, on the same address: the next retry reaches it
            draining = asyncio.create_task(output.until(None))  # keeps the pipe flowing
            async with running_local_telegram(port=port, token=TOKEN, rate_limits=False) as tg:
                await _or_exit(process, tg.wait_for(lambda: tg.waiting_polls > 0, timeout=30))
                assert process.returncode is None, output.text
                tg.user_sends(USER, "/start")
                assert "keysentry" in (await tg.wait_for_bot_message(USER, timeout=15)).text

                process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), 10)
                await asyncio.wait_for(draining, 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            if draining is not None:
                draining.cancel()
    log = output.text
    assert code == 0, log
    assert "Traceback" not in log and "shutting down" in log, log
    assert "alembic" not in log.lower(), log  # migrations ran, quietly


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
