"""What the operator hears when a service seems to block our IP (services/monitoring/guard.py).

One wave → one ERROR log line, one metric increment, one message to each ``ADMIN_CHAT_IDS``
chat, and, where the operator configured one in ``CANARY_KEYS``, a probe of the canary key: if it
still works our IP is fine, the wave is released and the keys are judged one by one again. The
poller itself spaces the service's checks while the wave lasts (``BlockGuard.backing_off``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from html import escape

from aiogram import Bot
from aiogram.utils.i18n import gettext as _

from bot.context import AppContext
from bot.metrics import METRICS
from bot.texts import exchange_name
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.exchanges.probes import probe
from services.monitoring.guard import BlockGuard, Wave

log = logging.getLogger(__name__)


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
            len(wave.keys), service, wave.egress, wave.verdict, service,
        )  # fmt: skip
        METRICS.block_waves.labels(service).inc()
        canary = await self._canary(wave)
        name = exchange_name(service)
        with self.app.i18n.context(), self.app.i18n.use_locale("en"):
            text = "⚠️ " + _(
                "{count} keys on {service} turned to “{verdict}” within minutes. This usually means "
                "{service} is blocking our server's IP, not that the keys died: user alerts for it "
                "are held and its checks are spaced out."
            ).format(count=len(wave.keys), service=escape(name), verdict=wave.verdict)
            if canary is not None:
                text += "\n" + _("Canary key: {verdict}.").format(verdict=canary)
        for chat_id in sorted(self.app.settings.admin_chat_ids):
            await self.bot.send_message(chat_id, text)

    async def _canary(self, wave: Wave) -> Verdict | None:
        """Probe the operator's canary key for the wave's service; an OK releases the wave."""
        entry = self.app.settings.canary_keys.get(wave.service)
        hub = self.app.hub
        if entry is None or hub is None:
            return None
        credentials = Credentials(entry["api_key"], entry["secret"], entry.get("passphrase") or None)
        result = await probe(await hub.client(wave.service, credentials), clock=self.app.clock)
        log.error("canary key on %s answered %s", wave.service, result.verdict)
        self.guard.canary_result(wave.service, result.verdict, self.app.clock.now(), wave.egress)
        return result.verdict
