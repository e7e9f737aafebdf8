"""Per-exchange error tables: the exchange's own code (or message) → what it says about the key.

Why tables and not ccxt's exception classes: ccxt's mapping is lossy for key health. It files an
expired Bybit key, an invalid key and an IP ban under the same ``AuthenticationError``; leaves OKX
50119 ("API key doesn't exist") as a plain ``ExchangeError``; and turns Binance -2015 into
``DDoSProtection`` once an instance has authenticated once. The exchange's own code, which ccxt
keeps in the exception text (``"<id> <raw body>"``), is the reliable signal, so the classifier
looks it up here first and falls back to the ccxt class only when no row matches.

Each row also carries the HTTP status and a body exactly as the exchange sends them. They document
the row and let the tests feed the body through the real ccxt ``handle_errors`` of that exchange,
so every row is checked against the exception ccxt really raises.

Rows are tried in order; the first match wins. A row with both ``code`` and ``message`` matches
only when both do, so such refinements are listed before the bare code row.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.verdicts import Verdict

V = Verdict


@dataclass(frozen=True, slots=True)
class Rule:
    """One table row.

    ``code`` is compared exactly with the exchange's code as a string; ``message`` is a
    case-insensitive substring of the exchange's message (or of the whole ccxt text when the body
    could not be parsed). ``http``/``body`` are a real-shaped example, used by tests and readers.
    """

    verdict: Verdict
    code: str | None
    message: str | None
    http: int
    body: str
    why: str


def _r(verdict: Verdict, code: str | None, message: str | None, http: int, body: str, why: str) -> Rule:
    return Rule(verdict, code, message, http, body, why)


# --- Binance (spot api/sapi, USDⓈ-M fapi share the code space) -------------------------------
# Codes: https://developers.binance.com/docs/binance-spot-api-docs/errors
#        https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
# ccxt maps: ccxt/async_support/binance.py describe()['exceptions'] (~line 1700-2835).
# -2015 is not decided by its row alone: see classifier._binance_2015().
BINANCE: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "-2015", None, 401,
       '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}',
       "unknown/deleted key, IP not whitelisted or permission missing; refined by _binance_2015"),
    _r(V.KEY_INVALID, "-2014", None, 401, '{"code":-2014,"msg":"API-key format invalid."}',
       "the key string is not a Binance key"),
    _r(V.KEY_INVALID, "-2008", None, 401, '{"code":-2008,"msg":"Invalid Api-Key ID."}',
       "key id unknown (sapi)"),
    _r(V.KEY_INVALID, "-1099", None, 401, '{"code":-1099,"msg":"Not found, authenticated, or authorized"}',
       "key not found"),
    _r(V.KEY_INVALID, "-2017", None, 401, '{"code":-2017,"msg":"API Keys are locked on this account."}',
       "all keys of the account are locked: the user must act in the web UI"),
    _r(V.KEY_INVALID, "-4056", None, 400, '{"code":-4056,"msg":"Invalid api key type."}',
       "key type cannot be used for this API"),
    _r(V.KEY_INVALID, "-4057", None, 400, '{"code":-4057,"msg":"Invalid api public key"}',
       "RSA/Ed25519 public key rejected"),
    _r(V.PERMISSION_MISSING, "-1002", None, 401,
       '{"code":-1002,"msg":"You are not authorized to execute this request."}',
       "key lacks the permission for this endpoint"),
    _r(V.IP_NOT_ALLOWED, "-1005", None, 401, '{"code":-1005,"msg":"No such IP has been white listed"}',
       "futures: request IP is not in the key's whitelist (ccxt maps it only on fapi/dapi URLs)"),
    _r(V.IP_NOT_ALLOWED, "-1011", None, 400, '{"code":-1011,"msg":"This IP cannot access this route."}',
       "route closed to this IP"),
    _r(V.SIGNATURE_INVALID, "-1022", None, 400,
       '{"code":-1022,"msg":"Signature for this request is not valid."}',
       "HMAC does not verify: wrong secret"),
    _r(V.CLOCK_SKEW, "-1021", None, 400,
       '{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}',
       "our clock is off by more than recvWindow"),
    _r(V.RATE_LIMITED, "-1003", None, 429,
       '{"code":-1003,"msg":"Too much request weight used; current limit is 6000 request weight per 1 MINUTE."}',
       "IP weight limit (429) or IP ban (418)"),
    _r(V.RATE_LIMITED, "-1015", None, 400, '{"code":-1015,"msg":"Too many new orders."}',
       "order-count limit of the account"),
    _r(V.EXCHANGE_DOWN, "-1001", None, 503,
       '{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}',
       "ccxt raises OperationFailed (neither ExchangeError nor NetworkError)"),
    _r(V.EXCHANGE_DOWN, "-1004", None, 503, '{"code":-1004,"msg":"Server is busy, please wait and try again"}',
       "server busy"),
    _r(V.EXCHANGE_DOWN, "-1006", None, 503,
       '{"code":-1006,"msg":"An unexpected response was received from the message bus."}',
       "execution status unknown"),
    _r(V.EXCHANGE_DOWN, "-1007", None, 408,
       '{"code":-1007,"msg":"Timeout waiting for response from backend server."}',
       "backend timeout"),
    _r(V.EXCHANGE_DOWN, "-1008", None, 503,
       '{"code":-1008,"msg":"Server is currently overloaded with other requests. Please try again in a few minutes."}',
       "overloaded; ccxt maps it only on real binance.com URLs"),
    _r(V.KEY_INVALID, "-2011", "disabled on this account", 400,
       '{"code":-2011,"msg":"This action is disabled on this account."}',
       "account-level block; ccxt's message key is transpiled to 'self account' and never matches, "
       "so ccxt falls back to -2011 → OrderNotFound"),
    _r(V.OK, "-2011", None, 400, '{"code":-2011,"msg":"Unknown order sent."}',
       "cancel of an order id that does not exist: authentication passed"),
    _r(V.OK, "-2013", None, 400, '{"code":-2013,"msg":"Order does not exist."}',
       "query of an order id that does not exist: authentication passed"),
    # Messages ccxt matches before the code; it then drops the body, so only the text is left.
    _r(V.EXCHANGE_DOWN, None, "System is under maintenance", 200,
       '{"code":1,"msg":"System is under maintenance."}', "sapi maintenance"),
    _r(V.KEY_INVALID, None, "API key does not exist", 401,
       '{"msg":"API key does not exist","success":false}', "deleted key (sapi wording)"),
    _r(V.PERMISSION_MISSING, None, "Rest API trading is not enabled", 400,
       '{"code":-2010,"msg":"Rest API trading is not enabled."}', "spot trading permission off"),
    _r(V.PERMISSION_MISSING, None, "has no operation privilege", 400,
       '{"code":-2010,"msg":"This account has no operation privilege."}', "permission missing"),
    _r(V.PERMISSION_MISSING, None, "may not place or cancel orders", 400,
       '{"code":-2010,"msg":"This account may not place or cancel orders."}', "trading disabled"),
)

# --- Bybit v5 -------------------------------------------------------------------------------
# Codes: https://bybit-exchange.github.io/docs/v5/error
# ccxt maps: ccxt/async_support/bybit.py describe()['exceptions'] (~line 740-1190); its broad map
# runs over the whole body before the exact code map (bybit.py handle_errors ~9591).
BYBIT: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "10003", None, 200,
       '{"retCode":10003,"retMsg":"API key is invalid.","result":{},"retExtInfo":{},"time":1714065629010}',
       "unknown/deleted key or key of another environment (testnet/demo)"),
    _r(V.KEY_INVALID, "10007", None, 200,
       '{"retCode":10007,"retMsg":"User authentication failed.","result":{},"retExtInfo":{},"time":1714065629010}',
       "authentication failed"),
    _r(V.KEY_INVALID, "10008", None, 200,
       '{"retCode":10008,"retMsg":"User is banned.","result":{},"retExtInfo":{},"time":1714065629010}',
       "account banned: ccxt AccountSuspended; the user must act"),
    _r(V.KEY_EXPIRED, "33004", None, 200,
       '{"retCode":33004,"retMsg":"Your api key has expired.","result":{},"retExtInfo":{},"time":1714065629010}',
       "past expiredAt; ccxt files it as AuthenticationError like an invalid key"),
    _r(V.IP_NOT_ALLOWED, "10010", None, 200,
       '{"retCode":10010,"retMsg":"Unmatched IP, please check your API key\'s bound IP addresses.",'
       '"result":{},"retExtInfo":{},"time":1714065629010}',
       "request IP not bound to the key; ccxt PermissionDenied, same class as 10005"),
    _r(V.PERMISSION_MISSING, "10005", None, 200,
       '{"retCode":10005,"retMsg":"Permission denied, please check your API key permissions.",'
       '"result":{},"retExtInfo":{},"time":1714065629010}',
       "read-only key or permission group missing"),
    _r(V.PERMISSION_MISSING, "10024", None, 200,
       '{"retCode":10024,"retMsg":"Compliance rules triggered","result":{},"retExtInfo":{},"time":1714065629010}',
       "compliance block"),
    _r(V.PERMISSION_MISSING, "10027", None, 200,
       '{"retCode":10027,"retMsg":"Transactions are banned","result":{},"retExtInfo":{},"time":1714065629010}',
       "trading banned"),
    _r(V.SIGNATURE_INVALID, "10004", None, 200,
       '{"retCode":10004,"retMsg":"error sign! origin_string[1714065629010XXXX5000accountType=UNIFIED]",'
       '"result":{},"retExtInfo":{},"time":1714065629010}',
       "HMAC does not verify: wrong secret"),
    _r(V.SIGNATURE_INVALID, "10001", "sign params error", 200,
       '{"retCode":10001,"retMsg":"empty value: apiTimestamp[] apiKey[] apiSignature[]: openapi sign params error!",'
       '"result":null,"retExtInfo":null,"time":1664789597123}',
       "signing headers missing; plain 10001 is a parameter error"),
    _r(V.CLOCK_SKEW, "10002", None, 200,
       '{"retCode":10002,"retMsg":"invalid request, please check your server timestamp or recv_window param",'
       '"result":{},"retExtInfo":{},"time":1714065629010}',
       "timestamp outside recv_window"),
    _r(V.RATE_LIMITED, "10006", None, 200,
       '{"retCode":10006,"retMsg":"Too many visits!","result":{},"retExtInfo":{},"time":1714065629010}',
       "per-UID limit"),
    _r(V.RATE_LIMITED, "10018", None, 200,
       '{"retCode":10018,"retMsg":"Exceeded the IP Rate Limit.","result":{},"retExtInfo":{},"time":1714065629010}',
       "per-IP limit"),
    _r(V.RATE_LIMITED, "10009", None, 200,
       '{"retCode":10009,"retMsg":"IP has been banned.","result":{},"retExtInfo":{},"time":1714065629010}',
       "our IP is banned: ccxt says AuthenticationError, but the key is fine"),
    _r(V.EXCHANGE_DOWN, "10016", None, 200,
       '{"retCode":10016,"retMsg":"Internal system error.","result":{},"retExtInfo":{},"time":1714065629010}',
       "service error or restart; ccxt plain ExchangeError"),
    _r(V.EXCHANGE_DOWN, "5004", None, 200,
       '{"retCode":5004,"retMsg":"Server Timeout","result":null,"retExtInfo":{},"time":1667577060106}',
       "server timeout"),
    _r(V.EXCHANGE_DOWN, "170007", None, 200,
       '{"retCode":170007,"retMsg":"Timeout waiting for response from backend server.","result":{},'
       '"retExtInfo":{},"time":1714065629010}',
       "backend timeout"),
    _r(V.OK, "110001", None, 200,
       '{"retCode":110001,"retMsg":"Order does not exist","result":{},"retExtInfo":{},"time":1714065629010}',
       "cancel of an unknown order: authentication passed"),
    _r(V.OK, "170213", None, 200,
       '{"retCode":170213,"retMsg":"Order does not exist.","result":{},"retExtInfo":{},"time":1714065629010}',
       "spot cancel of an unknown order: authentication passed"),
)

# --- OKX v5 ---------------------------------------------------------------------------------
# Codes: https://www.okx.com/docs-v5/en/#error-code-rest-api-public (501xx: authentication)
# ccxt maps: ccxt/async_support/okx.py describe()['exceptions'] (~line 790-1183); handle_errors
# (~8988) checks data[i].sCode, then the top-level code, never the top-level msg.
OKX: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "50111", None, 401, '{"msg":"Invalid OK-ACCESS-KEY","code":"50111"}',
       "unknown key"),
    _r(V.KEY_INVALID, "50119", None, 401, '{"msg":"API key doesn\'t exist","code":"50119"}',
       "deleted/revoked key or key of the other region; ccxt leaves it a plain ExchangeError"),
    _r(V.KEY_INVALID, "50101", None, 401, '{"msg":"APIKey does not match current environment.","code":"50101"}',
       "live key on demo trading or the reverse"),
    _r(V.KEY_INVALID, "50100", None, 401, '{"msg":"API frozen, please contact customer service.","code":"50100"}',
       "key frozen"),
    _r(V.KEY_INVALID, "50114", None, 401, '{"msg":"Invalid authorization","code":"50114"}',
       "authorization invalid"),
    _r(V.KEY_INVALID, "50105", None, 401,
       '{"msg":"Request header \\"OK-ACCESS-PASSPHRASE\\" incorrect.","code":"50105"}',
       "wrong passphrase: the stored credential is wrong"),
    _r(V.KEY_INVALID, "50103", None, 401,
       '{"msg":"Request header \\"OK-ACCESS-KEY\\" cannot be empty.","code":"50103"}', "key missing"),
    _r(V.KEY_INVALID, "50104", None, 401,
       '{"msg":"Request header \\"OK-ACCESS-PASSPHRASE\\" cannot be empty.","code":"50104"}',
       "passphrase missing from the stored credential"),
    _r(V.SIGNATURE_INVALID, "50106", None, 401,
       '{"msg":"Request header \\"OK-ACCESS-SIGN\\" cannot be empty.","code":"50106"}', "signature missing"),
    _r(V.SIGNATURE_INVALID, "50107", None, 401,
       '{"msg":"Request header \\"OK-ACCESS-TIMESTAMP\\" cannot be empty.","code":"50107"}',
       "timestamp header missing"),
    _r(V.KEY_INVALID, "50007", None, 200, '{"msg":"Account blocked.","code":"50007"}',
       "account blocked: ccxt AccountSuspended; the user must act"),
    _r(V.IP_NOT_ALLOWED, "50110", None, 401,
       '{"msg":"Your IP 203.0.113.7 is not included in your API key\'s IP whitelist.","code":"50110"}',
       "request IP not in the key's whitelist"),
    _r(V.IP_NOT_ALLOWED, "50121", None, 403,
       '{"msg":"You can\'t access our services through the IP address (203.0.113.7)","code":"50121"}',
       "IP/region block; unmapped in ccxt"),
    _r(V.PERMISSION_MISSING, "50120", None, 401,
       '{"msg":"API key doesn\'t have permission to use this function","code":"50120"}',
       "read-only key calling a trade endpoint; unmapped in ccxt"),
    _r(V.PERMISSION_MISSING, "50030", None, 200, '{"msg":"No permission to use this API","code":"50030"}',
       "permission missing; unmapped in ccxt"),
    _r(V.SIGNATURE_INVALID, "50113", None, 401, '{"msg":"Invalid Sign","code":"50113"}',
       "HMAC does not verify: wrong secret"),
    _r(V.CLOCK_SKEW, "50102", None, 401, '{"msg":"Timestamp request expired","code":"50102"}',
       "our clock is off by more than 30 s"),
    _r(V.CLOCK_SKEW, "50112", None, 401, '{"msg":"Invalid OK-ACCESS-TIMESTAMP","code":"50112"}',
       "ccxt always sends a well-formed ISO timestamp, so a rejection means skew"),
    _r(V.RATE_LIMITED, "50011", None, 429, '{"msg":"Too Many Requests","code":"50011"}', "rate limit"),
    _r(V.RATE_LIMITED, "50061", None, 429, '{"msg":"Sub-account rate limit exceeded","code":"50061"}',
       "account rate limit; ccxt plain ExchangeError"),
    _r(V.EXCHANGE_DOWN, "50001", None, 503,
       '{"msg":"Service temporarily unavailable. Try again later","code":"50001"}', "maintenance"),
    _r(V.EXCHANGE_DOWN, "50013", None, 503, '{"msg":"Systems are busy. Please try again later.","code":"50013"}',
       "busy"),
    _r(V.EXCHANGE_DOWN, "50026", None, 500, '{"msg":"System error. Try again later.","code":"50026"}',
       "system error"),
    _r(V.EXCHANGE_DOWN, "50004", None, 200,
       '{"msg":"API endpoint request timeout (does not mean that the request was successful or failed, '
       'please check the request result).","code":"50004"}',
       "endpoint timeout"),
    _r(V.EXCHANGE_DOWN, "50005", None, 200,
       '{"msg":"API is offline or unavailable.","code":"50005"}', "API offline"),
    _r(V.OK, "51400", None, 200,
       '{"code":"1","data":[{"clOrdId":"","ordId":"123","sCode":"51400","sMsg":"Order cancellation failed as the '
       'order has been filled, canceled or does not exist.","ts":"1700000000000"}],"msg":"All operations failed"}',
       "cancel of an unknown order (batch shape, code in data[0].sCode): authentication passed"),
    _r(V.OK, "51401", None, 200, '{"msg":"Order has been canceled.","code":"51401","data":[]}',
       "already cancelled"),
    _r(V.OK, "51402", None, 200, '{"msg":"Order has been completed.","code":"51402","data":[]}',
       "already completed"),
    _r(V.OK, "51603", None, 200, '{"msg":"Order does not exist","code":"51603","data":[]}',
       "query of an unknown order"),
)

# --- KuCoin ---------------------------------------------------------------------------------
# Codes: KuCoin REST error codes, https://www.kucoin.com/docs-new/ (Errors → REST error codes)
# ccxt maps: ccxt/async_support/kucoin.py describe()['exceptions'] (~line 660-790).
KUCOIN: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "400003", None, 401, '{"code":"400003","msg":"KC-API-KEY not exists"}', "unknown key"),
    _r(V.KEY_INVALID, "400004", None, 401, '{"code":"400004","msg":"Invalid KC-API-PASSPHRASE"}',
       "wrong passphrase"),
    _r(V.KEY_INVALID, "411100", None, 403, '{"code":"411100","msg":"User is frozen"}',
       "account frozen: ccxt AccountSuspended"),
    _r(V.SIGNATURE_INVALID, "400005", None, 401, '{"code":"400005","msg":"Invalid KC-API-SIGN"}', "wrong secret"),
    _r(V.SIGNATURE_INVALID, "400001", None, 401,
       '{"code":"400001","msg":"Any of KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE is missing '
       'in your request header."}',
       "signing headers missing"),
    _r(V.IP_NOT_ALLOWED, "400006", None, 401,
       '{"code":"400006","msg":"The requested ip address is not in the api whitelist"}',
       "ccxt AuthenticationError, but it is the IP"),
    _r(V.PERMISSION_MISSING, "400007", None, 403, '{"code":"400007","msg":"Access Denied, require more permission."}',
       "ccxt AuthenticationError, but the key works"),
    _r(V.CLOCK_SKEW, "400002", None, 401, '{"code":"400002","msg":"KC-API-TIMESTAMP Invalid"}',
       "timestamp outside the 5 s window"),
    _r(V.RATE_LIMITED, "429000", None, 429,
       '{"code":"429000","msg":"Too many requests. System-level rate limit exceeded."}', "rate limit"),
    _r(V.EXCHANGE_DOWN, "500000", None, 500, '{"code":"500000","msg":"Internal Server Error"}', "server error"),
)

# --- Bitget v2 ------------------------------------------------------------------------------
# Codes: https://www.bitget.com/api-doc/common/error-code
# ccxt maps: ccxt/async_support/bitget.py describe()['exceptions'] (~line 1460-1570).
BITGET: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "40006", None, 400,
       '{"code":"40006","msg":"Invalid ACCESS_KEY","requestTime":1700000000000,"data":null}', "unknown key"),
    _r(V.KEY_INVALID, "40037", None, 400,
       '{"code":"40037","msg":"Apikey does not exist","requestTime":1700000000000,"data":null}', "deleted key"),
    _r(V.KEY_INVALID, "40012", None, 400,
       '{"code":"40012","msg":"apikey/password is incorrect","requestTime":1700000000000,"data":null}',
       "wrong passphrase"),
    _r(V.KEY_INVALID, "40013", None, 400,
       '{"code":"40013","msg":"User status is abnormal","requestTime":1700000000000,"data":null}',
       "account blocked; ccxt plain ExchangeError"),
    _r(V.SIGNATURE_INVALID, "40009", None, 400,
       '{"code":"40009","msg":"sign signature error","requestTime":1700000000000,"data":null}', "wrong secret"),
    _r(V.SIGNATURE_INVALID, "40010", None, 400,
       '{"code":"40010","msg":"sign signature error","requestTime":1700000000000,"data":null}', "wrong secret"),
    _r(V.IP_NOT_ALLOWED, "40018", None, 400,
       '{"code":"40018","msg":"Invalid IP","requestTime":1700000000000,"data":null}', "IP not whitelisted"),
    _r(V.PERMISSION_MISSING, "40014", None, 400,
       '{"code":"40014","msg":"Incorrect permissions","requestTime":1700000000000,"data":null}',
       "permission missing"),
    _r(V.CLOCK_SKEW, "40004", None, 400,
       '{"code":"40004","msg":"Request timestamp expired","requestTime":1700000000000,"data":null}', "clock"),
    _r(V.CLOCK_SKEW, "40005", None, 400,
       '{"code":"40005","msg":"Invalid ACCESS_TIMESTAMP","requestTime":1700000000000,"data":null}', "clock"),
    _r(V.CLOCK_SKEW, "40008", None, 400,
       '{"code":"40008","msg":"Request timestamp expired","requestTime":1700000000000,"data":null}', "clock"),
    _r(V.RATE_LIMITED, "429", None, 429,
       '{"code":"429","msg":"Too many requests","requestTime":1700000000000,"data":null}',
       "rate limit; ccxt DDoSProtection"),
    _r(V.EXCHANGE_DOWN, "40015", None, 500,
       '{"code":"40015","msg":"System is abnormal, please try again later","requestTime":1700000000000,"data":null}',
       "system error; ccxt plain ExchangeError"),
)

# --- Gate v4 (errors are labels, not numbers) ------------------------------------------------
# Labels: https://www.gate.io/docs/developers/apiv4/en/#label-list
# ccxt maps: ccxt/async_support/gate.py describe()['exceptions'] (~line 1140-1230); handle_errors
# (~8196) matches only the label.
GATE: tuple[Rule, ...] = (
    _r(V.KEY_INVALID, "INVALID_KEY", None, 401, '{"label":"INVALID_KEY","message":"Invalid key provided"}',
       "unknown key"),
    _r(V.KEY_INVALID, "INVALID_CREDENTIALS", None, 401,
       '{"label":"INVALID_CREDENTIALS","message":"Invalid credentials provided"}', "credentials rejected"),
    _r(V.KEY_INVALID, "ACCOUNT_LOCKED", None, 403, '{"label":"ACCOUNT_LOCKED","message":"Account is locked"}',
       "account locked: ccxt AccountSuspended"),
    _r(V.SIGNATURE_INVALID, "INVALID_SIGNATURE", None, 401,
       '{"label":"INVALID_SIGNATURE","message":"Signature mismatch"}', "wrong secret"),
    _r(V.IP_NOT_ALLOWED, "IP_FORBIDDEN", None, 403,
       '{"label":"IP_FORBIDDEN","message":"Request IP not in whitelist: 203.0.113.7"}',
       "ccxt AuthenticationError, but it is the IP"),
    _r(V.PERMISSION_MISSING, "READ_ONLY", None, 403,
       '{"label":"READ_ONLY","message":"API key is read-only"}', "read-only key"),
    _r(V.PERMISSION_MISSING, "FORBIDDEN", None, 403,
       '{"label":"FORBIDDEN","message":"No permission for this action"}', "permission missing"),
    _r(V.CLOCK_SKEW, "REQUEST_EXPIRED", None, 401,
       '{"label":"REQUEST_EXPIRED","message":"Request timestamp is far from the server time"}',
       "ccxt AuthenticationError, but it is the clock (60 s window)"),
    _r(V.RATE_LIMITED, "TOO_MANY_REQUESTS", None, 429,
       '{"label":"TOO_MANY_REQUESTS","message":"Too many requests"}', "rate limit"),
    _r(V.EXCHANGE_DOWN, "SERVER_ERROR", None, 500,
       '{"label":"SERVER_ERROR","message":"Internal server error"}', "server error"),
    _r(V.EXCHANGE_DOWN, "TOO_BUSY", None, 503, '{"label":"TOO_BUSY","message":"Server is too busy"}', "busy"),
    _r(V.OK, "ORDER_NOT_FOUND", None, 404, '{"label":"ORDER_NOT_FOUND","message":"Order not found"}',
       "cancel of an unknown order: authentication passed"),
)

CLASSIFIER_TABLES: dict[str, tuple[Rule, ...]] = {
    "binance": BINANCE,
    "bybit": BYBIT,
    "okx": OKX,
    "kucoin": KUCOIN,
    "bitget": BITGET,
    "gate": GATE,
}
"""Exchange id → its rows. Variants with the same code space share a table (TABLE_OF)."""

TABLE_OF: dict[str, str] = {
    **{name: name for name in CLASSIFIER_TABLES},
    "binanceusdm": "binance",
    "binancecoinm": "binance",
    "kucoinfutures": "kucoin",
    "gateio": "gate",
}
