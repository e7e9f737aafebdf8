"""Checkers: how the poller checks one kind of connection (exchange keys here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.clock import Clock
from services.exchanges import ExchangeHub
from services.polling import CheckResult, Claimed
from services.probes import KeyInfo, ProbeResult, probe
from services.vault import Credentials, Vault, VaultError
from services.verdicts import Verdict


async def verify_key(hub: ExchangeHub, exchange: str, credentials: Credentials, clock: Clock) -> ProbeResult:
    """The full probe a new or replacement key must pass before it is saved."""
    client = await hub.client(exchange, credentials)
    return await probe(client, clock=clock, with_key_info=True, with_balances=True)


@dataclass
class ExchangeChecker:
    """Probes an exchange key; balances load only every ``balances_every`` (they cost more weight)."""

    hub: ExchangeHub
    vault: Vault
    clock: Clock
    balances_every: timedelta = timedelta(minutes=30)

    async def __call__(self, claimed: Claimed) -> CheckResult:
        try:
            credentials = self.vault.open(claimed.credentials)
        except VaultError as error:
            return CheckResult(Verdict.UNKNOWN, str(error))
        now = self.clock.now()
        with_balances = claimed.balances_at is None or now - claimed.balances_at >= self.balances_every
        client = await self.hub.client(claimed.exchange, credentials)
        # What we knew about the key lets the probe tell "expired by policy" from "revoked".
        known = KeyInfo.from_json(claimed.key_info) if claimed.key_info else None
        result = await probe(
            client, clock=self.clock, with_key_info=True, with_balances=with_balances, known=known
        )
        return CheckResult(
            verdict=result.verdict,
            detail=result.detail,
            key_info=result.key_info.to_json() if result.key_info is not None else None,
            balances=result.balances,
            weight=result.weight,
        )
