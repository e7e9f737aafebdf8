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
``deal_error:<id>``            an active deal with ``deal_has_error`` or an API-related error
``smart_trade_error:<id>``     an active SmartTrade carrying an error
``stale_upnl:<id>``            a deal whose price and update time froze while the market moved
``deal_failed:<id>``           *event*: the deal is newly failed or cancelled
``smart_trade_failed:<id>``    *event*: the SmartTrade is newly failed or cancelled
=============================  ===============================================================

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
from services.threecommas.entities import Account, Deal, SmartTrade, decimal_text
from services.threecommas.errors import ThreeCommasError
from services.threecommas.recreate import recreate_params

OK = "ok"
GONE = "subject_gone"
ACCOUNT_LOCKED = "account_locked"
KEYS_EXPIRE_SOON = "keys_expire_soon"
KEYS_STATE_UNKNOWN = "keys_state_unknown"
AUTO_BALANCE_ERROR = "auto_balance_error"
DEAL_ERROR = "deal_error"
STALE_UPNL = "stale_upnl"
DEAL_FAILED = "deal_failed"
DEAL_CANCELLED = "deal_cancelled"

_EVENT_STATUSES = frozenset({"failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``stale_upnl_after``: how long a deal's price may stay frozen; ``price_epsilon``: the
    relative gap between that frozen price and the live one that counts as "the market moved"
    (small enough to catch a stuck deal, above bid/ask/last differences)."""

    stale_upnl_after: timedelta = timedelta(minutes=15)
    price_epsilon: float = 0.005
    remembered_finished: int = 1000


@dataclass(frozen=True, slots=True)
class DealMark:
    """What a deal showed last time and since when it has shown exactly that."""

    updated_at: datetime | None
    current_price: Decimal | None
    unchanged_since: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the next run needs to know about this one; :meth:`to_dict` is JSON-safe for storage.

    ``baselined`` turns true after the first successful run: failed deals seen before that are
    history, not news.
    """

    baselined: bool = False
    deals: Mapping[int, DealMark] = field(default_factory=dict)
    seen_failed_deals: frozenset[int] = frozenset()
    seen_failed_smart_trades: frozenset[int] = frozenset()
    failing: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "baselined": self.baselined,
            "deals": {
                str(deal_id): {
                    "updated_at": mark.updated_at.isoformat() if mark.updated_at else None,
                    "current_price": str(mark.current_price) if mark.current_price is not None else None,
                    "unchanged_since": mark.unchanged_since.isoformat(),
                }
                for deal_id, mark in self.deals.items()
            },
            "seen_failed_deals": sorted(self.seen_failed_deals),
            "seen_failed_smart_trades": sorted(self.seen_failed_smart_trades),
            "failing": sorted(self.failing),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            baselined=bool(data.get("baselined")),
            deals={
                int(deal_id): DealMark(
                    updated_at=datetime.fromisoformat(raw["updated_at"]) if raw.get("updated_at") else None,
                    current_price=Decimal(raw["current_price"])
                    if raw.get("current_price") is not None
                    else None,
                    unchanged_since=datetime.fromisoformat(raw["unchanged_since"]),
                )
                for deal_id, raw in (data.get("deals") or {}).items()
            },
            seen_failed_deals=frozenset(int(i) for i in data.get("seen_failed_deals") or ()),
            seen_failed_smart_trades=frozenset(int(i) for i in data.get("seen_failed_smart_trades") or ()),
            failing=frozenset(data.get("failing") or ()),
        )


@dataclass(frozen=True, slots=True)
class TcState:
    """One poll's view of a 3Commas key: its accounts, and active plus recently failed/cancelled
    deals and SmartTrades."""

    accounts: Sequence[Account]
    deals: Sequence[Deal]
    smart_trades: Sequence[SmartTrade]


@dataclass(frozen=True, slots=True)
class CheckResult:
    observations: list[Observation]
    snapshot: Snapshot


async def fetch_state(client: ThreeCommasClient, *, recent: int = 50) -> TcState:
    """Read what :func:`run_checks` needs (7 requests); ThreeCommasError propagates to the caller.

    Failed and cancelled items are read newest-closed first, so a deal opened months ago that
    fails today is inside the ``recent`` window. A deal that fails between two of these calls
    can show up twice; the finished copy wins.
    """
    accounts = await client.accounts()
    deals: dict[int, Deal] = {deal.id: deal for deal in await client.deals(scope="active", limit=1000)}
    for scope in ("failed", "cancelled"):
        for deal in await client.deals(scope=scope, limit=recent, order="closed_at"):
            deals[deal.id] = deal
    trades: dict[int, SmartTrade] = {trade.id: trade for trade in await client.smart_trades(status="active")}
    for status in ("failed", "cancelled"):
        for trade in await client.smart_trades(status=status, limit=recent, order_by="updated_at"):
            trades[trade.id] = trade
    return TcState(accounts, list(deals.values()), list(trades.values()))


def price_requests(state: TcState) -> dict[str, set[str]]:
    """Which ccxt symbols to fetch public tickers for, per ccxt exchange id (active deals only)."""
    exchanges = {account.id: account.exchange_id for account in state.accounts}
    wanted: dict[str, set[str]] = {}
    for deal in state.deals:
        exchange = exchanges.get(deal.account_id or -1)
        if not deal.finished and exchange and deal.symbol:
            wanted.setdefault(exchange, set()).add(deal.symbol)
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

    for account in state.accounts:
        observations.append(_account_observation(account))
        present.add(f"tc_account:{account.id}")

    marks: dict[int, DealMark] = {}
    active_deals = [deal for deal in state.deals if not deal.finished]
    for deal in active_deals:
        observations.append(_deal_error_observation(deal))
        present.add(f"deal_error:{deal.id}")
        kind = f"stale_upnl:{deal.id}"
        present.add(kind)
        mark, stale = _stale_upnl(deal, prior.deals.get(deal.id), prices, now, limits, kind)
        marks[deal.id] = mark
        if stale is None:
            carried.add(kind)
        else:
            observations.append(stale)

    for trade in state.smart_trades:
        if not trade.finished:
            observations.append(_smart_trade_error_observation(trade))
            present.add(f"smart_trade_error:{trade.id}")

    for kind in sorted(prior.failing - present):
        observations.append(_observation(kind, True, GONE, "no longer reported by 3Commas", {}))

    failed_deals = [deal for deal in state.deals if deal.status in _EVENT_STATUSES]
    failed_trades = [trade for trade in state.smart_trades if trade.status in _EVENT_STATUSES]
    if prior.baselined:
        observations += [_deal_failed_event(d) for d in failed_deals if d.id not in prior.seen_failed_deals]
        observations += [
            _smart_trade_failed_event(t) for t in failed_trades if t.id not in prior.seen_failed_smart_trades
        ]

    failing = {o.check_kind for o in observations if not o.ok and not o.is_event}
    snapshot = Snapshot(
        baselined=True,
        deals=marks,
        seen_failed_deals=_newest(
            prior.seen_failed_deals, (d.id for d in failed_deals), limits.remembered_finished
        ),
        seen_failed_smart_trades=_newest(
            prior.seen_failed_smart_trades, (t.id for t in failed_trades), limits.remembered_finished
        ),
        failing=frozenset(failing | (carried & prior.failing)),
    )
    return CheckResult(observations, snapshot)


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


def _account_observation(account: Account) -> Observation:
    """One kind per account; the worst symptom names it, the detail lists them all."""
    symptoms: list[tuple[str, str]] = []
    state = (account.api_keys_state or "ok").lower()
    if account.api_key_invalid or state == "expired":
        verdict = Verdict.KEY_EXPIRED if state == "expired" else Verdict.KEY_INVALID
        symptoms.append((verdict.value, "3Commas can no longer use this exchange API key"))
    if account.is_locked:
        symptoms.append((ACCOUNT_LOCKED, f"account locked: {account.lock_reason or 'no reason given'}"))
    if account.auto_balance_error:
        symptoms.append((AUTO_BALANCE_ERROR, f"auto-balance error: {account.auto_balance_error}"))
    if state == "expire_soon":
        symptoms.append((KEYS_EXPIRE_SOON, "the exchange API key expires soon"))
    elif state not in {"ok", "expired"}:
        symptoms.append((KEYS_STATE_UNKNOWN, f"3Commas reports the key state {state!r}"))
    subject = {
        "account_id": account.id,
        "name": account.name,
        "market_code": account.market_code,
        "exchange": account.exchange_id,
        "symptoms": [reason for reason, _ in symptoms],
    }
    if not symptoms:
        return _observation(f"tc_account:{account.id}", True, OK, "", subject)
    detail = f"{account.name}: " + "; ".join(text for _, text in symptoms)
    return _observation(f"tc_account:{account.id}", False, symptoms[0][0], detail, subject)


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


def _deal_error_observation(deal: Deal) -> Observation:
    text = deal.error_text
    verdict = _error_verdict(text)
    subject = {**_deal_subject(deal), "error": text}
    kind = f"deal_error:{deal.id}"
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


def _smart_trade_error_observation(trade: SmartTrade) -> Observation:
    """A SmartTrade has no error flag; any error text on a live trade needs the trader."""
    subject = {**_smart_trade_subject(trade), "error": trade.error_message}
    kind = f"smart_trade_error:{trade.id}"
    if not trade.error_message:
        return _observation(kind, True, OK, "", subject)
    verdict = _error_verdict(trade.error_message)
    reason = verdict.value if verdict else DEAL_ERROR
    return _observation(
        kind, False, reason, f"SmartTrade {trade.id} on {trade.pair}: {trade.error_message}", subject
    )


# -- stale UPNL ------------------------------------------------------------------------------------


def _stale_upnl(
    deal: Deal,
    before: DealMark | None,
    prices: Mapping[str, float | Decimal],
    now: datetime,
    limits: Thresholds,
    kind: str,
) -> tuple[DealMark, Observation | None]:
    """Stale when the deal's ``updated_at`` and ``current_price`` have not changed for
    ``stale_upnl_after`` *and* the live price is more than ``price_epsilon`` away from the
    frozen one. A flat market leaves the deal alone: its UPNL is still right. The freeze clock
    starts when *we* first saw the values, never from 3Commas' own timestamp, so one odd field
    cannot raise an alarm on the first poll. None means "cannot judge" (no live or deal price).
    """
    unchanged = (
        before is not None
        and before.updated_at == deal.updated_at
        and before.current_price == deal.current_price
    )
    mark = DealMark(
        deal.updated_at, deal.current_price, before.unchanged_since if before and unchanged else now
    )
    live_raw = prices.get(deal.symbol) if deal.symbol else None
    frozen = deal.current_price
    if live_raw is None or frozen is None or frozen <= 0:
        return mark, None
    live = float(live_raw)
    frozen_for = now - mark.unchanged_since
    gap = abs(live - float(frozen)) / float(frozen)
    subject = {
        **_deal_subject(deal),
        "deal_price": decimal_text(frozen),
        "live_price": str(live_raw),
        "frozen_since": mark.unchanged_since.isoformat(),
        "updated_at": deal.updated_at.isoformat() if deal.updated_at else None,
        "upnl_usd": decimal_text(deal.actual_usd_profit),
    }
    if frozen_for < limits.stale_upnl_after or gap <= limits.price_epsilon:
        return mark, _observation(kind, True, OK, "", subject)
    minutes = int(frozen_for.total_seconds() // 60)
    detail = (
        f"deal {deal.id} on {deal.symbol}: 3Commas price {frozen} unchanged for {minutes} min "
        f"while the market is at {live_raw} ({gap:.2%} away); profit shown is out of date"
    )
    return mark, _observation(kind, False, STALE_UPNL, detail, subject)


# -- failed / cancelled events ---------------------------------------------------------------------


def _recreate_subject(item: Deal | SmartTrade) -> dict[str, Any]:
    try:
        plan = recreate_params(item)
    except ValueError as error:
        return {"recreate": None, "recreate_blocked": str(error)}
    return {"recreate": plan.to_dict()}


def _deal_failed_event(deal: Deal) -> Observation:
    subject = {
        **_deal_subject(deal),
        "error": deal.error_text,
        "side": deal.side,
        "amount": decimal_text(deal.bought_amount),
        "average_price": decimal_text(deal.bought_average_price),
        "base_order_volume": decimal_text(deal.base_order_volume),
        "take_profit_percent": decimal_text(deal.take_profit),
        "stop_loss_percent": decimal_text(deal.stop_loss_percentage),
        "closed_at": deal.closed_at.isoformat() if deal.closed_at else None,
        **_recreate_subject(deal),
    }
    reason = DEAL_FAILED if deal.status == "failed" else DEAL_CANCELLED
    detail = f"deal {deal.id} on {deal.pair} {deal.status}" + (
        f": {deal.error_text}" if deal.error_text else ""
    )
    return _observation(f"deal_failed:{deal.id}", False, reason, detail, subject, is_event=True)


def _smart_trade_failed_event(trade: SmartTrade) -> Observation:
    subject = {
        **_smart_trade_subject(trade),
        "error": trade.error_message,
        "side": trade.side,
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
        **_recreate_subject(trade),
    }
    reason = DEAL_FAILED if trade.status == "failed" else DEAL_CANCELLED
    detail = f"SmartTrade {trade.id} on {trade.pair} {trade.status}" + (
        f": {trade.error_message}" if trade.error_message else ""
    )
    return _observation(f"smart_trade_failed:{trade.id}", False, reason, detail, subject, is_event=True)
