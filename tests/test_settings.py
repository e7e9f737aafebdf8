"""Settings: bad values stop start-up with one clear line naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.settings import SettingsError, load_settings
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


def test_process_prints_one_line_without_traceback(tmp_path):
    # aiogram would end this with a TokenValidationError traceback; settings stop it first.
    result = _run_bot({"BOT_TOKEN": "abc"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("BOT_TOKEN is invalid (not a token from @BotFather)")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_vault_key_refuses_and_offers_a_fresh_key(tmp_path):
    result = _run_bot({"BOT_TOKEN": "1:x"}, tmp_path)
    assert result.returncode == 2
    assert "VAULT_KEY is missing" in result.stderr
    offered = result.stderr.strip().splitlines()[-1].removeprefix("VAULT_KEY=")
    assert load_settings(vault_key=offered).vault_key == [offered]
