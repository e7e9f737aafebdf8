"""Checkers: how the poller checks each kind of connection (exchange keys, 3Commas accounts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.clock import Clock
from services.core.vault import Credentials, Vault
from services.core.verdicts import Verdict
from services.exchanges.budget import Deferred, OverShare
from services.exchanges.egress import whitelist_of
from services.exchanges.hub import ExchangeHub
from services.exchanges.open_orders import FUTURES_VENUES
from services.exchanges.probes import KeyInfo, ProbeResult, probe, wallet_balances
from services.monitoring.incidents import Observation
from services.monitoring.polling import CheckResult, Claimed
from services.threecommas.checks import (
    Snapshot,
    TcState,
    Thresholds,
    fetch_state,
    price_requests,
    run_checks,
)
from services.threecommas.client import ThreeCommasAccess
from services.threecommas.errors import Banned, ThreeCommasError
from services.threecommas.recreate import store_failed_deal


async def verify_key(
    hub: ExchangeHub, exchange: str, credentials: Credentials, clock: Clock, *, user_id: int
) -> ProbeResult:
    """The full probe a new or replacement key must pass before it is saved, from the user's route.

    It is the user's own action, so it draws on their fair share (``interactive_for``): one user
    linking key after key cannot spend the part of the budget kept for everyone's checks. Past
    that share the probe says the exchange is rate-limiting, with when to try again; nothing is
    sent and, by the caller, nothing saved.
    """
    client = await hub.client(exchange, credentials, egress=hub.egress_for(user_id), interactive_for=user_id)
    try:
        return await probe(client, clock=clock, with_key_info=True, with_balances=True)
    except OverShare as over:
        detail = f"too many checks for this user just now; try again in {math.ceil(over.retry_after_s)} s"
        return ProbeResult(Verdict.RATE_LIMITED, None, detail, None, None, 0, clock.now())


class _SealedKeyChecker:
    """Opens the stored credentials before a check. A ``VaultError`` propagates: credentials the
    vault cannot open are the operator's error (a lost or rotated ``VAULT_KEY``), which the poller
    reports to the operator without a verdict, an incident or a user alert."""

    vault: Vault

    async def __call__(self, claimed: Claimed) -> CheckResult:
        return await self.check(claimed, self.vault.open(claimed.credentials))

    async def check(self, claimed: Claimed, credentials: Credentials) -> CheckResult:
        raise NotImplementedError


def _balances_due(checked_at: datetime | None, now: datetime, every: timedelta) -> bool:
    """Balances cost more weight (3Commas even asks the exchange for them): load them every ``every``."""
    return checked_at is None or now - checked_at >= every


FUTURES_BALANCES = "futures_balances"
"""``check_state`` entry of an exchange connection: its key's futures wallet (``balances`` shape),
loaded with the spot balances when the key may trade futures on a separate API."""


@dataclass
class ExchangeChecker(_SealedKeyChecker):
    """Probes an exchange key; balances load only every ``balances_every`` (they cost more weight)."""

    hub: ExchangeHub
    vault: Vault
    clock: Clock
    balances_every: timedelta = timedelta(minutes=30)
    # A check waits at most this long for its route's budget, then comes back later
    # (CheckResult.deferred_s): a check waiting in one of the poller's slots would hold up the
    # checks of other routes and exchanges behind it.
    defer_after_s: float = 2.0

    async def check(self, claimed: Claimed, credentials: Credentials) -> CheckResult:
        with_balances = _balances_due(claimed.balances_at, self.clock.now(), self.balances_every)
        egress = self.hub.egress_for(claimed.user_id, whitelist_of(claimed.key_info))
        client = await self.hub.client(
            claimed.exchange, credentials, egress=egress, defer_after_s=self.defer_after_s
        )
        # What we knew about the key lets the probe tell "expired by policy" from "revoked".
        known = KeyInfo.from_json(claimed.key_info) if claimed.key_info else None
        try:
            result = await probe(
                client, clock=self.clock, with_key_info=True, with_balances=with_balances, known=known
            )
        except Deferred as deferred:
            return CheckResult(Verdict.UNKNOWN, deferred_s=deferred.retry_after_s, egress=egress.name)
        checked = CheckResult.from_probe(result, egress.name)
        venue = FUTURES_VENUES.get(claimed.exchange)
        allowed = result.key_info.permissions if result.key_info is not None else ()
        if venue is None or result.balances is None or "futures" not in allowed:
            return checked
        # The key may trade futures (Binance ``enableFutures``): /status shows that wallet too,
        # refreshed with the spot balances. Its separate API costs its own weight.
        futures = await wallet_balances(
            await self.hub.client(venue, credentials, egress=egress, defer_after_s=self.defer_after_s)
        )
        if futures is None:
            return checked
        return replace(checked, check_state={**claimed.check_state, FUTURES_BALANCES: futures})


# Public ticker weight on the heaviest supported exchange (Binance GET /api/v3/ticker/price, one symbol).
TICKER_WEIGHT = 2
MAX_TICKERS_PER_POLL = 20


@dataclass
class ThreeCommasChecker(_SealedKeyChecker):
    """Checks a 3Commas key and what it shows: accounts, deals, SmartTrades, frozen UPNL, failures.

    Live prices for the stale-UPNL check come from public tickers through the shared exchange
    budget, at most ``MAX_TICKERS_PER_POLL`` per poll.
    """

    access: ThreeCommasAccess
    hub: ExchangeHub
    vault: Vault
    clock: Clock
    thresholds: Thresholds = field(default_factory=Thresholds)
    balances_every: timedelta = timedelta(minutes=30)

    async def check(self, claimed: Claimed, credentials: Credentials) -> CheckResult:
        previous = Snapshot.from_dict(claimed.check_state) if claimed.check_state else None
        checked = previous.balances_checked_at if previous else None
        reload = _balances_due(checked, self.clock.now(), self.balances_every)
        state, key_error = None, None
        async with self.access.open(credentials) as client:
            try:
                state = await fetch_state(client, reload_balances=reload)
            except ThreeCommasError as error:
                key_error = error
        prices = await self._prices(state) if state is not None else {}
        outcome = run_checks(
            state,
            previous,
            prices=prices,
            now=self.clock.now(),
            thresholds=self.thresholds,
            key_error=key_error,
        )
        key = next(o for o in outcome.observations if o.check_kind == "tc_key")
        return CheckResult(
            verdict=key.verdict,
            detail=key.detail,
            symptoms=tuple(o for o in outcome.observations if o.check_kind != "tc_key"),
            check_state=outcome.snapshot.to_dict(),
            # 3Commas is called from this host's own IP (ThreeCommasAccess.ip): the direct route.
            blocks_our_ip=isinstance(key_error, Banned),
        )

    async def _prices(self, state: TcState) -> dict[str, float]:
        prices: dict[str, float] = {}
        wanted = [(ex, sym) for ex, symbols in price_requests(state).items() for sym in sorted(symbols)]
        for exchange, symbol in wanted[:MAX_TICKERS_PER_POLL]:
            try:
                public = await self.hub.public(exchange)
                await self.hub.budgets.acquire(exchange, TICKER_WEIGHT)
                ticker = await public.fetch_ticker(symbol)
            except Exception:  # no price means no stale-UPNL verdict this time, never a false one
                continue
            if ticker.get("last"):
                prices[symbol] = float(ticker["last"])
        return prices

    async def store_recreate_plan(
        self, session: AsyncSession, user_id: int, connection_id: int, observation: Observation, now: datetime
    ) -> int | None:
        """A failed or cancelled deal gets a stored recreate plan, so its button carries a short id."""
        plan = observation.subject.get("recreate")
        if not plan:
            return None
        return await store_failed_deal(
            session,
            user_id=user_id,
            tc_connection_id=connection_id,
            plan=plan,
            error=str(observation.subject.get("error") or ""),
            now=now,
        )
