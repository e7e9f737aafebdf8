"""Health probe of one connection, key metadata and the exchanges' key-lifetime policies.

A probe is the cheapest *signed* call that proves the key works, and on the three big exchanges
that call also returns the key's metadata (permissions, IP binding, creation and expiry):

* Binance: ``GET /sapi/v1/account/apiRestrictions``, IP weight 1, any key may call it
  (https://developers.binance.com/docs/wallet/account/api-key-permission). Balances:
  ``GET /api/v3/account?omitZeroBalances=true``, weight 20
  (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/account-endpoints);
  USDⓈ-M: ``GET /fapi/v3/account``, weight 5.
* Bybit: ``GET /v5/user/query-api``, any permission (https://bybit-exchange.github.io/docs/v5/user/apikey-info).
  Balances: ``GET /v5/account/wallet-balance`` (https://bybit-exchange.github.io/docs/v5/account/wallet-balance).
* OKX: ``GET /api/v5/account/config`` (``perm``, ``ip``, ``label``;
  https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-account-configuration).
  Balances: ``GET /api/v5/account/balance``.
* Any other exchange: ccxt's ``fetch_balance`` (no metadata).

Probing never raises (except cancellation, which must reach the caller, and
:class:`~services.exchanges.budget.NotNow` when the budget would not let the key check go now —
a background check's ``Deferred``, a tap's ``OverShare``: nothing was sent, so nothing about the
key was learnt): every failure becomes a classified :class:`ProbeResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core.clock import Clock
from services.core.verdicts import Verdict
from services.exchanges.budget import GENERIC_PROBE_WEIGHT, PROBE_WEIGHTS, NotNow
from services.exchanges.classifier import Classification, classify
from services.exchanges.classifier_tables import TABLE_OF
from services.exchanges.hub import ExchangeClient

__all__ = ["KeyInfo", "KeyWarning", "ProbeResult", "key_warnings", "probe", "probe_weight"]

# Key-lifetime policies. Each constant is the exchange's rule, with its source.
# Binance: without a whitelisted IP, "Enable Spot & Margin Trading" lasts 30 days from when it was
# enabled, then Binance clears it (announcement "Updates to API Key Permission Rules", 2021-07-08):
BINANCE_TRADING_POLICY = "https://www.binance.com/en/support/announcement/cda0a4b53da04396b5d27881e93abf78"
BINANCE_UNRESTRICTED_TRADING = timedelta(days=30)
# Bybit: a key with no IP bound becomes invalid after 90 days ("Modify Master API Key", ips):
BYBIT_EXPIRY_POLICY = "https://bybit-exchange.github.io/docs/account-asset/modify-master-apikey"
BYBIT_UNBOUND_LIFETIME = timedelta(days=90)
# OKX deletes keys with trade/withdraw permission, no bound IP and 14 days without use. Source: the
# QuotaGuard write-up of OKX's third-party-app IP allow-listing rule (OKX's own wording not found;
# their API FAQ documents the permissions and IP binding: https://www.okx.com/help/api-faq).
OKX_IDLE_POLICY = "https://www.quotaguard.com/blog/okx-api-key-14-day-deletion-static-ip-fix"
OKX_IDLE_LIMIT = timedelta(days=14)
# Where each exchange documents the permission fields we read (withdraw / read-only warnings).
_PERMISSION_DOCS = {
    "binance": "https://developers.binance.com/docs/wallet/account/api-key-permission",
    "bybit": "https://bybit-exchange.github.io/docs/v5/user/apikey-info",
    "okx": "https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-account-configuration",
}
_LIFETIME_POLICIES = {"binance": BINANCE_TRADING_POLICY, "bybit": BYBIT_EXPIRY_POLICY, "okx": OKX_IDLE_POLICY}
EXPIRY_WARNING = timedelta(days=7)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the exchange says about the key.

    ``expires_at`` is the moment the exchange itself announces the key (Bybit ``expiredAt``) or its
    trading permission (Binance ``tradingAuthorityExpirationTime``) stops working; policy dates we
    derive ourselves are reported by :func:`key_warnings`. ``ip_list`` is empty when the exchange
    does not reveal the whitelist (Binance only says whether there is one).
    """

    permissions: tuple[str, ...]
    can_trade: bool | None
    can_withdraw: bool | None
    ip_restricted: bool | None
    ip_list: tuple[str, ...]
    created_at: datetime | None
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "permissions": list(self.permissions),
            "can_trade": self.can_trade,
            "can_withdraw": self.can_withdraw,
            "ip_restricted": self.ip_restricted,
            "ip_list": list(self.ip_list),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyInfo:
        return cls(
            permissions=tuple(data.get("permissions") or ()),
            can_trade=data.get("can_trade"),
            can_withdraw=data.get("can_withdraw"),
            ip_restricted=data.get("ip_restricted"),
            ip_list=tuple(data.get("ip_list") or ()),
            created_at=_parse_iso(data.get("created_at")),
            expires_at=_parse_iso(data.get("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    verdict: Verdict
    code: str | None
    detail: str
    key_info: KeyInfo | None
    balances: dict[str, dict[str, float]] | None
    """``{"USDT": {"free": 10.0, "total": 12.5}}``, non-zero assets only."""
    weight: float
    """Budget weight the probe spent."""
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class KeyWarning:
    code: str
    """``withdraw_enabled`` | ``no_ip_restriction`` | ``expires_soon`` | ``read_only``."""
    due: datetime | None
    source: str
    """URL of the exchange policy behind the warning."""


@dataclass(frozen=True, slots=True)
class _Recipe:
    check: str
    check_weight: float
    key_info: Callable[[Any], KeyInfo]
    balance_call: Callable[[Any], tuple[str, dict[str, str]]]
    balance_weight: float
    balances: Callable[[Any], dict[str, dict[str, float]]]


async def _balances(client: ExchangeClient, recipe: _Recipe, raw: Any) -> dict[str, dict[str, float]]:
    """The recipe's balance call (its parameters may depend on the key check's answer ``raw``)."""
    method, params = recipe.balance_call(raw)
    return recipe.balances(await client.call(method, params, weight=recipe.balance_weight))


async def wallet_balances(client: ExchangeClient) -> dict[str, dict[str, float]] | None:
    """The balance call alone, on a client of another wallet of a checked key (a Binance key's
    USDⓈ-M futures wallet on ``binanceusdm``: ``GET /fapi/v3/account``, weight 5). None when it
    failed: the key was judged by its own probe, this only adds what the other wallet holds."""
    try:
        return await _balances(client, _RECIPES[client.exchange_id], {})
    except Exception as exc:
        log.info("%s wallet balance unavailable: %s", client.exchange_id, type(exc).__name__)
        return None


def probe_weight(exchange_id: str, *, with_key_info: bool = False, with_balances: bool = False) -> float:
    """Budget weight of one probe; the poller uses it for :meth:`BudgetRegistry.stretch_interval`.

    ``with_key_info`` costs nothing extra: where metadata exists, the key check returns it.
    """
    recipe = _RECIPES.get(exchange_id)
    if recipe is None:
        return GENERIC_PROBE_WEIGHT
    return recipe.check_weight + (recipe.balance_weight if with_balances else 0)


async def probe(
    client: ExchangeClient,
    *,
    clock: Clock,
    with_key_info: bool = False,
    with_balances: bool = False,
    known: KeyInfo | None = None,
) -> ProbeResult:
    """Check one key; never raises except on cancellation and :class:`NotNow` (module docstring).

    ``known`` is the key info stored from its last successful probe: it turns ambiguous answers
    into precise ones (Binance -2015, an expired Bybit key, a trading permission that was removed
    or lapsed). ``with_key_info`` returns the metadata the key check produced (it costs nothing
    extra); it is left out when the probe reports a lost permission, so the stored baseline stays.
    ``with_balances`` adds the balance call (weight: :func:`probe_weight`); other exchanges get
    balances anyway, from ``fetch_balance``, and no metadata.
    """
    exchange_id = client.exchange_id
    recipe = _RECIPES.get(exchange_id)
    if recipe is None:
        try:
            raw = await client.call("fetch_balance", weight=GENERIC_PROBE_WEIGHT)
        except NotNow:
            raise
        except Exception as exc:
            return _failure(exchange_id, exc, known, GENERIC_PROBE_WEIGHT, clock)
        return ProbeResult(
            Verdict.OK, None, "", None, _unified_balances(raw), GENERIC_PROBE_WEIGHT, clock.now()
        )

    spent = recipe.check_weight
    try:
        raw = await client.call(recipe.check, weight=recipe.check_weight)
        info = recipe.key_info(raw)
    except NotNow:
        raise
    except Exception as exc:
        return _failure(exchange_id, exc, known, spent, clock)

    verdict, detail = _lost_trading(exchange_id, info, known, clock.now())
    balances = None
    if with_balances and verdict is Verdict.OK:
        spent += recipe.balance_weight
        try:
            balances = await _balances(client, recipe, raw)
        except NotNow:
            pass  # the key works; its balances wait for the next check (balances_at stays old)
        except Exception as exc:
            failed = classify(exchange_id, exc, ip_restricted=info.ip_restricted, allowed_ips=info.ip_list)
            if failed.verdict.is_key_problem:
                shown = info if with_key_info else None
                return ProbeResult(
                    failed.verdict, failed.code, failed.detail, shown, None, spent, clock.now()
                )
            # The key works; a throttled or failing balance call says nothing against it.
            detail = f"balances unavailable: {failed.detail}"[:200]
    # After a lost permission the stored key info must stay the baseline (what the key could do
    # while it worked), or the next probe would compare with the degraded key and report ok.
    shown = info if with_key_info and verdict is Verdict.OK else None
    return ProbeResult(verdict, None, detail, shown, balances, spent, clock.now())


def _failure(
    exchange_id: str, exc: Exception, known: KeyInfo | None, spent: float, clock: Clock
) -> ProbeResult:
    now = clock.now()
    if known is None:
        result = classify(exchange_id, exc)
    else:
        result = classify(exchange_id, exc, ip_restricted=known.ip_restricted, allowed_ips=known.ip_list)
    result = _refine_with_known(exchange_id, result, known, now)
    return ProbeResult(result.verdict, result.code, result.detail, None, None, spent, now)


def _refine_with_known(
    exchange_id: str, result: Classification, known: KeyInfo | None, now: datetime
) -> Classification:
    """Use the last successful probe to tell an expired key from a revoked one.

    Bybit answers a key past its lifetime with 10003 as often as with 33004; when the key was due
    (``expiredAt``, or the 90-day rule for unbound keys) it expired, it was not revoked. OKX
    answers a key deleted under its 14-day idle rule with the same 50119 as a revoked one; our
    probes use the key, so we keep ``key_invalid`` and only name the rule in the detail when the
    key was exposed to it.
    """
    if result.verdict is not Verdict.KEY_INVALID or known is None:
        return result
    family = TABLE_OF.get(exchange_id, exchange_id)
    if family == "bybit":
        due = _policy_due(family, known)
        if due is not None and due <= now:
            return Classification(Verdict.KEY_EXPIRED, result.code, result.detail)
    if family == "okx" and known.ip_restricted is False and (known.can_trade or known.can_withdraw):
        hint = f" (OKX deletes trade keys without a bound IP after {OKX_IDLE_LIMIT.days} days unused)"
        return Classification(result.verdict, result.code, (result.detail + hint)[:200])
    return result


def _lost_trading(
    exchange_id: str, info: KeyInfo, known: KeyInfo | None, now: datetime
) -> tuple[Verdict, str]:
    """The key still reads but lost a trading permission: bots stop, our read-only probe sees no error.

    On Binance this is usually the 30-day rule (BINANCE_TRADING_POLICY): Binance clears
    ``enableSpotAndMarginTrading`` on keys without an IP whitelist at the moment it reports in
    ``tradingAuthorityExpirationTime``; that is an expiry. Anywhere else, or before that moment,
    someone removed the permission.
    """
    if known is None:
        return Verdict.OK, ""
    family = TABLE_OF.get(exchange_id, exchange_id)
    lost = sorted(
        p for p in set(known.permissions) - set(info.permissions) if _is_trade_permission(family, p)
    )
    if not lost:
        return Verdict.OK, ""
    if family == "binance" and "spot_trade" in lost and info.ip_restricted is False:
        lapsed_at = info.expires_at or _policy_due("binance", known)
        if lapsed_at is not None and lapsed_at <= now:
            return Verdict.KEY_EXPIRED, "spot trading permission lapsed: no IP whitelist for 30 days"
    return Verdict.PERMISSION_MISSING, f"trading permission removed from the key: {', '.join(lost)}"


def _is_trade_permission(family: str, permission: str) -> bool:
    if family == "binance":
        return permission in _BINANCE_TRADE
    if family == "bybit":
        return permission.partition(":")[0] in _BYBIT_TRADE_GROUPS
    return permission == "trade"


def key_warnings(exchange_id: str, info: KeyInfo, now: datetime) -> list[KeyWarning]:
    """Risks the user should fix before they break a bot, each with the policy it comes from."""
    family = TABLE_OF.get(exchange_id, exchange_id)
    docs = _PERMISSION_DOCS.get(family, "")
    warnings: list[KeyWarning] = []
    if info.can_withdraw:
        warnings.append(KeyWarning("withdraw_enabled", None, docs))
    if info.can_trade is False:
        warnings.append(KeyWarning("read_only", None, docs))
    policy = _LIFETIME_POLICIES.get(family, docs)
    due = _policy_due(family, info)
    if info.ip_restricted is False:
        warnings.append(KeyWarning("no_ip_restriction", due, policy))
    ending = info.expires_at or due
    if ending is not None and ending - now <= EXPIRY_WARNING:
        warnings.append(KeyWarning("expires_soon", ending, policy))
    return warnings


def _policy_due(family: str, info: KeyInfo) -> datetime | None:
    """When the exchange's policy cuts the key (Bybit) or its spot trading (Binance).

    OKX's rule counts idle days and our probes use the key, so it has no fixed date.
    """
    if info.ip_restricted is not False:
        return None
    if family == "binance" and "spot_trade" in info.permissions:
        if info.expires_at is not None:
            return info.expires_at
        return info.created_at + BINANCE_UNRESTRICTED_TRADING if info.created_at else None
    if family == "bybit":
        if info.expires_at is not None:
            return info.expires_at
        return info.created_at + BYBIT_UNBOUND_LIFETIME if info.created_at else None
    return None


# --- Binance ---------------------------------------------------------------------------------

_BINANCE_FLAGS = (
    ("enableReading", "read"),
    ("enableSpotAndMarginTrading", "spot_trade"),
    ("enableMargin", "margin"),
    ("enableFutures", "futures"),
    ("enableVanillaOptions", "options"),
    ("enablePortfolioMarginTrading", "portfolio_margin"),
    ("enableWithdrawals", "withdraw"),
    ("enableInternalTransfer", "internal_transfer"),
    ("permitsUniversalTransfer", "universal_transfer"),
    ("enableFixApiTrade", "fix_trade"),
    ("enableFixReadOnly", "fix_read"),
)
_BINANCE_TRADE = frozenset({"spot_trade", "margin", "futures", "options", "portfolio_margin"})


def _binance_key_info(raw: dict[str, Any]) -> KeyInfo:
    permissions = tuple(name for field, name in _BINANCE_FLAGS if raw.get(field) is True)
    ip_restrict = raw.get("ipRestrict")
    return KeyInfo(
        permissions=permissions,
        can_trade=bool(_BINANCE_TRADE.intersection(permissions)),
        can_withdraw="withdraw" in permissions,
        ip_restricted=ip_restrict if isinstance(ip_restrict, bool) else None,
        ip_list=(),
        created_at=_from_ms(raw.get("createTime")),
        expires_at=_from_ms(raw.get("tradingAuthorityExpirationTime")),
    )


def _binance_spot_balances(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for row in raw.get("balances") or ():
        free, locked = _num(row.get("free")), _num(row.get("locked"))
        if free + locked:
            out[str(row.get("asset"))] = {"free": free, "total": free + locked}
    return out


def _binance_futures_balances(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for row in raw.get("assets") or ():
        total = _num(row.get("walletBalance"))
        if total:
            out[str(row.get("asset"))] = {"free": _num(row.get("availableBalance")), "total": total}
    return out


# --- Bybit -----------------------------------------------------------------------------------

_BYBIT_TRADE_GROUPS = ("ContractTrade", "Spot", "Options", "Derivatives")


def _bybit_key_info(raw: dict[str, Any]) -> KeyInfo:
    result = raw.get("result") or {}
    groups = result.get("permissions") or {}
    permissions = tuple(f"{group}:{perm}" for group, perms in groups.items() for perm in perms or ())
    ips = tuple(ip for ip in result.get("ips") or () if ip and ip != "*")
    read_only = str(result.get("readOnly")) == "1"
    return KeyInfo(
        permissions=permissions,
        can_trade=not read_only and any(groups.get(group) for group in _BYBIT_TRADE_GROUPS),
        can_withdraw="Withdraw" in (groups.get("Wallet") or ()),
        ip_restricted=bool(ips),
        ip_list=ips,
        created_at=_parse_iso(result.get("createdAt")),
        expires_at=_parse_iso(result.get("expiredAt")),
    )


def _bybit_balance_call(raw: dict[str, Any]) -> tuple[str, dict[str, str]]:
    # query-api's ``uta`` (1 = unified trading account). Classic accounts keep derivatives in CONTRACT.
    uta = str((raw.get("result") or {}).get("uta", "1")) != "0"
    return "privateGetV5AccountWalletBalance", {"accountType": "UNIFIED" if uta else "CONTRACT"}


def _bybit_balances(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for account in (raw.get("result") or {}).get("list") or ():
        for row in account.get("coin") or ():
            total = _num(row.get("walletBalance"))
            if total:
                # availableToWithdraw is deprecated (empty) on unified accounts: derive free.
                free = row.get("availableToWithdraw")
                out[str(row.get("coin"))] = {
                    "free": _num(free) if free not in (None, "") else total - _num(row.get("locked")),
                    "total": total,
                }
    return out


# --- OKX -------------------------------------------------------------------------------------


def _okx_key_info(raw: dict[str, Any]) -> KeyInfo:
    data = raw.get("data") or [{}]
    config = data[0] if data else {}
    permissions = tuple(p.strip() for p in str(config.get("perm") or "").split(",") if p.strip())
    ips = tuple(ip.strip() for ip in str(config.get("ip") or "").replace(" ", ",").split(",") if ip.strip())
    return KeyInfo(
        permissions=permissions,
        can_trade="trade" in permissions,
        can_withdraw="withdraw" in permissions,
        ip_restricted=bool(ips),
        ip_list=ips,
        created_at=None,
        expires_at=None,
    )


def _okx_balances(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for account in raw.get("data") or ():
        for row in account.get("details") or ():
            total = _num(row.get("eq") or row.get("cashBal"))
            if total:
                out[str(row.get("ccy"))] = {"free": _num(row.get("availBal")), "total": total}
    return out


# --- any exchange through ccxt's unified fetch_balance ----------------------------------------


def _unified_balances(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    totals = raw.get("total") or {}
    free = raw.get("free") or {}
    return {
        code: {"free": _num(free.get(code)), "total": _num(total)} for code, total in totals.items() if total
    }


def _fixed_call(method: str, params: dict[str, str]) -> Callable[[Any], tuple[str, dict[str, str]]]:
    return lambda _raw: (method, params)


_RECIPES: dict[str, _Recipe] = {
    "binance": _Recipe(
        "sapiGetAccountApiRestrictions",
        PROBE_WEIGHTS["binance"].key_check,
        _binance_key_info,
        _fixed_call("privateGetAccount", {"omitZeroBalances": "true"}),
        PROBE_WEIGHTS["binance"].balances,
        _binance_spot_balances,
    ),
    "binanceusdm": _Recipe(
        "sapiGetAccountApiRestrictions",
        PROBE_WEIGHTS["binanceusdm"].key_check,
        _binance_key_info,
        _fixed_call("fapiPrivateV3GetAccount", {}),
        PROBE_WEIGHTS["binanceusdm"].balances,
        _binance_futures_balances,
    ),
    "bybit": _Recipe(
        "privateGetV5UserQueryApi",
        PROBE_WEIGHTS["bybit"].key_check,
        _bybit_key_info,
        _bybit_balance_call,
        PROBE_WEIGHTS["bybit"].balances,
        _bybit_balances,
    ),
    "okx": _Recipe(
        "privateGetAccountConfig",
        PROBE_WEIGHTS["okx"].key_check,
        _okx_key_info,
        _fixed_call("privateGetAccountBalance", {}),
        PROBE_WEIGHTS["okx"].balances,
        _okx_balances,
    ),
}


def _num(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def _from_ms(value: Any) -> datetime | None:
    number = _num(value)
    return datetime.fromtimestamp(number / 1000, UTC) if number > 0 else None


def _parse_iso(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float) or str(value).isdigit():
        return _from_ms(value)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
