"""The HTTP side (issues 7.2/7.3): the webhook behind its secret, a clean switch between webhook and
polling, /healthz, /readyz, /metrics. ``python -m bot`` stopping cleanly on SIGTERM is
tests/test_startup.py's (one real process for an unreachable Telegram, polling and SIGTERM).

Telegram is the local Bot API server in this process; the web app is served by aiohttp's test
server, or by :func:`bot.runner.run_roles` itself on a free port. Nothing sleeps: every wait is on
a condition (a request reaching the local Telegram, an update processed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bot.app import build_bot, build_context, build_dispatcher, close_context
from bot.context import AppContext
from bot.runner import run_roles
from bot.settings import Settings
from bot.web import WEBHOOK_PATH, build_web_app
from bot.worker import Worker
from sandbox.exchanges.binance import LocalBinance
from sandbox.telegram import LocalTelegram
from services.core.vault import Credentials, generate_key
from services.monitoring import outbox
from services.storage.connections import new_connection
from services.storage.db import create_engine, session_factory
from services.storage.models import User
from services.storage.users import get_or_create_user
from tests.harness import TOKEN, Tracker, running_bot
from tests.production_net import ProductionNet

USER = 901
SECRET = "webhook-Secret_0123456789"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_URL = "https://bot.example.test/telegram"  # the local Telegram, like the real one, wants https


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    server = LocalTelegram(token=TOKEN, rate_limits=False)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def make_settings(tmp_path: Path, tg: LocalTelegram, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bot_token": TOKEN,
        "telegram_api_url": tg.url,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'web.db'}",
        "vault_key": [generate_key()],
        "web_port": 0,
    }
    return Settings(_env_file=None, **(values | overrides))


@pytest.fixture
async def app(tmp_path, tg) -> AsyncIterator[AppContext]:
    context = await build_context(make_settings(tmp_path, tg, webhook_secret=SECRET))
    try:
        yield context
    finally:
        await close_context(context)


@contextlib.asynccontextmanager
async def serving(web_app: aiohttp.web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(web_app)) as client:
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def users(app: AppContext) -> int:
    async with app.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


# ----------------------------------------------------------------------------- webhook


async def test_webhook_processes_only_updates_with_the_secret(app, tg):
    bot = build_bot(app.settings)
    dp = build_dispatcher(app)
    tracker = Tracker(dp)
    tg.add_user(USER)
    try:
        async with serving(build_web_app(app, bot, dp)) as client:
            refused = tg.user_sends(USER, "/start")  # the JSON Telegram would POST
            non_ascii = {HEADER: "ключ-" + SECRET}  # once a 500: aiogram's compare_digest on str raised
            for headers in ({HEADER: "wrong"}, {HEADER: SECRET.upper()}, {HEADER: ""}, {}, non_ascii):
                response = await client.post(WEBHOOK_PATH, json=refused, headers=headers)
                assert response.status == 401, headers
            garbage = await client.post(WEBHOOK_PATH, data=b"\x00not json", headers={HEADER: "x"})
            assert garbage.status == 401  # refused before the body is even read

            accepted = tg.user_sends(USER, "/help")
            response = await client.post(WEBHOOK_PATH, json=accepted, headers={HEADER: SECRET})
            assert response.status == 200
            await tracker.wait([accepted["update_id"]])
            # Channel posts and edits, even if Telegram delivered them here, get no answer.
            post = tg.user_sends(USER, "/start", chat_type="channel", chat_id=-1001)
            edit = tg.user_edits(USER, accepted["message"]["message_id"], "/start")
            for update in (post, edit):
                assert (await client.post(WEBHOOK_PATH, json=update, headers={HEADER: SECRET})).status == 200
            await tracker.wait([post["update_id"], edit["update_id"]])
    finally:
        await bot.session.close()
    [answer] = tg.bot_messages(USER)
    assert answer.text.startswith("Commands"), tg.transcript(USER)  # /help, not the refused /start
    assert tg.bot_messages(-1001) == [] and refused["update_id"] not in tracker.done
    assert await users(app) == 1 and not tg.errors


async def test_without_a_dispatcher_there_is_no_webhook_route(app):
    async with serving(build_web_app(app)) as client:
        response = await client.post(WEBHOOK_PATH, json={"update_id": 1}, headers={HEADER: SECRET})
        assert response.status in (404, 405)


async def test_run_roles_sets_the_webhook_then_a_polling_restart_deletes_it(tmp_path, tg):
    loop = asyncio.get_running_loop()
    port = free_port()
    settings = make_settings(tmp_path, tg, webhook_url=WEBHOOK_URL, web_port=port)
    tg.add_user(USER)
    stop = asyncio.Event()
    running = asyncio.create_task(run_roles(settings, role="all", webhook=True, stop=stop))
    try:
        await tg.wait_for(lambda: tg.webhook, timeout=20)
        secret = settings.webhook_secret  # none configured: made up for this process
        assert len(secret) >= 32
        assert tg.webhook == {
            "url": WEBHOOK_URL,
            "allowed_updates": ["callback_query", "edited_message", "message"],
            "max_connections": 40,
            "secret_token": secret,
        }
        assert not any(r.method == "getUpdates" for r in tg.requests)  # webhook mode does not poll

        # The real server run_roles started answers Telegram's POSTs (and the operator's GETs).
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            update = tg.user_sends(USER, "/help")
            async with http.post(f"{base}{WEBHOOK_PATH}", json=update, headers={HEADER: "nope"}) as response:
                assert response.status == 401
            async with http.post(f"{base}{WEBHOOK_PATH}", json=update, headers={HEADER: secret}) as response:
                assert response.status == 200
        assert (await tg.wait_for_bot_message(USER)).text.startswith("Commands")

        stop.set()
        await asyncio.wait_for(running, 10)
        assert tg.webhook is not None  # stopping leaves the webhook for the next instance

        # Back to polling: the webhook goes (else getUpdates would be refused) and updates flow.
        stop = asyncio.Event()
        running = asyncio.create_task(run_roles(settings, role="all", webhook=False, stop=stop))
        await tg.wait_for(lambda: tg.webhook is None and tg.waiting_polls > 0, timeout=20)
        tg.user_sends(USER, "/start")
        assert "keysentry" in (await tg.wait_for_bot_message(USER)).text
        stop.set()
        await asyncio.wait_for(running, 10)
        assert not [r for r in tg.errors if r.method != "getUpdates"], tg.transcript()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        for sig in (signal.SIGTERM, signal.SIGINT):  # run_roles installed its own
            loop.remove_signal_handler(sig)


# ----------------------------------------------------------------------------- health and readiness


async def test_healthz_and_readyz_on_a_migrated_database(app):
    async with serving(build_web_app(app)) as client:
        health = await client.get("/healthz")
        assert (health.status, await health.text()) == (200, "ok")
        ready = await client.get("/readyz")
        assert (ready.status, await ready.text()) == (200, "ready")


def _broken_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not an SQLite file\n" * 200)
    return f"sqlite+aiosqlite:///{path}"


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("unmigrated", "migrations pending"),
        ("postgres-nobody-listens", "database unavailable"),
        ("garbage-file", "database unavailable"),
    ],
)
async def test_readyz_is_503_when_the_database_is_not_usable(app, tmp_path, database, reason):
    url = {
        "unmigrated": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
        "postgres-nobody-listens": f"postgresql+asyncpg://keysentry:pw@127.0.0.1:{free_port()}/keysentry",
        "garbage-file": _broken_sqlite(tmp_path),
    }[database]
    engine = create_engine(url)
    broken = dataclasses.replace(app, engine=engine, sessions=session_factory(engine))
    try:
        async with serving(build_web_app(broken)) as client:
            ready = await client.get("/readyz")
            assert ready.status == 503
            assert (await ready.text()).startswith(reason)
            assert (await client.get("/healthz")).status == 200  # alive, just not ready
    finally:
        await engine.dispose()


# ----------------------------------------------------------------------------- metrics


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def test_metrics_show_checks_and_the_outbox_in_prometheus_format(tmp_path):
    net = ProductionNet()
    binance = await net.serve_exchange(LocalBinance())
    try:
        async with running_bot(
            f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}", transport=net.transport
        ) as rig:
            key = binance.add_key()
            now = rig.clock.now()
            async with rig.app.sessions.begin() as session:
                await get_or_create_user(session, USER, "en", now)
                session.add(
                    new_connection(
                        rig.app.vault,
                        user_id=USER,
                        exchange="binance",
                        label="Main",
                        credentials=Credentials(key.api_key, key.secret),
                        now=now,
                    )
                )
                outbox.enqueue(session, user_id=USER, kind="test", payload={}, now=now)
            async with serving(build_web_app(rig.app)) as client:
                before = await (await client.get("/metrics")).text()
                await Worker(rig.app, rig.bot).poll()  # one real check against the local Binance
                response = await client.get("/metrics")
                after = await response.text()
    finally:
        await binance.close()
    assert response.status == 200 and response.content_type == "text/plain"
    checks = ("keysentry_checks_total", {"exchange": "binance", "verdict": "ok"})
    assert (sample(after, checks[0], **checks[1]) or 0) == (sample(before, checks[0], **checks[1]) or 0) + 1
    assert sample(after, "keysentry_outbox_depth") == 1
    assert sample(after, "keysentry_probe_seconds_count", exchange="binance") is not None
    for name in ("keysentry_telegram_429_total", "keysentry_leases_held"):
        assert sample(after, name) is not None, name
