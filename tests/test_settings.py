"""Settings: bad values stop start-up with one clear line naming the variable."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from bot.__main__ import main
from bot.settings import Settings, SettingsError, load_settings
from services.core.vault import generate_key


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/x"),
        ("DATABASE_URL", "::not a url::"),
        ("EXCHANGE_URL_OVERRIDES", "{binance: nope"),
        ("EXCHANGE_URL_OVERRIDES", '{"binance": "ftp://x"}'),
        ("VAULT_KEY", "short"),
        ("POLL_INTERVAL_SECONDS", "1"),
        ("ALLOWED_USER_IDS", "me,you"),
        ("BOT_TOKEN", "abc"),
        ("BOT_TOKEN", "123:with space"),
    ],
)
def test_malformed_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith(f"{variable} is invalid")
    assert "example:" in message and "\n" not in message


def test_defaults_and_parsing(monkeypatch):
    key = generate_key()
    monkeypatch.setenv("VAULT_KEY", key)
    monkeypatch.setenv("EXCHANGE_URL_OVERRIDES", '{"Binance": "http://127.0.0.1:9001/"}')
    monkeypatch.setenv("ALLOWED_USER_IDS", "1, 2")
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./data/keysentry.db"
    assert settings.poll_interval_seconds == 60
    assert settings.vault_key == [key]
    assert settings.exchange_url_overrides == {"binance": "http://127.0.0.1:9001"}
    assert settings.allowed_user_ids == frozenset({1, 2})


def _run_bot(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """main() sets up logging for a process (a stderr handler on the root logger, library levels);
    this process's other tests get theirs back, and loggers made meanwhile are left as new ones."""
    manager = logging.Logger.manager
    known = {name: x for name, x in manager.loggerDict.items() if isinstance(x, logging.Logger)}
    saved = [(x, x.level, x.handlers[:]) for x in [logging.getLogger(), *known.values()]]
    try:
        yield
    finally:
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
        for name, made in list(manager.loggerDict.items()):
            if isinstance(made, logging.Logger) and name not in known:
                made.setLevel(logging.NOTSET)
                made.handlers.clear()


@pytest.fixture
def run_main(monkeypatch, tmp_path, capsys) -> Callable[..., tuple[int | str | None, str]]:
    """``python -m bot ARGS`` with exactly ``env`` as its configuration (no .env, nothing inherited),
    run by this process: (exit code, stderr). For what main() refuses before it starts anything;
    a process of its own would spend seconds importing aiogram and ccxt first."""
    # What main() imports for the bot's roles, imported before logging is saved (sqlalchemy sets
    # its logger's level on import); in a whole run the test modules imported it long before.
    importlib.import_module("bot.runner")
    monkeypatch.chdir(tmp_path)
    fields = set(Settings.model_fields)
    for name in list(os.environ):
        if name.lower() in fields:
            monkeypatch.delenv(name)

    def run(argv: list[str], **env: str) -> tuple[int | str | None, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        with _logging_restored(), pytest.raises(SystemExit) as exited:
            main(argv)
        return exited.value.code, capsys.readouterr().err

    return run


def test_process_prints_one_line_without_traceback(tmp_path):
    # aiogram would end this with a TokenValidationError traceback; settings stop it first.
    # A real process (cheap: it stops before the heavy imports): stderr is all the operator sees.
    result = _run_bot({"BOT_TOKEN": "abc"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("BOT_TOKEN is invalid (not a token from @BotFather)")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_vault_key_refuses_and_offers_a_fresh_key(run_main):
    code, stderr = run_main(["serve"], BOT_TOKEN="1:x")
    assert code == 2
    assert "VAULT_KEY is missing" in stderr
    offered = stderr.strip().splitlines()[-1].removeprefix("VAULT_KEY=")
    assert load_settings(vault_key=offered).vault_key == [offered]
