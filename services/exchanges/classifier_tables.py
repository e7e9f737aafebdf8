"""Per-exchange error tables: the exchange's own code (or message) → what it says about the key.

Why tables and not ccxt's exception classes: ccxt's mapping is lossy for key health. It files an
expired Bybit key, an invalid key and an IP ban under the same ``AuthenticationError``; leaves OKX
50119 ("API key doesn't exist") as a plain ``ExchangeError``; and turns Binance -2015 into
``DDoSProtection`` once an instance has authenticated once. The exchange's own code, which ccxt
keeps in the exception text (``"<id> <raw body>"``), is the reliable signal, so the classifier
looks it up here first and falls back to the ccxt class only when no row matches.

Each row also carries the HTTP status and a body shaped exactly as the exchange sends it. They
document the row and let the tests feed the body through the real ccxt ``handle_errors`` of that
exchange, so every row is checked against the exception ccxt really raises.

Rows are tried in order; the first match wins. A row with both ``code`` and ``message`` matches
only when both do, so such refinements are listed before the bare code row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.core.verdicts import Verdict


@dataclass(frozen=True, slots=True)
class Rule:
    """One table row.

    ``code`` is compared exactly with the exchange's code as a string; ``message`` is a
    case-insensitive substring of the exchange's message (or of the whole ccxt text when ccxt
    dropped the body). ``http``/``body`` are a real-shaped example, used by tests and readers.
    """

    verdict: Verdict
    code: str | None
    message: str | None
    http: int
    body: str
    why: str


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _binance(code: int | None, msg: str) -> str:
    return _json({"code": code, "msg": msg} if code is not None else {"msg": msg, "success": False})


def _bybit(code: int, msg: str) -> str:
    return _json({"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": 1714065629010})


def _okx(code: str, msg: str) -> str:
    return _json({"code": code, "msg": msg, "data": []})


def _kucoin(code: str, msg: str) -> str:
    return _json({"code": code, "msg": msg})


def _bitget(code: str, msg: str) -> str:
    return _json({"code": code, "msg": msg, "requestTime": 1700000000000, "data": None})


def _gate(label: str, message: str) -> str:
    return _json({"label": label, "message": message})


V = Verdict
R = Rule

# fmt: off
# --- Binance (spot api/sapi, USDⓈ-M fapi share the code space) -------------------------------
# Codes: https://developers.binance.com/docs/binance-spot-api-docs/errors
#        https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
# ccxt maps: ccxt/async_support/binance.py describe()['exceptions'] (~line 1700-2835).
# -2015 is not decided by its row alone: see classifier._binance_2015().
BINANCE: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "-2015", None, 401, _binance(-2015, "Invalid API-key, IP, or permissions for action."),
      "deleted/unknown key, IP not whitelisted or permission missing: refined by _binance_2015"),
    R(V.KEY_INVALID, "-2014", None, 401, _binance(-2014, "API-key format invalid."), "not a Binance key"),
    R(V.KEY_INVALID, "-2008", None, 401, _binance(-2008, "Invalid Api-Key ID."), "key id unknown (sapi)"),
    R(V.KEY_INVALID, "-1099", None, 401, _binance(-1099, "Not found, authenticated, or authorized"),
      "key not found"),
    R(V.KEY_INVALID, "-2017", None, 401, _binance(-2017, "API Keys are locked on this account."),
      "all keys of the account locked: the user must act"),
    R(V.KEY_INVALID, "-4056", None, 400, _binance(-4056, "Invalid api key type."), "wrong key type"),
    R(V.KEY_INVALID, "-4057", None, 400, _binance(-4057, "Invalid api public key"),
      "RSA/Ed25519 key rejected"),
    R(V.PERMISSION_MISSING, "-1002", None, 401,
      _binance(-1002, "You are not authorized to execute this request."), "permission missing"),
    R(V.IP_NOT_ALLOWED, "-1005", None, 401, _binance(-1005, "No such IP has been white listed"),
      "futures IP whitelist; ccxt maps it only on fapi/dapi URLs, elsewhere ExchangeError"),
    R(V.IP_NOT_ALLOWED, "-1011", None, 400, _binance(-1011, "This IP cannot access this route."),
      "route closed to this IP"),
    R(V.SIGNATURE_INVALID, "-1022", None, 400, _binance(-1022, "Signature for this request is not valid."),
      "HMAC does not verify: wrong secret"),
    R(V.CLOCK_SKEW, "-1021", None, 400,
      _binance(-1021, "Timestamp for this request is outside of the recvWindow."),
      "clock off by > recvWindow"),
    R(V.RATE_LIMITED, "-1003", None, 429,
      _binance(-1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."),
      "IP weight limit (429) or IP ban (418)"),
    R(V.RATE_LIMITED, "-1015", None, 400, _binance(-1015, "Too many new orders."),
      "account order-count limit"),
    R(V.EXCHANGE_DOWN, "-1001", None, 503,
      _binance(-1001, "Internal error; unable to process your request. Please try again."),
      "ccxt raises OperationFailed: neither ExchangeError nor NetworkError"),
    R(V.EXCHANGE_DOWN, "-1004", None, 503, _binance(-1004, "Server is busy, please wait and try again"),
      "busy"),
    R(V.EXCHANGE_DOWN, "-1006", None, 503,
      _binance(-1006, "An unexpected response was received from the message bus."), "status unknown"),
    R(V.EXCHANGE_DOWN, "-1007", None, 408,
      _binance(-1007, "Timeout waiting for response from backend server."), "backend timeout"),
    R(V.EXCHANGE_DOWN, "-1008", None, 503,
      _binance(-1008, "Server is currently overloaded with other requests. Please try again later."),
      "overloaded; ccxt maps it only on real binance.com URLs"),
    R(V.KEY_INVALID, "-2011", "disabled on this account", 400,
      _binance(-2011, "This action is disabled on this account."),
      "account block; ccxt's key reads 'self account' (transpiler) and never matches, so ccxt says"
      " OrderNotFound from the -2011 code"),
    R(V.OK, "-2011", None, 400, _binance(-2011, "Unknown order sent."),
      "cancel of unknown order: auth passed"),
    R(V.OK, "-2013", None, 400, _binance(-2013, "Order does not exist."),
      "query of unknown order: auth passed"),
    # Messages ccxt matches before the code; it then drops the body, so only the text is left.
    R(V.EXCHANGE_DOWN, None, "System is under maintenance", 200, _binance(1, "System is under maintenance."),
      "sapi maintenance"),
    R(V.KEY_INVALID, None, "API key does not exist", 401, _binance(None, "API key does not exist"),
      "deleted key (sapi wording)"),
    R(V.PERMISSION_MISSING, None, "Rest API trading is not enabled", 400,
      _binance(-2010, "Rest API trading is not enabled."), "spot trading permission off"),
    R(V.PERMISSION_MISSING, None, "has no operation privilege", 400,
      _binance(-2010, "This account has no operation privilege."), "permission missing"),
    R(V.PERMISSION_MISSING, None, "may not place or cancel orders", 400,
      _binance(-2010, "This account may not place or cancel orders."), "trading disabled"),
)

# --- Bybit v5 -------------------------------------------------------------------------------
# Codes: https://bybit-exchange.github.io/docs/v5/error
# ccxt maps: ccxt/async_support/bybit.py describe()['exceptions'] (~line 740-1190); its broad map
# runs over the whole body before the exact code map (bybit.py handle_errors ~9591).
BYBIT: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "10003", None, 200, _bybit(10003, "API key is invalid."),
      "unknown/deleted key, or a key of another environment (testnet/demo)"),
    R(V.KEY_INVALID, "10007", None, 200, _bybit(10007, "User authentication failed."),
      "authentication failed"),
    R(V.KEY_INVALID, "10008", None, 200, _bybit(10008, "User is banned."),
      "account banned (ccxt AccountSuspended): the user must act"),
    R(V.KEY_EXPIRED, "33004", None, 200, _bybit(33004, "Your api key has expired."),
      "past expiredAt; ccxt says AuthenticationError as for an invalid key"),
    R(V.IP_NOT_ALLOWED, "10010", None, 200,
      _bybit(10010, "Unmatched IP, please check your API key's bound IP addresses."),
      "IP not bound to the key; ccxt PermissionDenied, the same class as 10005"),
    R(V.PERMISSION_MISSING, "10005", None, 200,
      _bybit(10005, "Permission denied, please check your API key permissions."), "permission group missing"),
    R(V.PERMISSION_MISSING, "10024", None, 200, _bybit(10024, "Compliance rules triggered"), "compliance"),
    R(V.PERMISSION_MISSING, "10027", None, 200, _bybit(10027, "Transactions are banned"), "trading banned"),
    R(V.SIGNATURE_INVALID, "10004", None, 200,
      _bybit(10004, "error sign! origin_string[1714065629010XXXX5000accountType=UNIFIED]"), "wrong secret"),
    R(V.SIGNATURE_INVALID, "10001", "sign params error", 200,
      _bybit(10001, "empty value: apiTimestamp[] apiKey[] apiSignature[]: openapi sign params error!"),
      "signing headers missing; a bare 10001 is a parameter error"),
    R(V.CLOCK_SKEW, "10002", None, 200,
      _bybit(10002, "invalid request, please check your server timestamp or recv_window param"),
      "timestamp outside recv_window"),
    R(V.RATE_LIMITED, "10006", None, 200, _bybit(10006, "Too many visits!"), "per-UID limit"),
    R(V.RATE_LIMITED, "10018", None, 200, _bybit(10018, "Exceeded the IP Rate Limit."), "per-IP limit"),
    R(V.RATE_LIMITED, "10009", None, 200, _bybit(10009, "IP has been banned."),
      "our IP is banned: ccxt says AuthenticationError, but the key is fine"),
    R(V.EXCHANGE_DOWN, "10016", None, 200, _bybit(10016, "Internal system error."),
      "service error or restart; ccxt plain ExchangeError"),
    R(V.EXCHANGE_DOWN, "5004", None, 200, _bybit(5004, "Server Timeout"), "server timeout"),
    R(V.EXCHANGE_DOWN, "170007", None, 200,
      _bybit(170007, "Timeout waiting for response from backend server."),
      "backend timeout"),
    R(V.OK, "110001", None, 200, _bybit(110001, "Order does not exist"),
      "cancel of unknown order: auth passed"),
    R(V.OK, "170213", None, 200, _bybit(170213, "Order does not exist."), "spot cancel of unknown order"),
)

# --- OKX v5 ---------------------------------------------------------------------------------
# Codes: https://www.okx.com/docs-v5/en/#error-code-rest-api-public (501xx: authentication)
# ccxt maps: ccxt/async_support/okx.py describe()['exceptions'] (~line 790-1183); handle_errors
# (~8988) checks data[i].sCode, then the top-level code, never the top-level msg.
_OKX_BATCH_51400 = _json({
    "code": "1", "msg": "All operations failed",
    "data": [{"clOrdId": "", "ordId": "123", "sCode": "51400", "ts": "1700000000000",
              "sMsg": "Order cancellation failed as the order has been filled, canceled or does not exist."}],
})
OKX: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "50111", None, 401, _okx("50111", "Invalid OK-ACCESS-KEY"), "unknown key"),
    R(V.KEY_INVALID, "50119", None, 401, _okx("50119", "API key doesn't exist"),
      "deleted/revoked key or a key of the other region; ccxt leaves it a plain ExchangeError"),
    R(V.KEY_INVALID, "50101", None, 401, _okx("50101", "APIKey does not match current environment."),
      "live key on demo trading or the reverse"),
    R(V.KEY_INVALID, "50100", None, 401, _okx("50100", "API frozen, please contact customer service."),
      "frozen"),
    R(V.KEY_INVALID, "50114", None, 401, _okx("50114", "Invalid authorization"), "authorization invalid"),
    R(V.KEY_INVALID, "50105", None, 401, _okx("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.'),
      "wrong stored passphrase"),
    R(V.KEY_INVALID, "50103", None, 401, _okx("50103", 'Request header "OK-ACCESS-KEY" cannot be empty.'),
      "key missing"),
    R(V.KEY_INVALID, "50104", None, 401,
      _okx("50104", 'Request header "OK-ACCESS-PASSPHRASE" cannot be empty.'),
      "passphrase missing from the stored credential"),
    R(V.SIGNATURE_INVALID, "50106", None, 401,
      _okx("50106", 'Request header "OK-ACCESS-SIGN" cannot be empty.'),
      "signature missing"),
    R(V.SIGNATURE_INVALID, "50107", None, 401,
      _okx("50107", 'Request header "OK-ACCESS-TIMESTAMP" cannot be empty.'), "timestamp header missing"),
    R(V.KEY_INVALID, "50007", None, 200, _okx("50007", "Account blocked."),
      "account blocked (ccxt AccountSuspended): the user must act"),
    R(V.IP_NOT_ALLOWED, "50110", None, 401,
      _okx("50110", "Your IP 203.0.113.7 is not included in your API key's IP whitelist."),
      "IP not whitelisted"),
    R(V.IP_NOT_ALLOWED, "50121", None, 403,
      _okx("50121", "You can't access our services through the IP address (203.0.113.7)"),
      "IP/region block; unmapped in ccxt"),
    R(V.PERMISSION_MISSING, "50120", None, 401,
      _okx("50120", "API key doesn't have permission to use this function"),
      "read-only key on a trade endpoint; unmapped in ccxt"),
    R(V.PERMISSION_MISSING, "50030", None, 200, _okx("50030", "No permission to use this API"),
      "permission missing; unmapped in ccxt"),
    R(V.SIGNATURE_INVALID, "50113", None, 401, _okx("50113", "Invalid Sign"), "wrong secret"),
    R(V.CLOCK_SKEW, "50102", None, 401, _okx("50102", "Timestamp request expired"), "clock off by > 30 s"),
    R(V.CLOCK_SKEW, "50112", None, 401, _okx("50112", "Invalid OK-ACCESS-TIMESTAMP"),
      "ccxt always sends a well-formed ISO timestamp, so a rejection means skew"),
    R(V.RATE_LIMITED, "50011", None, 429, _okx("50011", "Too Many Requests"), "rate limit"),
    R(V.RATE_LIMITED, "50061", None, 429, _okx("50061", "Sub-account rate limit exceeded"),
      "account rate limit; ccxt plain ExchangeError"),
    R(V.EXCHANGE_DOWN, "50001", None, 503, _okx("50001", "Service temporarily unavailable. Try again later"),
      "maintenance"),
    R(V.EXCHANGE_DOWN, "50013", None, 503, _okx("50013", "Systems are busy. Please try again later."),
      "busy"),
    R(V.EXCHANGE_DOWN, "50026", None, 500, _okx("50026", "System error. Try again later."), "system error"),
    R(V.EXCHANGE_DOWN, "50004", None, 200,
      _okx("50004", "API endpoint request timeout (does not mean that the request was successful)."),
      "endpoint timeout"),
    R(V.EXCHANGE_DOWN, "50005", None, 200, _okx("50005", "API is offline or unavailable."), "API offline"),
    R(V.OK, "51400", None, 200,
      _OKX_BATCH_51400, "cancel of unknown order (code in data[0].sCode): auth passed"),
    R(V.OK, "51401", None, 200, _okx("51401", "Order has been canceled."), "already cancelled"),
    R(V.OK, "51402", None, 200, _okx("51402", "Order has been completed."), "already completed"),
    R(V.OK, "51603", None, 200, _okx("51603", "Order does not exist"), "query of unknown order"),
)

# --- KuCoin ---------------------------------------------------------------------------------
# Codes: KuCoin REST error codes (https://www.kucoin.com/docs-new/, "Errors").
# ccxt maps: ccxt/async_support/kucoin.py describe()['exceptions'] (~line 660-790).
KUCOIN: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "400003", None, 401, _kucoin("400003", "KC-API-KEY not exists"), "unknown key"),
    R(V.KEY_INVALID, "400004", None, 401, _kucoin("400004", "Invalid KC-API-PASSPHRASE"), "wrong passphrase"),
    R(V.KEY_INVALID, "411100", None, 403, _kucoin("411100", "User is frozen"),
      "frozen (ccxt AccountSuspended)"),
    R(V.SIGNATURE_INVALID, "400005", None, 401, _kucoin("400005", "Invalid KC-API-SIGN"), "wrong secret"),
    R(V.SIGNATURE_INVALID, "400001", None, 401,
      _kucoin("400001", "Any of KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE is missing."),
      "signing headers missing"),
    R(V.IP_NOT_ALLOWED, "400006", None, 401,
      _kucoin("400006", "The requested ip address is not in the api whitelist"),
      "ccxt AuthenticationError, but it is the IP"),
    R(V.PERMISSION_MISSING, "400007", None, 403, _kucoin("400007", "Access Denied, require more permission."),
      "ccxt AuthenticationError, but the key works"),
    R(V.CLOCK_SKEW, "400002", None, 401, _kucoin("400002", "KC-API-TIMESTAMP Invalid"), "outside 5 s window"),
    R(V.RATE_LIMITED, "429000", None, 429,
      _kucoin("429000", "Too many requests. System-level rate limit exceeded."), "rate limit"),
    R(V.EXCHANGE_DOWN, "500000", None, 500, _kucoin("500000", "Internal Server Error"), "server error"),
)

# --- Bitget v2 ------------------------------------------------------------------------------
# Codes: https://www.bitget.com/api-doc/common/error-code
# ccxt maps: ccxt/async_support/bitget.py describe()['exceptions'] (~line 1460-1570).
BITGET: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "40006", None, 400, _bitget("40006", "Invalid ACCESS_KEY"), "unknown key"),
    R(V.KEY_INVALID, "40037", None, 400, _bitget("40037", "Apikey does not exist"), "deleted key"),
    R(V.KEY_INVALID, "40012", None, 400, _bitget("40012", "apikey/password is incorrect"),
      "wrong passphrase"),
    R(V.KEY_INVALID, "40013", None, 400, _bitget("40013", "User status is abnormal"),
      "account blocked; ccxt plain ExchangeError"),
    R(V.SIGNATURE_INVALID, "40009", None, 400, _bitget("40009", "sign signature error"), "wrong secret"),
    R(V.SIGNATURE_INVALID, "40010", None, 400, _bitget("40010", "sign signature error"), "wrong secret"),
    R(V.IP_NOT_ALLOWED, "40018", None, 400, _bitget("40018", "Invalid IP"), "IP not whitelisted"),
    R(V.PERMISSION_MISSING, "40014", None, 400, _bitget("40014", "Incorrect permissions"),
      "permission missing"),
    R(V.CLOCK_SKEW, "40004", None, 400, _bitget("40004", "Request timestamp expired"), "clock"),
    R(V.CLOCK_SKEW, "40005", None, 400, _bitget("40005", "Invalid ACCESS_TIMESTAMP"), "clock"),
    R(V.CLOCK_SKEW, "40008", None, 400, _bitget("40008", "Request timestamp expired"), "clock"),
    R(V.RATE_LIMITED, "429", None, 429, _bitget("429", "Too many requests"),
      "rate limit; ccxt DDoSProtection"),
    R(V.EXCHANGE_DOWN, "40015", None, 500, _bitget("40015", "System is abnormal, please try again later"),
      "system error; ccxt plain ExchangeError"),
)

# --- Gate v4 (errors are labels, not numbers) ------------------------------------------------
# Labels: https://www.gate.io/docs/developers/apiv4/en/#label-list
# ccxt maps: ccxt/async_support/gate.py describe()['exceptions'] (~line 1140-1230); handle_errors
# (~8196) matches only the label.
GATE: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "INVALID_KEY", None, 401, _gate("INVALID_KEY", "Invalid key provided"), "unknown key"),
    R(V.KEY_INVALID, "INVALID_CREDENTIALS", None, 401, _gate("INVALID_CREDENTIALS", "Invalid credentials"),
      "credentials rejected"),
    R(V.KEY_INVALID, "ACCOUNT_LOCKED", None, 403, _gate("ACCOUNT_LOCKED", "Account is locked"),
      "locked (ccxt AccountSuspended)"),
    R(V.SIGNATURE_INVALID, "INVALID_SIGNATURE", None, 401, _gate("INVALID_SIGNATURE", "Signature mismatch"),
      "wrong secret"),
    R(V.IP_NOT_ALLOWED, "IP_FORBIDDEN", None, 403, _gate("IP_FORBIDDEN", "Request IP not in whitelist"),
      "ccxt AuthenticationError, but it is the IP"),
    R(V.PERMISSION_MISSING, "READ_ONLY", None, 403, _gate("READ_ONLY", "API key is read-only"),
      "read-only key"),
    R(V.PERMISSION_MISSING, "FORBIDDEN", None, 403, _gate("FORBIDDEN", "No permission"),
      "permission missing"),
    R(V.CLOCK_SKEW, "REQUEST_EXPIRED", None, 401,
      _gate("REQUEST_EXPIRED", "Request timestamp is far from now"),
      "ccxt AuthenticationError, but it is the clock (60 s window)"),
    R(V.RATE_LIMITED, "TOO_MANY_REQUESTS", None, 429, _gate("TOO_MANY_REQUESTS", "Too many requests"),
      "limit"),
    R(V.EXCHANGE_DOWN, "SERVER_ERROR", None, 500, _gate("SERVER_ERROR", "Internal server error"),
      "server error"),
    R(V.EXCHANGE_DOWN, "TOO_BUSY", None, 503, _gate("TOO_BUSY", "Server is too busy"), "busy"),
    R(V.OK, "ORDER_NOT_FOUND", None, 404, _gate("ORDER_NOT_FOUND", "Order not found"),
      "cancel of unknown order: auth passed"),
)
# fmt: on

CLASSIFIER_TABLES: dict[str, tuple[Rule, ...]] = {
    "binance": BINANCE,
    "bybit": BYBIT,
    "okx": OKX,
    "kucoin": KUCOIN,
    "bitget": BITGET,
    "gate": GATE,
}
"""Table name → rows. Exchange ids sharing a code space map to one table through TABLE_OF."""

TABLE_OF: dict[str, str] = {
    **{name: name for name in CLASSIFIER_TABLES},
    "binanceusdm": "binance",
    "binancecoinm": "binance",
    "kucoinfutures": "kucoin",
    "gateio": "gate",
}
