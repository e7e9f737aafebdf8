"""Turn any exception from a probe into a verdict about the key.

Order of decisions (the first that applies wins):

1. Transport failures: timeouts, DNS, refused/reset connections, TLS, whether raw (``OSError``,
   ``aiohttp.ClientError``, ``TimeoutError``) or wrapped by ccxt. ccxt's async ``fetch()``
   re-raises them ``from`` the original (``socket.gaierror`` and ``aiohttp.ClientConnectionError``
   → ``ExchangeNotAvailable``, timeouts → ``RequestTimeout``, other ``aiohttp.ClientError`` →
   ``ExchangeError``; ccxt/async_support/base/exchange.py ``fetch``), so the ``__cause__`` tells
   "could not talk to the exchange" (``network``) apart from "the exchange said so".
2. HTTP status when ccxt kept it in the text (``"<id> GET <url> 503 <reason> <body>"`` from
   ``handle_http_status_code``, or Binance's ``"binance 429 <reason> <body>"``): 5xx, 429 and 418
   are decided by the status alone. This is what guarantees that an overloaded, throttling or
   banning exchange is never reported as a broken key, whatever the body says.
3. The exchange's own code/message, looked up in :mod:`services.exchanges.classifier_tables`.
4. A bare HTTP 403 (no exchange code) from Binance, Bybit or OKX: their WAF / IP-ban page
   (Binance: "HTTP 403 return code is used when the WAF Limit has been violated",
   https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits; Bybit: "403, access
   too frequent", https://bybit-exchange.github.io/docs/v5/rate-limit; OKX fronts its API with a
   WAF whose block page is a 403 too) → ``rate_limited``: it is about our traffic, not the key,
   and the whole exchange must pause.
5. The ccxt exception class, most specific first (see ``_BY_CLASS``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt.async_support as ccxt

from services.core.vault import redact
from services.core.verdicts import Verdict
from services.exchanges.classifier_tables import CLASSIFIER_TABLES, TABLE_OF, Rule

__all__ = ["CLASSIFIER_TABLES", "Classification", "classify"]

DETAIL_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure says about the key; ``detail`` is short, human-readable and secret-free."""

    verdict: Verdict
    code: str | None
    detail: str


# OSError covers ConnectionError, socket.gaierror (DNS) and TimeoutError (= asyncio.TimeoutError
# since 3.11); aiohttp.ClientError covers ClientConnectorError, ServerDisconnectedError, TLS errors.
_TRANSPORT: tuple[type[BaseException], ...] = (OSError, aiohttp.ClientError)

# ccxt class → verdict, most specific first. NetworkError's subclasses must come before it
# (InvalidNonce is a NetworkError in ccxt, but it means clock skew; OnMaintenance is an
# ExchangeNotAvailable), and OperationFailed after NetworkError because it is their common base and
# is also raised on its own (Binance -1000/-1001; ccxt/base/errors.py).
_BY_CLASS: tuple[tuple[type[BaseException], Verdict], ...] = (
    (ccxt.OnMaintenance, Verdict.EXCHANGE_DOWN),
    (ccxt.InvalidNonce, Verdict.CLOCK_SKEW),
    (ccxt.DDoSProtection, Verdict.RATE_LIMITED),
    (ccxt.RateLimitExceeded, Verdict.RATE_LIMITED),
    (ccxt.RequestTimeout, Verdict.NETWORK),
    (ccxt.ExchangeNotAvailable, Verdict.EXCHANGE_DOWN),
    (ccxt.NetworkError, Verdict.NETWORK),
    (ccxt.OperationFailed, Verdict.EXCHANGE_DOWN),
    # AccountSuspended and PermissionDenied are AuthenticationError subclasses: test them first.
    (ccxt.AccountSuspended, Verdict.KEY_INVALID),
    (ccxt.PermissionDenied, Verdict.PERMISSION_MISSING),
    (ccxt.AuthenticationError, Verdict.KEY_INVALID),
    # The good outcome of a "cancel a made-up order id" probe: authentication passed.
    (ccxt.OrderNotFound, Verdict.OK),
    # Raised when our hub closed the instance under a running request: our side, not the key.
    (ccxt.ExchangeClosedByUser, Verdict.NETWORK),
)

# "<id> <METHOD> <url> <status> " (base handle_http_status_code) or "binance 429 " (Binance
# handle_errors raises on 418/429 before reading the body, binance.py ~12599).
_STATUS = re.compile(r"^\S+ (?:(?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) \S+ )?(\d{3}) ")
_URL_QUERY = re.compile(r"(https?://[^\s?]+)\?\S*")
_REQUEST_IP = re.compile(r"request ip:?\s*([0-9A-Fa-f:.]+)", re.IGNORECASE)
_SUCCESS_CODES = frozenset({"0", "00000", "200000", "200"})
_WAF_403 = frozenset({"binance", "bybit", "okx"})


def classify(
    exchange_id: str,
    exc: BaseException,
    *,
    ip_restricted: bool | None = None,
    allowed_ips: Collection[str] = (),
) -> Classification:
    """Classify one failure of a call to ``exchange_id``.

    ``ip_restricted``/``allowed_ips`` describe the key as its last successful probe saw it (the
    whitelist is empty when the exchange does not reveal it); only Binance -2015 needs them, see
    :func:`_binance_2015`.
    """
    if not isinstance(exc, ccxt.BaseError):
        verdict = Verdict.NETWORK if isinstance(exc, _TRANSPORT) else Verdict.UNKNOWN
        return Classification(verdict, None, _plain_detail(exc))
    text = str(exc)
    cause = _transport_cause(exc)
    if cause is not None:
        return Classification(Verdict.NETWORK, None, _clip(f"{_plain_detail(cause)} ({_strip_query(text)})"))

    table_id = TABLE_OF.get(exchange_id)
    code, message = _parse_body(table_id, text)
    detail = _clip(message or _strip_query(text.removeprefix(f"{exchange_id} ")))
    match = _STATUS.match(text)
    status = int(match.group(1)) if match else None

    by_status = _status_verdict(status)
    if by_status is not None:
        return Classification(by_status, code or f"HTTP {status}", detail)

    rule = _find_rule(CLASSIFIER_TABLES.get(table_id or "", ()), code, message or text)
    if rule is not None:
        verdict = rule.verdict
        if table_id == "binance" and rule.code == "-2015":
            verdict = _binance_2015(text, ip_restricted, allowed_ips)
        return Classification(verdict, code or rule.code, detail)

    if status == 403 and table_id in _WAF_403 and code is None:
        return Classification(Verdict.RATE_LIMITED, "HTTP 403", detail)

    fallback = code or (f"HTTP {status}" if status else None)
    for cls, verdict in _BY_CLASS:
        if isinstance(exc, cls):
            return Classification(verdict, fallback, detail)
    return Classification(Verdict.UNKNOWN, fallback, detail)


def _binance_2015(text: str, ip_restricted: bool | None, allowed_ips: Collection[str]) -> Verdict:
    """Binance -2015 "Invalid API-key, IP, or permissions for action": one code for three causes.

    Rule: ``key_invalid`` unless the metadata shows an IP problem. The words "request ip: X" alone
    prove nothing, Binance appends them to every -2015, deleted keys included. They count only for
    a key that its last successful probe showed IP-restricted (``ipRestrict: true``): then
    ``ip_not_allowed``, unless X is in the known whitelist (then the IP is fine and the key itself
    is gone). Binance does not reveal the whitelist, so for Binance keys the list is usually
    unknown and a restricted key answering -2015 is reported as an IP problem, naming X: the
    common real cause (our egress IP changed or the whitelist was edited), and the alert tells the
    user which IP to whitelist. A restricted key that was deleted is the one case this misreads.
    Permission problems are not a cause here: the probe calls ``GET /sapi/v1/account/apiRestrictions``,
    which any key may call. The ccxt class is ignored on purpose: after one successful spot call
    ccxt turns -2015 into ``DDoSProtection`` (binance.py ~12641, flag set in ``request()`` ~12688).
    """
    if ip_restricted:
        found = _REQUEST_IP.search(text)
        if found and found.group(1).rstrip(".") not in allowed_ips:
            return Verdict.IP_NOT_ALLOWED
    return Verdict.KEY_INVALID


def _status_verdict(status: int | None) -> Verdict | None:
    if status is None:
        return None
    if status in (418, 429):
        return Verdict.RATE_LIMITED
    if status >= 500 and status != 511:
        return Verdict.EXCHANGE_DOWN
    if status in (407, 408, 511):  # proxy auth, client too slow, captive portal: our side
        return Verdict.NETWORK
    return None


def _find_rule(rows: tuple[Rule, ...], code: str | None, haystack: str) -> Rule | None:
    lowered = haystack.lower()
    for row in rows:
        if row.code is not None and row.code != code:
            continue
        if row.message is not None and row.message.lower() not in lowered:
            continue
        return row
    return None


def _parse_body(table_id: str | None, text: str) -> tuple[str | None, str | None]:
    """(exchange code, exchange message) from the JSON body ccxt appended to its message."""
    start = text.find("{")
    if start < 0:
        return None, None
    try:
        body, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    if table_id == "bybit":
        code, message = _first(body, "retCode", "ret_code"), _first(body, "retMsg", "ret_msg")
    elif table_id == "gate":
        code, message = _first(body, "label"), _first(body, "message")
    elif table_id == "okx":
        code, message = _okx_code(body)
    else:  # binance, kucoin, bitget and the common {"code","msg"} shape of other exchanges
        code, message = _first(body, "code", "err_code"), _first(body, "msg", "err_msg", "message")
    if code in _SUCCESS_CODES:
        code = None
    return code, message


def _okx_code(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """OKX puts per-item failures in ``data[i].sCode`` under a top-level ``code:"1"``."""
    data = body.get("data")
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and str(item.get("sCode", "0")) not in ("0", ""):
                return str(item["sCode"]), _first(item, "sMsg")
    return _first(body, "code"), _first(body, "msg")


def _first(body: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = body.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _transport_cause(exc: BaseException) -> BaseException | None:
    cause = exc.__cause__
    for _ in range(4):  # ccxt wraps once; a short walk is enough and cannot loop forever
        if cause is None:
            return None
        if isinstance(cause, _TRANSPORT):
            return cause
        cause = cause.__cause__
    return None


def _plain_detail(exc: BaseException) -> str:
    text = str(exc)
    return _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _strip_query(text: str) -> str:
    """URLs in ccxt messages carry the signed query string; keep only scheme, host and path."""
    return _URL_QUERY.sub(r"\1", text)


def _clip(text: str) -> str:
    # Redact before clipping so a clipped key can never survive as a short, unredacted prefix.
    return redact(" ".join(text.split()))[:DETAIL_LIMIT]
