"""3Commas symptoms as monitoring observations, and recreating what broke.

A 3Commas key can be perfectly valid while the trading behind it is broken: the exchange key
3Commas holds was revoked or expired, the account is locked, deals stopped updating, deals
failed. Nothing in the 3Commas UI pushes these to the trader, so keysentry reads the state
each poll and turns it into :class:`Observation` s the incident machine understands.

Everything here is pure: :func:`run_checks` gets the fetched state, the previous
:class:`Snapshot`, live prices and the time, and returns observations plus the snapshot to
store. The only I/O is through a client the caller passes in (:func:`fetch_state`,
:func:`recreate`).

Observation kinds (stable, at most 48 characters, as ``incidents.check_kind`` allows):

=============================  ===============================================================
``tc_key``                     the 3Commas key itself (401 → key_invalid/signature_invalid…)
``tc_account:<id>``            an exchange account: key invalid/expired/expiring, locked,
                               auto-balance error
``deal_error:<id>``            an active deal with ``deal_has_error`` or an API-related error, or
                               one 3Commas cannot cancel / close (see below)
``smart_trade_error:<id>``     an active SmartTrade carrying an error, or one 3Commas cannot
                               cancel / close
``stale_upnl:<id>``            a deal whose UPNL 3Commas stopped updating while the market moved
``smart_trade_upnl:<id>``      the same for an entered SmartTrade
``tc_balances:<id>``           3Commas cannot load the account's balances (its key is fine)
``deal_failed:<id>``           *event*: the deal is newly failed or cancelled
``smart_trade_failed:<id>``    *event*: the SmartTrade is newly failed or cancelled
``bot_disabled:<id>``          *event*: a DCA bot that was running is switched off
=============================  ===============================================================

Stale UPNL is judged by recomputation, never by silence: the profit a deal or SmartTrade should
show at the live ticker (from its average entry price and the amount held) is compared with
the profit 3Commas reports. The alarm needs both a gap and that 3Commas' figures have not moved
for ``stale_upnl_after`` — independent of ``updated_at``, which 3Commas may keep touching.

A cancel or a close at market that 3Commas cannot carry out shows as the deal or SmartTrade
staying in the documented pending status (``cancel_pending``, ``cancellation_pending``,
``panic_sell_pending``): it fails at once when the item also carries an error (``error_message``,
``status.error``, ``market_close.status.error``), or when it has stayed pending for
``stuck_after`` since we first saw it so. It is reported under the item's error kind, so one
trade never raises two alerts.

An observation's ``detail`` is an English record for logs and the incident row. What the alert
tells the trader beyond its reason (the lock reason, the frozen and the live profit, the pending
status and for how long) goes into its ``subject`` as a typed finding (:mod:`.findings`), which the
bot words in the trader's language.

State kinds are reported every poll (ok or not) so incidents can open and close; when the
subject disappears (deal closed, account removed) a failing kind gets one last ok observation.
Events are reported once: the snapshot remembers which failed/cancelled ids were already seen,
and the very first run only records them, so connecting a key does not replay its history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.core.verdicts import DETAIL_MAX, Verdict
from services.monitoring.incidents import Observation
from services.threecommas.client import ThreeCommasClient
from services.threecommas.entities import Account, Bot, Deal, SmartTrade, decimal_text
from services.threecommas.errors import ThreeCommasError
from services.threecommas.findings import (
    BALANCES_NOT_LOADING,
    STALE_UPNL,
    AccountSymptom,
    AccountTrouble,
    BalancesFailing,
    StaleBasis,
    StaleUpnl,
    StuckAction,
    StuckClosing,
)
from services.threecommas.recreate import recreate_params

OK = "ok"
GONE = "subject_gone"
ACCOUNT_LOCKED = AccountSymptom.LOCKED.value
KEYS_EXPIRE_SOON = AccountSymptom.KEY_EXPIRES_SOON.value
KEYS_STATE_UNKNOWN = AccountSymptom.KEY_STATE_UNKNOWN.value
AUTO_BALANCE_ERROR = AccountSymptom.AUTO_BALANCE_ERROR.value
DEAL_ERROR = "deal_error"
DEAL_FAILED = "deal_failed"
DEAL_CANCELLED = "deal_cancelled"
BOT_DISABLED = "bot_disabled"
CANNOT_CANCEL = StuckAction.CANCEL.value
CANNOT_CLOSE = StuckAction.CLOSE.value
_CANNOT = {"cancel": StuckAction.CANCEL, "close": StuckAction.CLOSE}
# Quotes whose profit 3Commas' "usd" figures can be compared with one to one.
_USD_QUOTES = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI"})

_EVENT_STATUSES = frozenset({"failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``stale_upnl_after``: how long a deal's price may stay frozen; ``price_epsilon``: the
    relative gap between that frozen price and the live one that counts as "the market moved"
    (small enough to catch a stuck deal, above bid/ask/last differences)."""

    stale_upnl_after: timedelta = timedelta(minutes=15)
    price_epsilon: float = 0.005
    stuck_after: timedelta = timedelta(minutes=15)
    """How long a cancel or close may stay pending without an error before it counts as failed."""
    remembered_finished: int = 1000


@dataclass(frozen=True, slots=True)
class UpnlMark:
    """What 3Commas reported for a deal or SmartTrade last time, and since when exactly that."""

    profit: Decimal | None
    price: Decimal | None
    unchanged_since: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's last good balance as 3Commas reported it."""

    usd: Decimal | None
    at: datetime


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _decimal(raw: Any) -> Decimal | None:
    return Decimal(str(raw)) if raw is not None else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the next run needs to know about this one; :meth:`to_dict` is JSON-safe for storage.

    ``baselined`` turns true after the first successful run: failed deals seen before that are
    history, not news.
    """

    baselined: bool = False
    upnl: Mapping[str, UpnlMark] = field(default_factory=dict)
    seen_failed_deals: frozenset[int] = frozenset()
    seen_failed_smart_trades: frozenset[int] = frozenset()
    failing: frozenset[str] = frozenset()
    balances: Mapping[int, Balance] = field(default_factory=dict)
    balances_checked_at: datetime | None = None
    enabled_bots: frozenset[int] | None = None
    accounts: Mapping[int, Mapping[str, str | None]] = field(default_factory=dict)
    """Per account what /status shows: name, market_code, key_state (see :func:`key_state`)."""
    pending: Mapping[str, datetime] = field(default_factory=dict)
    """Since when each deal or SmartTrade (by its error kind) waits for a cancel or close."""
    named: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """What each failing kind's alert named (pair, account or bot name), so that its recovery
    names the same thing after 3Commas stopped reporting the subject."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "baselined": self.baselined,
            "upnl": {
                ref: {
                    "profit": decimal_text(mark.profit),
                    "price": decimal_text(mark.price),
                    "unchanged_since": mark.unchanged_since.isoformat(),
                }
                for ref, mark in self.upnl.items()
            },
            "seen_failed_deals": sorted(self.seen_failed_deals),
            "seen_failed_smart_trades": sorted(self.seen_failed_smart_trades),
            "failing": sorted(self.failing),
            "balances": {
                str(account_id): {"usd": decimal_text(balance.usd), "at": balance.at.isoformat()}
                for account_id, balance in self.balances.items()
            },
            "balances_checked_at": _iso(self.balances_checked_at),
            "enabled_bots": sorted(self.enabled_bots) if self.enabled_bots is not None else None,
            "accounts": {str(account_id): dict(facts) for account_id, facts in self.accounts.items()},
            "pending": {kind: since.isoformat() for kind, since in self.pending.items()},
            "named": {kind: dict(names) for kind, names in self.named.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Older snapshots (per-deal ``deals`` marks) simply start the UPNL marks afresh."""
        checked = data.get("balances_checked_at")
        bots = data.get("enabled_bots")
        return cls(
            baselined=bool(data.get("baselined")),
            upnl={
                str(ref): UpnlMark(
                    profit=_decimal(raw.get("profit")),
                    price=_decimal(raw.get("price")),
                    unchanged_since=datetime.fromisoformat(raw["unchanged_since"]),
                )
                for ref, raw in (data.get("upnl") or {}).items()
            },
            seen_failed_deals=frozenset(int(i) for i in data.get("seen_failed_deals") or ()),
            seen_failed_smart_trades=frozenset(int(i) for i in data.get("seen_failed_smart_trades") or ()),
            failing=frozenset(data.get("failing") or ()),
            balances={
                int(account_id): Balance(_decimal(raw.get("usd")), datetime.fromisoformat(raw["at"]))
                for account_id, raw in (data.get("balances") or {}).items()
            },
            balances_checked_at=datetime.fromisoformat(checked) if checked else None,
            enabled_bots=frozenset(int(i) for i in bots) if bots is not None else None,
            accounts={int(k): dict(v) for k, v in (data.get("accounts") or {}).items()},
            pending={str(k): datetime.fromisoformat(v) for k, v in (data.get("pending") or {}).items()},
            named={str(k): dict(v) for k, v in (data.get("named") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class TcState:
    """One poll's view of a 3Commas key: its accounts, and active plus recently failed/cancelled
    deals and SmartTrades."""

    accounts: Sequence[Account]
    deals: Sequence[Deal]
    smart_trades: Sequence[SmartTrade]
    bots: Sequence[Bot] | None = None
    balance_errors: Mapping[int, str] | None = None  # None: balances were not reloaded this time


@dataclass(frozen=True, slots=True)
class CheckResult:
    observations: list[Observation]
    snapshot: Snapshot


async def fetch_state(
    client: ThreeCommasClient, *, recent: int = 50, reload_balances: bool = False
) -> TcState:
    """Read what :func:`run_checks` needs (8 requests, plus one ``load_balances`` per account
    with a working key when ``reload_balances``); ThreeCommasError propagates to the caller.

    Failed and cancelled items are read newest-closed first, so a deal opened months ago that
    fails today is inside the ``recent`` window. A deal that fails between two of these calls
    can show up twice; the finished copy wins.
    """
    accounts = await client.accounts()
    balance_errors: dict[int, str] | None = None
    if reload_balances:
        balance_errors = {}
        for account in accounts:
            try:
                await client.load_balances(account.id)
            except ThreeCommasError as error:
                if error.verdict.is_transient:
                    raise
                balance_errors[account.id] = " ".join(p for p in (error.error, error.message) if p)
    deals: dict[int, Deal] = {deal.id: deal for deal in await client.deals(scope="active", limit=1000)}
    for scope in ("failed", "cancelled"):
        for deal in await client.deals(scope=scope, limit=recent, order="closed_at"):
            deals[deal.id] = deal
    trades: dict[int, SmartTrade] = {trade.id: trade for trade in await client.smart_trades(status="active")}
    for status in ("failed", "cancelled"):
        for trade in await client.smart_trades(status=status, limit=recent, order_by="updated_at"):
            trades[trade.id] = trade
    bots = await client.bots()
    return TcState(accounts, list(deals.values()), list(trades.values()), bots, balance_errors)


def _ticker_exchange(account: Account | None) -> str | None:
    """Where the live price of the account's pairs is read: its futures API for a futures account."""
    if account is None:
        return None
    market = account.market
    return market.exchange if market is not None and market.is_derivative else account.exchange_id


def price_requests(state: TcState) -> dict[str, set[str]]:
    """Which ccxt symbols to fetch public tickers for, per ccxt exchange id (active deals and
    SmartTrades only)."""
    accounts = {account.id: account for account in state.accounts}
    wanted: dict[str, set[str]] = {}
    live: list[Deal | SmartTrade] = [*state.deals, *state.smart_trades]
    for item in live:
        exchange = _ticker_exchange(accounts.get(item.account_id or -1))
        if not item.finished and exchange and item.symbol:
            wanted.setdefault(exchange, set()).add(item.symbol)
    return wanted


def run_checks(
    state: TcState | None,
    previous: Snapshot | None,
    *,
    prices: Mapping[str, float | Decimal],
    now: datetime,
    thresholds: Thresholds | None = None,
    key_error: ThreeCommasError | None = None,
) -> CheckResult:
    """Observations for one poll and the snapshot to keep.

    ``key_error`` is the error :func:`fetch_state` raised, if any: then only ``tc_key`` is
    reported (failing, with the error's verdict; transient verdicts stay distinguishable via
    :attr:`Verdict.is_transient`) and the previous snapshot is carried on unchanged.
    """
    limits = thresholds or Thresholds()
    prior = previous or Snapshot()
    if key_error is not None or state is None:
        verdict = key_error.verdict.value if key_error else Verdict.UNKNOWN.value
        detail = str(key_error) if key_error else "no 3Commas state was fetched"
        key_failing = _observation("tc_key", False, verdict, detail, {})
        return CheckResult([key_failing], replace(prior, failing=prior.failing | {"tc_key"}))

    observations = [_observation("tc_key", True, OK, "", {})]
    present: set[str] = {"tc_key"}
    carried: set[str] = set()  # failing kinds we could not judge this time

    balances = dict(prior.balances)
    for account in state.accounts:
        error = (state.balance_errors or {}).get(account.id)
        unjudged = state.balance_errors is None and f"tc_balances:{account.id}" in prior.failing
        if not account.key_broken and error is None and not unjudged:
            balances[account.id] = Balance(account.usd_amount, now)
        last_good = balances.get(account.id)
        observations.append(_account_observation(account, last_good, error))
        present.add(f"tc_account:{account.id}")
        if state.balance_errors is not None and not account.key_broken:
            observations.append(_balances_observation(account, last_good, error))
            present.add(f"tc_balances:{account.id}")
        elif f"tc_balances:{account.id}" in prior.failing:
            carried.add(f"tc_balances:{account.id}")
            present.add(f"tc_balances:{account.id}")

    marks: dict[str, UpnlMark] = {}
    pending: dict[str, datetime] = {}
    live: list[Deal | SmartTrade] = [*state.deals, *state.smart_trades]
    for item in live:
        if item.finished:
            continue
        error_kind = f"deal_error:{item.id}" if isinstance(item, Deal) else f"smart_trade_error:{item.id}"
        present.add(error_kind)
        if item.pending_action:
            pending[error_kind] = prior.pending.get(error_kind, now)
        failure = _closing_failure(item, now - pending.get(error_kind, now), limits)
        if isinstance(item, Deal):
            observations.append(_deal_error_observation(item, failure))
            kind = f"stale_upnl:{item.id}"
        else:
            observations.append(_smart_trade_error_observation(item, failure))
            kind = f"smart_trade_upnl:{item.id}"
        position = _position(item)
        if position is None:
            continue
        present.add(kind)
        mark, stale = _stale_upnl(position, prior.upnl.get(kind), prices, now, limits, kind)
        marks[kind] = mark
        if stale is None:
            carried.add(kind)
        else:
            observations.append(stale)

    for kind in sorted(prior.failing - present):
        names = dict(prior.named.get(kind, {}))
        observations.append(_observation(kind, True, GONE, "no longer reported by 3Commas", names))

    failed_deals = [deal for deal in state.deals if deal.status in _EVENT_STATUSES]
    failed_trades = [trade for trade in state.smart_trades if trade.status in _EVENT_STATUSES]
    enabled_bots = (
        frozenset(bot.id for bot in state.bots if bot.is_enabled)
        if state.bots is not None
        else prior.enabled_bots
    )
    if prior.baselined:
        observations += [_deal_failed_event(d) for d in failed_deals if d.id not in prior.seen_failed_deals]
        observations += [
            _smart_trade_failed_event(t) for t in failed_trades if t.id not in prior.seen_failed_smart_trades
        ]
        if state.bots is not None and prior.enabled_bots is not None:
            observations += [
                _bot_disabled_event(bot)
                for bot in state.bots
                if bot.id in prior.enabled_bots and not bot.is_enabled
            ]

    failing = {o.check_kind for o in observations if not o.ok and not o.is_event}
    kept = failing | (carried & prior.failing)
    named = {kind: names for kind, names in prior.named.items() if kind in kept}
    for observation in observations:
        if observation.check_kind in failing:
            named[observation.check_kind] = _names(observation.subject)
    snapshot = Snapshot(
        baselined=True,
        upnl=marks,
        balances=balances,
        balances_checked_at=now if state.balance_errors is not None else prior.balances_checked_at,
        pending=pending,
        accounts={
            account.id: {
                "name": account.name,
                "market_code": account.market_code,
                "key_state": key_state(account),
            }
            for account in state.accounts
        },
        enabled_bots=enabled_bots,
        seen_failed_deals=_newest(
            prior.seen_failed_deals, (d.id for d in failed_deals), limits.remembered_finished
        ),
        seen_failed_smart_trades=_newest(
            prior.seen_failed_smart_trades, (t.id for t in failed_trades), limits.remembered_finished
        ),
        failing=frozenset(kept),
        named=named,
    )
    return CheckResult(observations, snapshot)


def _names(subject: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(subject[key]) for key in ("pair", "symbol", "name", "bot_name") if subject.get(key)}


def _newest(known: frozenset[int], current: Iterable[int], keep: int) -> frozenset[int]:
    """3Commas ids grow over time, so the highest ``keep`` ids are the ones still in view."""
    return frozenset(sorted(known | set(current), reverse=True)[:keep])


def _observation(
    kind: str, ok: bool, reason: str, detail: str, subject: dict[str, Any], *, is_event: bool = False
) -> Observation:
    if len(detail) > DETAIL_MAX:
        detail = detail[: DETAIL_MAX - 1] + "…"
    return Observation(kind, ok, reason, detail, subject, is_event)


# -- accounts ------------------------------------------------------------------------------------


def _account_observation(
    account: Account, last_good: Balance | None, balance_error: str | None
) -> Observation:
    """One kind per account; the worst symptom names it, the detail lists them all. A broken key
    also stops balances, so that shows here, with the last good balance, not as a second alert."""
    symptoms: list[tuple[AccountSymptom, str]] = []  # with the English record of each, for the detail
    state = (account.api_keys_state or "ok").lower()
    if account.key_broken:
        broken = AccountSymptom.KEY_EXPIRED if state == "expired" else AccountSymptom.KEY_INVALID
        symptoms.append((broken, "3Commas can no longer use this exchange API key"))
    if account.is_locked:
        symptoms.append(
            (AccountSymptom.LOCKED, f"account locked: {account.lock_reason or 'no reason given'}")
        )
    if account.auto_balance_error:
        error_words = f"auto-balance error: {account.auto_balance_error}"
        symptoms.append((AccountSymptom.AUTO_BALANCE_ERROR, error_words))
    if state == "expire_soon":
        symptoms.append((AccountSymptom.KEY_EXPIRES_SOON, "the exchange API key expires soon"))
    elif state not in {"ok", "expired"}:
        symptoms.append((AccountSymptom.KEY_STATE_UNKNOWN, f"3Commas reports the key state {state!r}"))
    trouble = AccountTrouble(
        tuple(symptom for symptom, _ in symptoms),
        lock_reason=account.lock_reason if account.is_locked else None,
        # Entities turn a bare ``true`` into "true": a flag, not words of 3Commas'.
        auto_balance_error=None if account.auto_balance_error == "true" else account.auto_balance_error,
        key_state=account.api_keys_state if state not in {"ok", "expired", "expire_soon"} else None,
    )
    subject = {
        **_account_subject(account, last_good),
        **trouble.to_subject(),
        "balances_error": balance_error,
    }
    if not symptoms:
        return _observation(f"tc_account:{account.id}", True, OK, "", subject)
    detail = f"{account.name}: " + "; ".join(text for _, text in symptoms)
    return _observation(f"tc_account:{account.id}", False, symptoms[0][0].value, detail, subject)


def _account_subject(account: Account, last_good: Balance | None) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "name": account.name,
        "market_code": account.market_code,
        "exchange": account.exchange_id,
        "exchange_name": account.exchange_name,
        "key_state": key_state(account),
        "last_good_usd": decimal_text(last_good.usd) if last_good else None,
        "last_good_at": last_good.at.isoformat() if last_good else None,
    }


def key_state(account: Account) -> str:
    """ok, expires_soon, expired or invalid: the key state /status shows for an account."""
    state = (account.api_keys_state or "ok").lower()
    if state == "expired":
        return "expired"
    if account.api_key_invalid:
        return "invalid"
    return "expires_soon" if state == "expire_soon" else "ok"


def _balances_observation(account: Account, last_good: Balance | None, error: str | None) -> Observation:
    subject = _account_subject(account, last_good)
    kind = f"tc_balances:{account.id}"
    if error is None:
        return _observation(kind, True, OK, "", subject)
    since = f" (last good: {subject['last_good_usd']} USD at {subject['last_good_at']})" if last_good else ""
    failing = BalancesFailing(error, *((last_good.usd, last_good.at) if last_good else (None, None)))
    return _observation(
        kind,
        False,
        BALANCES_NOT_LOADING,
        f"{account.name}: 3Commas cannot load balances: {error}{since}",
        {**subject, **failing.to_subject()},
    )


# -- deal and SmartTrade errors --------------------------------------------------------------------

# 3Commas passes the exchange's complaint through as text; these say the exchange key is at fault.
_KEY_ERROR_PATTERNS: tuple[tuple[re.Pattern[str], Verdict], ...] = (
    (re.compile(r"\bip\b|whitelist|white list", re.I), Verdict.IP_NOT_ALLOWED),
    (re.compile(r"permission|not authori[sz]ed|forbidden|not allowed", re.I), Verdict.PERMISSION_MISSING),
    (re.compile(r"expired", re.I), Verdict.KEY_EXPIRED),
    (re.compile(r"signature", re.I), Verdict.SIGNATURE_INVALID),
    (re.compile(r"api[\s_-]?key|apikey|\bapi\b|invalid key|key is invalid", re.I), Verdict.KEY_INVALID),
)


def _error_verdict(text: str | None) -> Verdict | None:
    if not text:
        return None
    for pattern, verdict in _KEY_ERROR_PATTERNS:
        if pattern.search(text):
            return verdict
    return None


def _deal_subject(deal: Deal) -> dict[str, Any]:
    return {
        "ref": f"deal:{deal.id}",
        "deal_id": deal.id,
        "bot_id": deal.bot_id,
        "bot_name": deal.bot_name,
        "account_id": deal.account_id,
        "pair": deal.pair,
        "symbol": deal.symbol,
        "status": deal.status,
    }


def _closing_failure(
    item: Deal | SmartTrade, pending_for: timedelta, limits: Thresholds
) -> StuckClosing | None:
    """3Commas could not carry out the cancel or close the trader asked for: the item waits in a
    pending status with an error, or longer than ``stuck_after``."""
    action = item.pending_action
    if action is None or (not item.error_text and pending_for < limits.stuck_after):
        return None
    minutes = int(pending_for.total_seconds() // 60)
    return StuckClosing(_CANNOT[action], item.status, minutes, item.error_text)


def _stuck_observation(
    kind: str, item: Deal | SmartTrade, stuck: StuckClosing, subject: dict[str, Any]
) -> Observation:
    label = f"deal {item.id}" if isinstance(item, Deal) else f"SmartTrade {item.id}"
    asked = "cancel it" if stuck.action is StuckAction.CANCEL else "close it at market price"
    detail = f"{label} on {item.pair}: asked to {asked}, still {stuck.status} after {stuck.minutes} min"
    detail += f": {stuck.error}" if stuck.error else ""
    return _observation(kind, False, stuck.action.value, detail, {**subject, **stuck.to_subject()})


def _deal_error_observation(deal: Deal, closing_failure: StuckClosing | None) -> Observation:
    text = deal.error_text
    verdict = _error_verdict(text)
    subject = {**_deal_subject(deal), "error": text}
    kind = f"deal_error:{deal.id}"
    if closing_failure is not None:
        return _stuck_observation(kind, deal, closing_failure, subject)
    if not deal.deal_has_error and verdict is None:
        return _observation(kind, True, OK, "", subject)
    reason = verdict.value if verdict else DEAL_ERROR
    return _observation(
        kind, False, reason, f"deal {deal.id} on {deal.pair}: {text or 'error without text'}", subject
    )


def _smart_trade_subject(trade: SmartTrade) -> dict[str, Any]:
    return {
        "ref": f"smart_trade:{trade.id}",
        "smart_trade_id": trade.id,
        "account_id": trade.account_id,
        "pair": trade.pair,
        "symbol": trade.symbol,
        "status": trade.status,
    }


def _smart_trade_error_observation(trade: SmartTrade, closing_failure: StuckClosing | None) -> Observation:
    """A SmartTrade has no error flag; any error text on a live trade needs the trader."""
    text = trade.error_text
    subject = {**_smart_trade_subject(trade), "error": text}
    kind = f"smart_trade_error:{trade.id}"
    if closing_failure is not None:
        return _stuck_observation(kind, trade, closing_failure, subject)
    if not text:
        return _observation(kind, True, OK, "", subject)
    verdict = _error_verdict(text)
    reason = verdict.value if verdict else DEAL_ERROR
    return _observation(kind, False, reason, f"SmartTrade {trade.id} on {trade.pair}: {text}", subject)


# -- stale UPNL ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Position:
    """What a deal or SmartTrade holds and what 3Commas says it is worth."""

    symbol: str
    quote: str
    long: bool
    average: Decimal | None
    amount: Decimal | None
    reported_profit: Decimal | None
    reported_price: Decimal | None
    subject: dict[str, Any]
    label: str


def _position(item: Deal | SmartTrade) -> _Position | None:
    if item.symbol is None:
        return None
    quote = item.pair.partition("_")[0]
    if isinstance(item, Deal):
        held = (item.bought_amount or Decimal(0)) - (item.sold_amount or Decimal(0))
        return _Position(
            item.symbol,
            quote,
            item.strategy != "short",
            item.bought_average_price,
            held if held > 0 else None,
            item.actual_usd_profit,
            item.current_price,
            _deal_subject(item),
            f"deal {item.id}",
        )
    entered = (item.entered_amount or Decimal(0)) - (item.closed_amount or Decimal(0))
    if entered <= 0:
        return None  # nothing entered yet: no profit to go stale
    return _Position(
        item.symbol,
        quote,
        item.side != "sell",
        item.average_enter_price,
        entered,
        item.profit_usd,
        item.current_price,
        _smart_trade_subject(item),
        f"SmartTrade {item.id}",
    )


def _stale_upnl(
    position: _Position,
    before: UpnlMark | None,
    prices: Mapping[str, float | Decimal],
    now: datetime,
    limits: Thresholds,
    kind: str,
) -> tuple[UpnlMark, Observation | None]:
    """Stale when 3Commas' profit and price have not changed for ``stale_upnl_after`` *and* they
    disagree with the live ticker by more than ``price_epsilon``: the profit recomputed at the
    live price (average entry, amount held) against the reported profit when both are known and
    the quote is a dollar, else the reported price against the live one. A flat market leaves
    the position alone: its UPNL is still right. The freeze clock starts when *we* first saw the
    values, so one odd field cannot raise an alarm on the first poll. None: cannot judge.
    """
    unchanged = (
        before is not None
        and before.profit == position.reported_profit
        and before.price == position.reported_price
    )
    mark = UpnlMark(
        position.reported_profit,
        position.reported_price,
        before.unchanged_since if before and unchanged else now,
    )
    live_raw = prices.get(position.symbol)
    if live_raw is None:
        return mark, None
    live = Decimal(str(live_raw))
    frozen_for = now - mark.unchanged_since
    subject = {
        **position.subject,
        "deal_price": decimal_text(position.reported_price),
        "live_price": str(live_raw),
        "frozen_since": mark.unchanged_since.isoformat(),
        "upnl_usd": decimal_text(position.reported_profit),
    }
    recomputable = (
        position.average is not None
        and position.average > 0
        and position.amount is not None
        and position.reported_profit is not None
        and position.quote in _USD_QUOTES
    )
    basis: StaleBasis
    if recomputable:
        assert position.average is not None and position.amount is not None
        expected = (live - position.average) * position.amount * (1 if position.long else -1)
        gap = abs(expected - (position.reported_profit or Decimal(0))) / (position.average * position.amount)
        live_profit = expected.quantize(Decimal("0.01"))
        subject["upnl_live"] = decimal_text(live_profit)
        basis, shown, now_worth = StaleBasis.PROFIT, position.reported_profit or Decimal(0), live_profit
        why = (
            f"3Commas shows profit {position.reported_profit}, "
            f"at the live price {live_raw} it is {subject['upnl_live']}"
        )
    elif position.reported_price is not None and position.reported_price > 0:
        gap = abs(live - position.reported_price) / position.reported_price
        basis, shown, now_worth = StaleBasis.PRICE, position.reported_price, live
        why = f"3Commas price {position.reported_price} while the market is at {live_raw}"
    else:
        return mark, None
    if frozen_for < limits.stale_upnl_after or gap <= Decimal(str(limits.price_epsilon)):
        return mark, _observation(kind, True, OK, "", subject)
    minutes = int(frozen_for.total_seconds() // 60)
    detail = (
        f"{position.label} on {position.symbol}: {why} ({gap:.2%} away), unchanged for {minutes} min; "
        "profit shown is out of date"
    )
    stale = StaleUpnl(basis, shown, now_worth, live, gap.quantize(Decimal("0.0001")), minutes)
    return mark, _observation(kind, False, STALE_UPNL, detail, {**subject, **stale.to_subject()})


# -- failed / cancelled events ---------------------------------------------------------------------


def _recreate_subject(item: Deal | SmartTrade) -> dict[str, Any]:
    try:
        plan = recreate_params(item)
    except ValueError as error:
        return {"recreate": None, "recreate_blocked": str(error)}
    return {"recreate": plan.to_dict()}


def _ended_event(
    event: str, noun: str, item: Deal | SmartTrade, error: str | None, subject: dict[str, Any]
) -> Observation:
    """A deal or SmartTrade that failed or was cancelled: one event carrying 3Commas' error text,
    what the item held (``subject``) and the plan to recreate it, or why it cannot be."""
    reason = DEAL_FAILED if item.status == "failed" else DEAL_CANCELLED
    detail = f"{noun} {item.id} on {item.pair} {item.status}" + (f": {error}" if error else "")
    subject = {**subject, "error": error, "side": item.side, **_recreate_subject(item)}
    return _observation(f"{event}:{item.id}", False, reason, detail, subject, is_event=True)


def _deal_failed_event(deal: Deal) -> Observation:
    subject = {
        **_deal_subject(deal),
        "amount": decimal_text(deal.bought_amount),
        "average_price": decimal_text(deal.bought_average_price),
        "base_order_volume": decimal_text(deal.base_order_volume),
        "take_profit_percent": decimal_text(deal.take_profit),
        "stop_loss_percent": decimal_text(deal.stop_loss_percentage),
        "closed_at": deal.closed_at.isoformat() if deal.closed_at else None,
    }
    return _ended_event("deal_failed", "deal", deal, deal.error_text, subject)


def _bot_disabled_event(bot: Bot) -> Observation:
    subject = {"ref": f"bot:{bot.id}", "bot_id": bot.id, "bot_name": bot.name, "account_id": bot.account_id}
    detail = f"bot {bot.name or bot.id} was running and is now switched off"
    return _observation(f"bot_disabled:{bot.id}", False, BOT_DISABLED, detail, subject, is_event=True)


def _smart_trade_failed_event(trade: SmartTrade) -> Observation:
    subject = {
        **_smart_trade_subject(trade),
        "units": decimal_text(trade.units),
        "price": decimal_text(trade.price),
        "entered_amount": decimal_text(trade.entered_amount),
        "take_profit": [
            {
                "price": decimal_text(step.price),
                "volume": decimal_text(step.volume),
                "price_type": step.price_type,
            }
            for step in trade.take_profit
        ],
        "stop_loss": (
            {"price": decimal_text(trade.stop_loss.price), "price_type": trade.stop_loss.price_type}
            if trade.stop_loss
            else None
        ),
    }
    return _ended_event("smart_trade_failed", "SmartTrade", trade, trade.error_message, subject)
