"""The classifier against the exceptions ccxt really raises.

Every table row's body goes through the real ``handle_errors`` + ``handle_http_status_code`` of
that exchange's ccxt class, exactly as ``fetch()`` runs them, so a ccxt upgrade that changes a
mapping shows up here, and so does a row whose code ccxt hides.
"""

from __future__ import annotations

import asyncio
import http
import socket
from functools import cache
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.corpus import case
from services.core.verdicts import Verdict
from services.exchanges.classifier import CLASSIFIER_TABLES, Classification, classify
from services.exchanges.classifier_tables import TABLE_OF, Rule

# A private endpoint of each exchange, on its production host: some ccxt maps depend on the URL.
PRODUCTION_URL = {
    "binance": "https://api.binance.com/sapi/v1/account/apiRestrictions",
    "bybit": "https://api.bybit.com/v5/user/query-api",
    "okx": "https://www.okx.com/api/v5/account/config",
    "kucoin": "https://api.kucoin.com/api/v1/accounts",
    "bitget": "https://api.bitget.com/api/v2/spot/account/assets",
    "gate": "https://api.gateio.ws/api/v4/spot/accounts",
}
LOCAL_URL = "http://127.0.0.1:8000/api/v3/account"


@cache
def _instance(exchange_id: str) -> Any:
    return getattr(ccxt, exchange_id)()


def ccxt_error(
    exchange_id: str, status: int, body: str, url: str | None = None, *, authenticated_before: bool = False
) -> BaseException:
    """The exception ccxt's ``fetch()`` raises for this response (same two steps, same order)."""
    exchange = _instance(exchange_id)
    if "hasAlreadyAuthenticatedSuccessfully" in exchange.options:
        exchange.options["hasAlreadyAuthenticatedSuccessfully"] = authenticated_before
    url = url or PRODUCTION_URL.get(exchange_id, LOCAL_URL)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:  # Cloudflare's 52x are not in the registry
        reason = "Unknown"
    try:
        exchange.handle_errors(status, reason, url, "GET", {}, body, exchange.parse_json(body), {}, None)
        exchange.handle_http_status_code(status, reason, url, "GET", body)
    except ccxt.BaseError as error:
        return error
    raise AssertionError(f"ccxt raised nothing for {exchange_id} {status} {body}")


def _answer(rule: Rule) -> tuple[int, str]:
    """Status and body of the corpus case the row points at (tests/corpus)."""
    recorded = case(rule.case)
    return recorded.status, recorded.render(
        ip="198.51.100.4", until_ms=1700000000000, now_ms=1700000000000, limit=6000
    )


ROWS = [
    pytest.param(table, rule, id=f"{table}:{rule.code or rule.message}:{index}")
    for table, rules in CLASSIFIER_TABLES.items()
    for index, rule in enumerate(rules)
]


@pytest.mark.parametrize(("table", "rule"), ROWS)
def test_every_row_through_real_ccxt(table: str, rule: Rule) -> None:
    error = ccxt_error(table, *_answer(rule))
    result = classify(table, error)
    assert result.verdict is rule.verdict, (type(error).__name__, str(error))
    assert "{" not in result.detail  # the exchange's message, not the raw JSON


BINANCE_ROWS = [
    pytest.param(rule, id=f"{rule.code or rule.message}") for rule in CLASSIFIER_TABLES["binance"]
]


@pytest.mark.parametrize("rule", BINANCE_ROWS)
@pytest.mark.parametrize("url", [LOCAL_URL, "https://fapi.binance.com/fapi/v3/account"])
def test_binance_rows_on_other_hosts(rule: Rule, url: str) -> None:
    """ccxt's Binance maps depend on the URL (binance.py get_exceptions_by_url); ours do not."""
    for exchange_id in ("binance", "binanceusdm"):
        assert classify(exchange_id, ccxt_error(exchange_id, *_answer(rule), url)).verdict is rule.verdict


def test_tables_cover_exchange_variants() -> None:
    assert TABLE_OF["binanceusdm"] == "binance"
    for table, rules in CLASSIFIER_TABLES.items():
        assert rules, table
        assert all(isinstance(rule.verdict, Verdict) for rule in rules)


# --- Binance -2015 ---------------------------------------------------------------------------

MSG_2015 = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action, request ip: 198.51.100.4"}'


def test_binance_2015_after_prior_success_is_ddos_in_ccxt_but_key_invalid_here() -> None:
    error = ccxt_error("binance", 401, MSG_2015, authenticated_before=True)
    assert isinstance(error, ccxt.DDoSProtection)
    assert classify("binance", error) == Classification(
        Verdict.KEY_INVALID,
        "-2015",
        "Invalid API-key, IP, or permissions for action, request ip: 198.51.100.4",
    )


def test_binance_2015_constructed_like_ccxt_does() -> None:
    assert classify("binance", ccxt.DDoSProtection(f"binance {MSG_2015}")).verdict is Verdict.KEY_INVALID


@pytest.mark.parametrize(
    ("restricted", "allowed", "verdict"),
    [
        (None, (), Verdict.KEY_INVALID),  # "request ip" alone proves nothing
        (False, (), Verdict.KEY_INVALID),  # unrestricted key: the IP cannot be the cause
        (True, (), Verdict.IP_NOT_ALLOWED),  # restricted, whitelist hidden (Binance)
        (True, ("203.0.113.7",), Verdict.IP_NOT_ALLOWED),  # restricted, our IP not in the list
        (True, ("198.51.100.4",), Verdict.KEY_INVALID),  # our IP is whitelisted: the key is gone
    ],
)
def test_binance_2015_uses_metadata_not_the_words_request_ip(
    restricted: bool | None, allowed: tuple[str, ...], verdict: Verdict
) -> None:
    error = ccxt_error("binance", 401, MSG_2015, authenticated_before=True)
    assert classify("binance", error, ip_restricted=restricted, allowed_ips=allowed).verdict is verdict


def test_binance_2015_without_request_ip_is_key_invalid_even_when_restricted() -> None:
    body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
    assert (
        classify("binance", ccxt_error("binance", 401, body), ip_restricted=True).verdict
        is Verdict.KEY_INVALID
    )


# --- HTTP-level answers without an exchange code ----------------------------------------------


@pytest.mark.parametrize("exchange_id", sorted(PRODUCTION_URL))
@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (500, Verdict.EXCHANGE_DOWN),
        (502, Verdict.EXCHANGE_DOWN),
        (503, Verdict.EXCHANGE_DOWN),
        (504, Verdict.EXCHANGE_DOWN),
        (520, Verdict.EXCHANGE_DOWN),
        (429, Verdict.RATE_LIMITED),
        (418, Verdict.RATE_LIMITED),
        (408, Verdict.NETWORK),
    ],
)
def test_html_error_pages(exchange_id: str, status: int, verdict: Verdict) -> None:
    error = ccxt_error(exchange_id, status, "<html><body>upstream says no</body></html>")
    result = classify(exchange_id, error)
    assert result.verdict is verdict, (type(error).__name__, str(error))
    assert result.code == f"HTTP {status}"


@pytest.mark.parametrize("exchange_id", ["binance", "bybit", "okx"])
def test_403_html_is_waf_rate_limit(exchange_id: str) -> None:
    error = ccxt_error(exchange_id, 403, "<html>403 Forbidden: access too frequent</html>")
    assert classify(exchange_id, error).verdict is Verdict.RATE_LIMITED


def test_okx_plain_429_is_exchange_not_available_in_ccxt_but_rate_limited_here() -> None:
    error = ccxt_error("okx", 429, "Too Many Requests")
    assert isinstance(error, ccxt.ExchangeNotAvailable)
    assert classify("okx", error).verdict is Verdict.RATE_LIMITED


def test_binance_429_with_body_is_read_from_the_status() -> None:
    body = '{"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000000000."}'
    error = ccxt_error("binance", 418, body)
    assert isinstance(error, ccxt.DDoSProtection)
    assert classify("binance", error) == Classification(
        Verdict.RATE_LIMITED, "-1003", "Way too much request weight used; IP banned until 1700000000000."
    )


def test_5xx_is_never_a_key_problem_whatever_the_body_says() -> None:
    body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
    error = ccxt.ExchangeNotAvailable(
        f"binance GET https://api.binance.com/api/v3/account 503 Service Unavailable {body}"
    )
    assert classify("binance", error).verdict is Verdict.EXCHANGE_DOWN


# --- ccxt class fallback (no exchange code in the text) ---------------------------------------

FALLBACK = [
    (ccxt.OnMaintenance, Verdict.EXCHANGE_DOWN),
    (ccxt.InvalidNonce, Verdict.CLOCK_SKEW),
    (ccxt.DDoSProtection, Verdict.RATE_LIMITED),
    (ccxt.RateLimitExceeded, Verdict.RATE_LIMITED),
    (ccxt.RequestTimeout, Verdict.NETWORK),
    (ccxt.ExchangeNotAvailable, Verdict.EXCHANGE_DOWN),
    (ccxt.NetworkError, Verdict.NETWORK),
    (ccxt.BadResponse, Verdict.EXCHANGE_DOWN),
    (ccxt.NullResponse, Verdict.EXCHANGE_DOWN),
    (ccxt.OperationFailed, Verdict.EXCHANGE_DOWN),
    (ccxt.AccountSuspended, Verdict.KEY_INVALID),
    (ccxt.AccountNotEnabled, Verdict.PERMISSION_MISSING),
    (ccxt.PermissionDenied, Verdict.PERMISSION_MISSING),
    (ccxt.AuthenticationError, Verdict.KEY_INVALID),
    (ccxt.OrderNotFound, Verdict.OK),
    (ccxt.ExchangeClosedByUser, Verdict.NETWORK),
    (ccxt.InsufficientFunds, Verdict.UNKNOWN),
    (ccxt.BadRequest, Verdict.UNKNOWN),
    (ccxt.NotSupported, Verdict.UNKNOWN),
    (ccxt.ExchangeError, Verdict.UNKNOWN),
    (ccxt.BaseError, Verdict.UNKNOWN),
]


@pytest.mark.parametrize(("cls", "verdict"), FALLBACK, ids=[cls.__name__ for cls, _ in FALLBACK])
@pytest.mark.parametrize("exchange_id", ["binance", "bybit", "okx", "kraken"])
def test_class_fallback(cls: type[Exception], verdict: Verdict, exchange_id: str) -> None:
    assert classify(exchange_id, cls(f"{exchange_id} something went wrong")).verdict is verdict


def test_missing_credential_raised_by_ccxt_is_key_invalid() -> None:
    exchange = ccxt.okx({"apiKey": "k", "secret": "s"})
    with pytest.raises(ccxt.AuthenticationError) as caught:
        exchange.check_required_credentials()
    assert classify("okx", caught.value).verdict is Verdict.KEY_INVALID


def test_unknown_code_falls_back_to_the_class_and_keeps_the_code() -> None:
    error = ccxt.AuthenticationError('bybit {"retCode":99999,"retMsg":"brand new auth error"}')
    assert classify("bybit", error) == Classification(Verdict.KEY_INVALID, "99999", "brand new auth error")


def test_okx_item_code_wins_over_the_batch_code() -> None:
    body = '{"code":"1","msg":"","data":[{"sCode":"50119","sMsg":"API key doesn\'t exist"}]}'
    assert classify("okx", ccxt.ExchangeError(f"okx {body}")).verdict is Verdict.KEY_INVALID


# --- transport failures -----------------------------------------------------------------------


def _wrapped(ccxt_cls: type[Exception], cause: BaseException) -> Exception:
    """What ccxt's async fetch() raises: ``raise <ccxt_cls>(details) from e``."""
    try:
        raise ccxt_cls(
            "binance GET https://api.binance.com/sapi/v1/account/apiRestrictions?signature=ab"
        ) from cause
    except ccxt_cls as error:
        return error


TRANSPORT = [
    asyncio.TimeoutError(),  # noqa: UP041 - what asyncio.wait_for raised before 3.11
    TimeoutError("read timed out"),
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    socket.gaierror(-2, "Name or service not known"),
    OSError(101, "Network is unreachable"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    aiohttp.ClientConnectionError("Cannot connect"),
]


@pytest.mark.parametrize("exc", TRANSPORT, ids=[type(e).__name__ for e in TRANSPORT])
def test_raw_transport_errors_are_network(exc: BaseException) -> None:
    result = classify("binance", exc)
    assert result.verdict is Verdict.NETWORK
    assert result.code is None


@pytest.mark.parametrize("exc", TRANSPORT, ids=[type(e).__name__ for e in TRANSPORT])
@pytest.mark.parametrize("ccxt_cls", [ccxt.ExchangeNotAvailable, ccxt.RequestTimeout, ccxt.ExchangeError])
def test_transport_errors_wrapped_by_ccxt_are_network(exc: BaseException, ccxt_cls: type[Exception]) -> None:
    result = classify("binance", _wrapped(ccxt_cls, exc))
    assert result.verdict is Verdict.NETWORK
    assert "signature" not in result.detail  # the signed query string is stripped


def test_other_python_errors_are_unknown() -> None:
    assert classify("binance", KeyError("balances")).verdict is Verdict.UNKNOWN


# --- never a key problem for transient failures (property over classes × texts) -----------------

TRANSIENT_CLASSES = [
    ccxt.NetworkError,
    ccxt.DDoSProtection,
    ccxt.RateLimitExceeded,
    ccxt.ExchangeNotAvailable,
    ccxt.OnMaintenance,
    ccxt.RequestTimeout,
    ccxt.InvalidNonce,
    ccxt.OperationFailed,
    ccxt.BadResponse,
]
TRANSIENT_TEXTS = [
    "{id}",
    "{id} GET https://api.example.com/x 503 Service Unavailable <html>down</html>",
    "{id} GET https://api.example.com/x 502 Bad Gateway ",
    "{id} GET https://api.example.com/x 504 Gateway Timeout upstream timed out",
    "{id} GET https://api.example.com/x 429 Too Many Requests slow down",
    "{id} GET https://api.example.com/x 418 I'm a teapot banned",
    "{id} 429 Too Many Requests {{}}",
    "{id} GET https://api.example.com/x 429 Too Many Requests "
    '{{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}}',
    "{id} GET https://api.example.com/x 503 Service Unavailable "
    '{{"retCode":10003,"retMsg":"API key is invalid."}}',
    "{id} GET https://api.example.com/x 500 Internal Server Error "
    '{{"code":"50119","msg":"API key doesn\'t exist"}}',
    "{id} request timed out (10000 ms)",
    "{id} <html><head><title>Cloudflare</title></head></html>",
    '{id} {{"code":-1001,"msg":"Internal error"}}',
    '{id} {{"retCode":10016,"retMsg":"Internal system error."}}',
    '{id} {{"code":"50013","msg":"Systems are busy."}}',
]
EXCHANGES = [*PRODUCTION_URL, "binanceusdm", "kraken"]


@pytest.mark.parametrize("exchange_id", EXCHANGES)
@pytest.mark.parametrize("cls", TRANSIENT_CLASSES, ids=[c.__name__ for c in TRANSIENT_CLASSES])
def test_transient_classes_never_blame_the_key(exchange_id: str, cls: type[Exception]) -> None:
    for template in TRANSIENT_TEXTS:
        result = classify(exchange_id, cls(template.format(id=exchange_id)))
        assert not result.verdict.is_key_problem, (template, result)
    for cause in TRANSPORT:
        assert classify(exchange_id, _wrapped(cls, cause)).verdict is Verdict.NETWORK


KEY_BODIES = [
    _answer(rule)[1] for rules in CLASSIFIER_TABLES.values() for rule in rules if rule.verdict.is_key_problem
]


@given(
    exchange_id=st.sampled_from(EXCHANGES),
    cls=st.sampled_from([*TRANSIENT_CLASSES, ccxt.ExchangeError, ccxt.AuthenticationError]),
    status=st.sampled_from([418, 429, *range(500, 600)]),
    body=st.one_of(st.text(max_size=80), st.sampled_from(KEY_BODIES)),
)
def test_property_5xx_429_418_never_blame_the_key(
    exchange_id: str, cls: type[Exception], status: int, body: str
) -> None:
    """Whatever the class and the body (even one carrying a key error code), a 5xx/429/418 status is
    the exchange's or our traffic's problem."""
    error = cls(f"{exchange_id} GET https://api.example.com/private {status} Some Reason {body}")
    assert not classify(exchange_id, error).verdict.is_key_problem


@given(
    exchange_id=st.sampled_from(EXCHANGES),
    cls=st.sampled_from(TRANSIENT_CLASSES),
    text=st.text(alphabet=st.characters(blacklist_characters="{"), max_size=120),
)
def test_property_transient_classes_without_exchange_code_never_blame_the_key(
    exchange_id: str, cls: type[Exception], text: str
) -> None:
    assert not classify(exchange_id, cls(f"{exchange_id} {text}")).verdict.is_key_problem


def test_detail_is_redacted_and_short() -> None:
    secret = "A" * 64
    error = ccxt.AuthenticationError(f'binance {{"code":-2014,"msg":"API-key format invalid: {secret}"}}')
    result = classify("binance", error)
    assert secret not in result.detail
    long_error = ccxt.ExchangeError("bybit " + "word " * 200)
    assert len(classify("bybit", long_error).detail) <= 200
