"""The HTTP side: Telegram webhook (secret-checked), Prometheus metrics, health and readiness."""

from __future__ import annotations

import logging
import secrets

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from bot.context import AppContext
from bot.metrics import METRICS
from services.monitoring import outbox
from services.storage.db import migrations_current

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/telegram"


def build_web_app(app: AppContext, bot: Bot | None = None, dp: Dispatcher | None = None) -> web.Application:
    """Operator endpoints always; the webhook route only when a dispatcher is given."""
    web_app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        try:
            async with app.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            if not await migrations_current(app.engine):
                return web.Response(status=503, text="migrations pending")
        except Exception as error:  # any database failure means: not ready
            return web.Response(status=503, text=f"database unavailable: {type(error).__name__}")
        return web.Response(text="ready")

    async def metrics(_: web.Request) -> web.Response:
        async with app.sessions() as session:
            METRICS.outbox_depth.set(await outbox.depth(session))
        return web.Response(
            body=generate_latest(METRICS.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    if dp is not None and bot is not None:
        _SecretCheckedHandler(dp, bot, secret_token=webhook_secret(app)).register(web_app, path=WEBHOOK_PATH)
    return web_app


class _SecretCheckedHandler(SimpleRequestHandler):
    """aiogram compares the header with ``secrets.compare_digest`` on str, which raises (a 500) on
    a non-ASCII value; compared as bytes, any wrong header is just a 401."""

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        given = telegram_secret_token.encode("utf-8", "surrogateescape")
        return bool(self.secret_token) and secrets.compare_digest(given, str(self.secret_token).encode())


def webhook_secret(app: AppContext) -> str:
    """The configured secret, or one made up for this process (then only this process can be the target)."""
    if not app.settings.webhook_secret:
        app.settings.webhook_secret = secrets.token_urlsafe(32)
    return app.settings.webhook_secret


async def start_web(web_app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # The bound address, not the requested one: with WEB_PORT=0 only this says where /metrics is.
    bound_host, bound_port = runner.addresses[0][:2] if runner.addresses else (host, port)
    log.info("http listening on %s:%s", bound_host, bound_port)
    return runner
