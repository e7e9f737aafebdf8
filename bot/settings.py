"""Configuration from the environment and `.env`.

Every variable is validated up front so a typo stops start-up with one line that names the
variable and shows a valid value, instead of a traceback minutes later.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from services.core.vault import parse_keys
from services.exchanges.egress import DIRECT, PROXY_SCHEMES

OFFICIAL_TELEGRAM_API = "https://api.telegram.org"
OFFICIAL_THREECOMMAS_API = "https://api.3commas.io/public/api"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/keysentry.db"
_TOKEN = re.compile(r"\d+:\S+")

EXAMPLES = {
    "BOT_TOKEN": "123456789:AAE... (from @BotFather)",
    "TELEGRAM_API_URL": OFFICIAL_TELEGRAM_API,
    "DATABASE_URL": f"{DEFAULT_DATABASE_URL} or postgresql+asyncpg://user:pass@host:5432/keysentry",
    "VAULT_KEY": (
        "a Fernet key such as 'dGhpcy1pcy1hLTMyLWJ5dGUta2V5LWV4YW1wbGUhIQ=='; "
        "several, comma-separated, newest first"
    ),
    "POLL_INTERVAL_SECONDS": "60 (an integer from 10 to 86400)",
    "EXCHANGE_URL_OVERRIDES": '{"binance": "http://127.0.0.1:9001"}',
    "EXCHANGE_WEIGHT_PER_MINUTE": '{"okx": 1200}',
    "THREECOMMAS_API_URL": OFFICIAL_THREECOMMAS_API,
    "ALLOWED_USER_IDS": "12345,67890",
    "ADMIN_CHAT_IDS": "12345,-1001234567890",
    "CANARY_KEYS": '{"binance": {"api_key": "...", "secret": "..."}}',
    "LOG_LEVEL": "INFO (one of DEBUG, INFO, WARNING, ERROR)",
    "WEBHOOK_URL": "https://bot.example.com/telegram",
    "WEBHOOK_SECRET": "a random string of 1-256 characters A-Z a-z 0-9 _ -",
    "WEB_PORT": "8080",
    "PAID_BROADCAST_RATE_PER_SECOND": "100 (an integer from 1 to 1000)",
    "EGRESS_IPS": "203.0.113.7,2001:db8::7",
    "EGRESS_PROXIES": '{"b": {"url": "http://10.0.0.2:3128", "ip": "198.51.100.8"}}',
}


class SettingsError(Exception):
    """One line for the operator: which variable, and what a valid value looks like."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: str = ""
    telegram_api_url: str = OFFICIAL_TELEGRAM_API
    database_url: str = DEFAULT_DATABASE_URL
    vault_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    poll_interval_seconds: int = Field(default=60, ge=10, le=86_400)
    exchange_url_overrides: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Weight per minute an exchange allows one IP, where it differs from the published figure
    # (services/exchanges/budget.py); we still use only half of it.
    exchange_weight_per_minute: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    threecommas_api_url: str = OFFICIAL_THREECOMMAS_API
    allowed_user_ids: Annotated[frozenset[int], NoDecode] = Field(default_factory=frozenset)
    # Telegram chats told when a service seems to block our IP (services/monitoring/guard.py).
    admin_chat_ids: Annotated[frozenset[int], NoDecode] = Field(default_factory=frozenset)
    # One operator-owned key per service, probed when a wave of key errors looks like a block:
    # if it still works, our IP is fine and the keys are judged one by one again.
    canary_keys: Annotated[dict[str, dict[str, str]], NoDecode] = Field(default_factory=dict)
    log_level: str = "INFO"
    log_json: bool = False
    # How long a worker may hold a connection before another may take it over (crash recovery time).
    lease_seconds: int = Field(default=120, ge=5, le=3600)
    # Telegram allows about 30 messages a second per bot; every sending process shares this rate.
    send_rate_per_second: int = Field(default=25, ge=1, le=30)
    # Telegram's paid broadcasts (sendMessage allow_paid_broadcast, 0.1 Stars a message from the
    # bot's balance): messages beyond the free rate are paid, the total capped at this rate.
    allow_paid_broadcast: bool = False
    paid_broadcast_rate_per_second: int = Field(default=100, ge=1, le=1000)
    # Webhook mode and the operator endpoints (/metrics, /healthz, /readyz).
    webhook_url: str = ""
    webhook_secret: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)

    # The public address(es) exchange requests leave from: what users must put on a key's IP
    # whitelist. Shown in the link reply, /status, alerts and /help.
    egress_ips: Annotated[tuple[str, ...], NoDecode] = ()
    # More routes out, each its own IP and so its own exchange budgets (services/exchanges/egress.py):
    # name -> {"url": HTTP(S)/SOCKS proxy URL, "ip": its public IP}.
    egress_proxies: Annotated[dict[str, dict[str, str]], NoDecode] = Field(default_factory=dict)

    @field_validator("bot_token")
    @classmethod
    def _bot_token(cls, value: str) -> str:
        # aiogram would reject it later with a traceback; the operator gets one line instead. Same
        # rule as aiogram.utils.token (not imported: it loads all of aiogram before this one line).
        token = value.strip()
        if token and not _TOKEN.fullmatch(token):
            raise ValueError("not a token from @BotFather")
        return token

    @field_validator("egress_ips", mode="before")
    @classmethod
    def _egress_ips(cls, value: Any) -> tuple[str, ...]:
        parts = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
        try:
            return tuple(str(ipaddress.ip_address(str(part).strip())) for part in parts if str(part).strip())
        except ValueError:
            raise ValueError("must be comma-separated IP addresses") from None

    @field_validator("egress_proxies", mode="before")
    @classmethod
    def _egress_proxies(cls, value: Any) -> dict[str, dict[str, str]]:
        routes: dict[str, dict[str, str]] = {}
        for name, spec in _json_object(value).items():
            url = spec.get("url") if isinstance(spec, dict) else None
            if name == DIRECT or not isinstance(url, str) or not url.startswith(PROXY_SCHEMES):
                raise ValueError('must map route names to {"url": "http://…|socks5://…", "ip": "…"}')
            ip = str(spec.get("ip") or "")
            try:
                routes[str(name)] = {"url": url, "ip": str(ipaddress.ip_address(ip)) if ip else ""}
            except ValueError:
                raise ValueError(f"route {name}: ip is not an IP address") from None
        return routes

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if url.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            raise ValueError("driver must be sqlite+aiosqlite or postgresql+asyncpg")
        return value

    @field_validator("vault_key", mode="before")
    @classmethod
    def _vault_key(cls, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        try:
            return parse_keys(str(value or ""))
        except (ValueError, TypeError):
            raise ValueError("not a valid Fernet key") from None

    @field_validator("exchange_url_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: Any) -> dict[str, str]:
        parsed = _json_object(value)
        if not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith(("http://", "https://"))
            for k, v in parsed.items()
        ):
            raise ValueError("must map exchange ids to http(s) base URLs")
        return {k.lower(): v.rstrip("/") for k, v in parsed.items()}

    @field_validator("exchange_weight_per_minute", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> dict[str, float]:
        parsed = _json_object(value)
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in parsed.values()
        ):
            raise ValueError("must map exchange ids to positive numbers")
        return {str(k).lower(): float(v) for k, v in parsed.items()}

    @field_validator("canary_keys", mode="before")
    @classmethod
    def _canaries(cls, value: Any) -> dict[str, dict[str, str]]:
        parsed = _json_object(value)
        if not all(
            isinstance(v, dict) and isinstance(v.get("api_key"), str) and isinstance(v.get("secret"), str)
            for v in parsed.values()
        ):
            raise ValueError('must map exchange ids to {"api_key": ..., "secret": ..., "passphrase": ...}')
        return {str(k).lower(): {n: str(x) for n, x in v.items()} for k, v in parsed.items()}

    @field_validator("allowed_user_ids", "admin_chat_ids", mode="before")
    @classmethod
    def _allowed(cls, value: Any) -> frozenset[int]:
        if isinstance(value, (set, frozenset, list, tuple)):
            return frozenset(int(v) for v in value)
        try:
            return frozenset(int(v) for v in str(value or "").replace(" ", "").split(",") if v)
        except ValueError:
            raise ValueError("must be comma-separated Telegram user ids") from None

    @field_validator("telegram_api_url", "threecommas_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
            raise ValueError("only A-Z, a-z, 0-9, _ and - are allowed, at most 256")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("unknown level")
        return level

    @property
    def paid_per_second(self) -> int:
        """Paid broadcasts a second on top of the free rate (0 when they are off)."""
        if not self.allow_paid_broadcast:
            return 0
        return max(self.paid_broadcast_rate_per_second - self.send_rate_per_second, 0)

    @property
    def is_sandbox(self) -> bool:
        return not self.bot_token


def _json_object(value: Any) -> dict[Any, Any]:
    """A JSON object from the environment (or a dict given directly); empty → {}."""
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError("not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    return parsed


def load_settings(**overrides: Any) -> Settings:
    """Settings from env/.env, or :class:`SettingsError` naming the first bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
        reason = str(first["msg"]).removeprefix("Value error, ")
        example = EXAMPLES.get(name, "")
        raise SettingsError(f"{name} is invalid ({reason}); example: {example}") from None
