"""What the operator hears: a service seems to block our IP (services/monitoring/guard.py), or a
stored credential will not open with the configured VAULT_KEY (:class:`VaultAlarm`).

One wave → one ERROR log line, one metric increment, one message to each ``ADMIN_CHAT_IDS``
chat, and, where the operator configured one in ``CANARY_KEYS``, a probe of the canary key from
the wave's egress route: if it still works our IP is fine, the wave is released and the keys are
judged one by one again. Only one worker announces a wave (``BlockGuard.claim_new_waves``); every
worker spaces the service's checks on that route while the wave lasts (``BlockGuard.backing_off``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.utils.i18n import gettext as _

from bot.context import AppContext
from bot.metrics import METRICS
from bot.texts import exchange_name
from bot.views.html import html, join
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.exchanges.probes import probe
from services.monitoring.guard import BlockGuard, Wave
from services.threecommas.errors import ThreeCommasError
from services.threecommas.links import THREECOMMAS

log = logging.getLogger(__name__)


async def tell_admins(bot: Bot, app: AppContext, text: str) -> None:
    """Every ``ADMIN_CHAT_IDS`` chat; one admin who blocked the bot stops nobody after them."""
    for chat_id in sorted(app.settings.admin_chat_ids):
        with contextlib.suppress(TelegramAPIError):
            await bot.send_message(chat_id, text)


@dataclass
class OperatorAlerts:
    app: AppContext
    bot: Bot
    guard: BlockGuard

    async def on_wave(self, wave: Wave) -> None:
        service = wave.service
        log.error(
            "%d keys on %s (egress %s) turned to %s within minutes: treating it as %s blocking our IP; "
            "user alerts for it are held",
            wave.keys, service, wave.egress, wave.verdict, service,
        )  # fmt: skip
        METRICS.block_waves.labels(service).inc()
        canary = await self._canary(wave)
        name = exchange_name(service)
        with self.app.i18n.context(), self.app.i18n.use_locale("en"):
            if wave.banned:
                text = html(
                    "⚠️ "
                    + _(
                        "{service} banned our server's IP: its checks are paused and spaced out, and "
                        "user alerts say their keys are not the problem."
                    ),
                    service=name,
                )
            else:
                text = html(
                    "⚠️ "
                    + _(
                        "{count} keys on {service} turned to “{verdict}” within minutes. This usually means "
                        "{service} is blocking our server's IP, not that the keys died: user alerts for it "
                        "are held and its checks are spaced out."
                    ),
                    count=wave.keys,
                    service=name,
                    verdict=wave.verdict,
                )
            if canary is not None:
                text = join("\n", [text, _("Canary key: {verdict}.").format(verdict=canary)])
        await tell_admins(self.bot, self.app, text)

    async def _canary(self, wave: Wave) -> Verdict | None:
        """Probe the operator's canary key for the wave's service, from the wave's route; an OK
        releases the wave."""
        entry = self.app.settings.canary_keys.get(wave.service)
        if entry is None:
            return None
        credentials = Credentials(entry["api_key"], entry["secret"], entry.get("passphrase") or None)
        if wave.service == THREECOMMAS:
            verdict = await self._threecommas_canary(credentials)
        else:
            hub = self.app.hub
            route = next((r for r in hub.routes if r.name == wave.egress), None)
            client = await hub.client(wave.service, credentials, egress=route)
            verdict = (await probe(client, clock=self.app.clock)).verdict
        log.error("canary key on %s (egress %s) answered %s", wave.service, wave.egress, verdict)
        await self.guard.canary_result(wave.service, wave.egress, verdict, self.app.clock.now())
        return verdict

    async def _threecommas_canary(self, credentials: Credentials) -> Verdict:
        try:
            async with self.app.threecommas.open(credentials) as client:
                await client.validate()
        except ThreeCommasError as error:
            return error.verdict
        return Verdict.OK


@dataclass
class VaultAlarm:
    """A stored credential the configured VAULT_KEY cannot open at run time (the key was changed
    without ``rotate-vault`` after start-up): the operator's error, never the user's key.

    Each occurrence is one ERROR line and a metric increment; the admins (``ADMIN_CHAT_IDS``) are
    told at most once per ``every``, since every check of every such connection fails alike.
    """

    app: AppContext
    every: timedelta = timedelta(hours=1)
    _told_at: datetime | None = field(default=None, init=False)

    async def raised(self, bot: Bot, where: str, connection_ids: Sequence[int] = ()) -> None:
        """``where``: ``check`` (the poller) or ``request`` (a user's command or button)."""
        ids = ", ".join(map(str, connection_ids)) or "?"
        log.error(
            "VAULT_KEY cannot open the stored credentials of connection(s) %s (%s): restore the old key "
            "or run rotate-vault with both keys; no user was alerted",
            ids, where,
        )  # fmt: skip
        METRICS.vault_failures.labels(where).inc(max(1, len(connection_ids)))
        now = self.app.clock.now()
        if self._told_at is not None and now - self._told_at < self.every:
            return
        self._told_at = now
        with self.app.i18n.context(), self.app.i18n.use_locale("en"):
            text = "⚠️ " + _(
                "VAULT_KEY cannot open some stored credentials: their checks are skipped and their users "
                "get “temporarily unavailable”. Restore the previous key, or run rotate-vault with both "
                "keys set."
            )
        await tell_admins(bot, self.app, text)
