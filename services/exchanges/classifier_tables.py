"""Per-exchange error tables: the exchange's own code (or message) → what it says about the key.

Why tables and not ccxt's exception classes: ccxt's mapping is lossy for key health. It files an
expired Bybit key, an invalid key and an IP ban under the same ``AuthenticationError``; leaves OKX
50119 ("API key doesn't exist") as a plain ``ExchangeError``; and turns Binance -2015 into
``DDoSProtection`` once an instance has authenticated once. The exchange's own code, which ccxt
keeps in the exception text (``"<id> <raw body>"``), is the reliable signal, so the classifier
looks it up here first and falls back to the ccxt class only when no row matches.

Each row names a corpus case, ``tests/corpus/<service>/<case>.json``: the status, headers and body
of the documented answer it stands for, with its source (official docs, ccxt source, issue
threads). The tests feed every case through the real ccxt of that exchange on its production
hostname and assert the row's verdict; the local fakes answer from the same cases.

Rows are tried in order; the first match wins. A row with both ``code`` and ``message`` matches
only when both do, so such refinements are listed before the bare code row.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.core.verdicts import Verdict


@dataclass(frozen=True, slots=True)
class Rule:
    """One table row.

    ``code`` is compared exactly with the exchange's code as a string; ``message`` is a
    case-insensitive substring of the exchange's message (or of the whole ccxt text when ccxt
    dropped the body). ``case`` is the corpus case (``<service>/<name>``) the row is proven on.
    """

    verdict: Verdict
    code: str | None
    message: str | None
    case: str
    why: str


V = Verdict
R = Rule

# fmt: off
# --- Binance (spot api/sapi, USDⓈ-M fapi share the code space) -------------------------------
# Codes: https://developers.binance.com/docs/binance-spot-api-docs/errors
#        https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
# ccxt maps: ccxt/async_support/binance.py describe()['exceptions'] (~line 1700-2835).
# -2015 is not decided by its row alone: see classifier._binance_2015().
BINANCE: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "-2015", None, "binance/2015_invalid_api_key_ip",
      "deleted/unknown key, IP not whitelisted or permission missing: refined by _binance_2015"),
    R(V.KEY_INVALID, "-2014", None, "binance/2014_api_key_format_invalid", "not a Binance key"),
    R(V.KEY_INVALID, "-2008", None, "binance/2008_invalid_api_key_id", "key id unknown (sapi)"),
    R(V.KEY_INVALID, "-1099", None, "binance/1099_not_found_or_authorized",
      "key not found"),
    R(V.KEY_INVALID, "-2017", None, "binance/2017_api_keys_are_locked",
      "all keys of the account locked: the user must act"),
    R(V.KEY_INVALID, "-4056", None, "binance/4056_invalid_api_key_type", "wrong key type"),
    R(V.KEY_INVALID, "-4057", None, "binance/4057_invalid_api_public_key",
      "RSA/Ed25519 key rejected"),
    R(V.PERMISSION_MISSING, "-1002", None, "binance/1002_you_are_not_authorized", "permission missing"),
    R(V.IP_NOT_ALLOWED, "-1005", None, "binance/1005_no_such_ip_has",
      "futures IP whitelist; ccxt maps it only on fapi/dapi URLs, elsewhere ExchangeError"),
    R(V.IP_NOT_ALLOWED, "-1011", None, "binance/1011_this_ip_cannot_access",
      "route closed to this IP"),
    R(V.SIGNATURE_INVALID, "-1022", None, "binance/1022_signature_for_this_request",
      "HMAC does not verify: wrong secret"),
    R(V.CLOCK_SKEW, "-1021", None, "binance/1021_timestamp_for_this_request",
      "clock off by > recvWindow"),
    R(V.RATE_LIMITED, "-1003", None, "binance/1003_rate_limited_429",
      "IP weight limit (429) or IP ban (418)"),
    R(V.RATE_LIMITED, "-1015", None, "binance/1015_too_many_new_orders",
      "account order-count limit"),
    R(V.EXCHANGE_DOWN, "-1001", None, "binance/1001_internal_error_unable_to",
      "ccxt raises OperationFailed: neither ExchangeError nor NetworkError"),
    R(V.EXCHANGE_DOWN, "-1004", None, "binance/1004_server_is_busy_please",
      "busy"),
    R(V.EXCHANGE_DOWN, "-1006", None, "binance/1006_an_unexpected_response_was", "status unknown"),
    R(V.EXCHANGE_DOWN, "-1007", None, "binance/1007_timeout_waiting_for_response", "backend timeout"),
    R(V.EXCHANGE_DOWN, "-1008", None, "binance/1008_server_is_currently_overloaded",
      "overloaded; ccxt maps it only on real binance.com URLs"),
    R(V.KEY_INVALID, "-2011", "disabled on this account", "binance/2011_this_action_is_disabled",
      "account block; ccxt's key reads 'self account' (transpiler) and never matches, so ccxt says"
      " OrderNotFound from the -2011 code"),
    R(V.OK, "-2011", None, "binance/2011_unknown_order_sent",
      "cancel of unknown order: auth passed"),
    R(V.OK, "-2013", None, "binance/2013_order_does_not_exist",
      "query of unknown order: auth passed"),
    # Messages ccxt matches before the code; it then drops the body, so only the text is left.
    R(V.EXCHANGE_DOWN, None, "System is under maintenance", "binance/system_is_under_maintenance",
      "sapi maintenance"),
    R(V.KEY_INVALID, None, "API key does not exist", "binance/api_key_does_not",
      "deleted key (sapi wording)"),
    R(V.PERMISSION_MISSING, None, "Rest API trading is not enabled", "binance/rest_api_trading_is",
      "spot trading permission off"),
    R(V.PERMISSION_MISSING, None, "has no operation privilege", "binance/this_account_has_no",
      "permission missing"),
    R(V.PERMISSION_MISSING, None, "may not place or cancel orders", "binance/this_account_may_not",
      "trading disabled"),
)

# --- Bybit v5 -------------------------------------------------------------------------------
# Codes: https://bybit-exchange.github.io/docs/v5/error
# ccxt maps: ccxt/async_support/bybit.py describe()['exceptions'] (~line 740-1190); its broad map
# runs over the whole body before the exact code map (bybit.py handle_errors ~9591).
BYBIT: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "10003", None, "bybit/10003_api_key_is_invalid",
      "unknown/deleted key, or a key of another environment (testnet/demo)"),
    R(V.KEY_INVALID, "10007", None, "bybit/10007_user_failed",
      "authentication failed"),
    R(V.KEY_INVALID, "10008", None, "bybit/10008_user_is_banned",
      "account banned (ccxt AccountSuspended): the user must act"),
    R(V.KEY_EXPIRED, "33004", None, "bybit/33004_your_api_key_has",
      "past expiredAt; ccxt says AuthenticationError as for an invalid key"),
    R(V.IP_NOT_ALLOWED, "10010", None, "bybit/10010_unmatched_ip_please_check",
      "IP not bound to the key; ccxt PermissionDenied, the same class as 10005"),
    R(V.PERMISSION_MISSING, "10005", None, "bybit/10005_permission_denied_please_check",
      "permission group missing"),
    R(V.PERMISSION_MISSING, "10024", None, "bybit/10024_compliance_rules_triggered", "compliance"),
    R(V.PERMISSION_MISSING, "10027", None, "bybit/10027_transactions_are_banned", "trading banned"),
    R(V.SIGNATURE_INVALID, "10004", None, "bybit/10004_error_sign_origin_string", "wrong secret"),
    R(V.SIGNATURE_INVALID, "10001", "sign params error", "bybit/10001_empty_value_apitimestamp_apikey",
      "signing headers missing; a bare 10001 is a parameter error"),
    R(V.CLOCK_SKEW, "10002", None, "bybit/10002_invalid_request_please_check",
      "timestamp outside recv_window"),
    R(V.RATE_LIMITED, "10006", None, "bybit/10006_too_many_visits", "per-UID limit"),
    R(V.RATE_LIMITED, "10018", None, "bybit/10018_exceeded_ip_rate_limit", "per-IP limit"),
    R(V.RATE_LIMITED, "10009", None, "bybit/10009_ip_has_been_banned",
      "our IP is banned: ccxt says AuthenticationError, but the key is fine"),
    R(V.EXCHANGE_DOWN, "10016", None, "bybit/10016_internal_system_error",
      "service error or restart; ccxt plain ExchangeError"),
    R(V.EXCHANGE_DOWN, "5004", None, "bybit/5004_server_timeout", "server timeout"),
    R(V.EXCHANGE_DOWN, "170007", None, "bybit/170007_timeout_waiting_for_response",
      "backend timeout"),
    R(V.OK, "110001", None, "bybit/110001_order_does_not_exist",
      "cancel of unknown order: auth passed"),
    R(V.OK, "170213", None, "bybit/170213_order_does_not_exist", "spot cancel of unknown order"),
)

# --- OKX v5 ---------------------------------------------------------------------------------
# Codes: https://www.okx.com/docs-v5/en/#error-code-rest-api-public (501xx: authentication)
# ccxt maps: ccxt/async_support/okx.py describe()['exceptions'] (~line 790-1183); handle_errors
# (~8988) checks data[i].sCode, then the top-level code, never the top-level msg.
OKX: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "50111", None, "okx/50111_invalid_ok_access_key", "unknown key"),
    R(V.KEY_INVALID, "50119", None, "okx/50119_api_key_doesn_exist",
      "deleted/revoked key or a key of the other region; ccxt leaves it a plain ExchangeError"),
    R(V.KEY_INVALID, "50101", None, "okx/50101_apikey_does_not_match",
      "live key on demo trading or the reverse"),
    R(V.KEY_INVALID, "50100", None, "okx/50100_api_frozen_please_contact",
      "frozen"),
    R(V.KEY_INVALID, "50114", None, "okx/50114_invalid", "authorization invalid"),
    R(V.PASSPHRASE_INVALID, "50105", None, "okx/50105_request_header_ok_access",
      "wrong stored passphrase"),
    R(V.KEY_INVALID, "50103", None, "okx/50103_request_header_ok_access",
      "key missing"),
    R(V.PASSPHRASE_INVALID, "50104", None, "okx/50104_request_header_ok_access",
      "passphrase missing from the stored credential"),
    R(V.SIGNATURE_INVALID, "50106", None, "okx/50106_request_header_ok_access",
      "signature missing"),
    R(V.SIGNATURE_INVALID, "50107", None, "okx/50107_request_header_ok_access", "timestamp header missing"),
    R(V.KEY_INVALID, "50007", None, "okx/50007_account_blocked",
      "account blocked (ccxt AccountSuspended): the user must act"),
    R(V.IP_NOT_ALLOWED, "50110", None, "okx/50110_your_ip_203_0",
      "IP not whitelisted"),
    R(V.IP_NOT_ALLOWED, "50121", None, "okx/50121_you_can_access_our",
      "IP/region block; unmapped in ccxt"),
    R(V.PERMISSION_MISSING, "50120", None, "okx/50120_api_key_doesn_have",
      "read-only key on a trade endpoint; unmapped in ccxt"),
    R(V.PERMISSION_MISSING, "50030", None, "okx/50030_no_permission_to_use",
      "permission missing; unmapped in ccxt"),
    R(V.SIGNATURE_INVALID, "50113", None, "okx/50113_invalid_sign", "wrong secret"),
    R(V.CLOCK_SKEW, "50102", None, "okx/50102_timestamp_request_expired", "clock off by > 30 s"),
    R(V.CLOCK_SKEW, "50112", None, "okx/50112_invalid_ok_access_timestamp",
      "ccxt always sends a well-formed ISO timestamp, so a rejection means skew"),
    R(V.RATE_LIMITED, "50011", None, "okx/50011_too_many_requests", "rate limit"),
    R(V.RATE_LIMITED, "50061", None, "okx/50061_sub_account_rate_limit",
      "account rate limit; ccxt plain ExchangeError"),
    R(V.EXCHANGE_DOWN, "50001", None, "okx/50001_service_temporarily_unavailable_try",
      "maintenance"),
    R(V.EXCHANGE_DOWN, "50013", None, "okx/50013_systems_are_busy_please",
      "busy"),
    R(V.EXCHANGE_DOWN, "50026", None, "okx/50026_system_error_try_again", "system error"),
    R(V.EXCHANGE_DOWN, "50004", None, "okx/50004_api_endpoint_request_timeout",
      "endpoint timeout"),
    R(V.EXCHANGE_DOWN, "50005", None, "okx/50005_api_is_offline_or", "API offline"),
    R(V.OK, "51400", None, "okx/51400_order_cancellation_failed_as",
      "cancel of unknown order (code in data[0].sCode): auth passed"),
    R(V.OK, "51401", None, "okx/51401_order_has_been_canceled", "already cancelled"),
    R(V.OK, "51402", None, "okx/51402_order_has_been_completed", "already completed"),
    R(V.OK, "51603", None, "okx/51603_order_does_not_exist", "query of unknown order"),
)

# --- KuCoin ---------------------------------------------------------------------------------
# Codes: KuCoin REST error codes (https://www.kucoin.com/docs-new/, "Errors").
# ccxt maps: ccxt/async_support/kucoin.py describe()['exceptions'] (~line 660-790).
KUCOIN: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "400003", None, "kucoin/400003_kc_api_key_not", "unknown key"),
    R(V.PASSPHRASE_INVALID, "400004", None, "kucoin/400004_invalid_kc_api_passphrase", "wrong passphrase"),
    R(V.KEY_INVALID, "411100", None, "kucoin/411100_user_is_frozen",
      "frozen (ccxt AccountSuspended)"),
    R(V.SIGNATURE_INVALID, "400005", None, "kucoin/400005_invalid_kc_api_sign", "wrong secret"),
    R(V.SIGNATURE_INVALID, "400001", None, "kucoin/400001_any_of_kc_api",
      "signing headers missing"),
    R(V.IP_NOT_ALLOWED, "400006", None, "kucoin/400006_requested_ip_address_is",
      "ccxt AuthenticationError, but it is the IP"),
    R(V.PERMISSION_MISSING, "400007", None, "kucoin/400007_access_denied_require_more",
      "ccxt AuthenticationError, but the key works"),
    R(V.CLOCK_SKEW, "400002", None, "kucoin/400002_kc_api_timestamp_invalid", "outside 5 s window"),
    R(V.RATE_LIMITED, "429000", None, "kucoin/429000_too_many_requests_system", "rate limit"),
    R(V.EXCHANGE_DOWN, "500000", None, "kucoin/500000_internal_server_error", "server error"),
)

# --- Bitget v2 ------------------------------------------------------------------------------
# Codes: https://www.bitget.com/api-doc/common/error-code
# ccxt maps: ccxt/async_support/bitget.py describe()['exceptions'] (~line 1460-1570).
BITGET: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "40006", None, "bitget/40006_invalid_access_key", "unknown key"),
    R(V.KEY_INVALID, "40037", None, "bitget/40037_apikey_does_not_exist", "deleted key"),
    R(V.PASSPHRASE_INVALID, "40012", None, "bitget/40012_apikey_password_is_incorrect",
      "wrong passphrase"),
    R(V.KEY_INVALID, "40013", None, "bitget/40013_user_status_is_abnormal",
      "account blocked; ccxt plain ExchangeError"),
    R(V.SIGNATURE_INVALID, "40009", None, "bitget/40009_sign_signature_error", "wrong secret"),
    R(V.SIGNATURE_INVALID, "40010", None, "bitget/40010_sign_signature_error", "wrong secret"),
    R(V.IP_NOT_ALLOWED, "40018", None, "bitget/40018_invalid_ip", "IP not whitelisted"),
    R(V.PERMISSION_MISSING, "40014", None, "bitget/40014_incorrect_permissions",
      "permission missing"),
    R(V.CLOCK_SKEW, "40004", None, "bitget/40004_request_timestamp_expired", "clock"),
    R(V.CLOCK_SKEW, "40005", None, "bitget/40005_invalid_access_timestamp", "clock"),
    R(V.CLOCK_SKEW, "40008", None, "bitget/40008_request_timestamp_expired", "clock"),
    R(V.RATE_LIMITED, "429", None, "bitget/429_too_many_requests",
      "rate limit; ccxt DDoSProtection"),
    R(V.EXCHANGE_DOWN, "40015", None, "bitget/40015_system_is_abnormal_please",
      "system error; ccxt plain ExchangeError"),
)

# --- Gate v4 (errors are labels, not numbers) ------------------------------------------------
# Labels: https://www.gate.io/docs/developers/apiv4/en/#label-list
# ccxt maps: ccxt/async_support/gate.py describe()['exceptions'] (~line 1140-1230); handle_errors
# (~8196) matches only the label.
GATE: tuple[Rule, ...] = (
    R(V.KEY_INVALID, "INVALID_KEY", None, "gate/invalid_key_invalid_key_provided", "unknown key"),
    R(V.KEY_INVALID, "INVALID_CREDENTIALS", None, "gate/invalid_credentials_invalid_credentials",
      "credentials rejected"),
    R(V.KEY_INVALID, "ACCOUNT_LOCKED", None, "gate/account_locked_account_is_locked",
      "locked (ccxt AccountSuspended)"),
    R(V.SIGNATURE_INVALID, "INVALID_SIGNATURE", None, "gate/invalid_signature_signature_mismatch",
      "wrong secret"),
    R(V.IP_NOT_ALLOWED, "IP_FORBIDDEN", None, "gate/ip_forbidden_request_ip_not_in",
      "ccxt AuthenticationError, but it is the IP"),
    R(V.PERMISSION_MISSING, "READ_ONLY", None, "gate/read_only_api_key_is_read",
      "read-only key"),
    R(V.PERMISSION_MISSING, "FORBIDDEN", None, "gate/forbidden_no_permission",
      "permission missing"),
    R(V.CLOCK_SKEW, "REQUEST_EXPIRED", None, "gate/request_expired_request_timestamp_is_far",
      "ccxt AuthenticationError, but it is the clock (60 s window)"),
    R(V.RATE_LIMITED, "TOO_MANY_REQUESTS", None, "gate/too_many_requests_too_many_requests",
      "limit"),
    R(V.EXCHANGE_DOWN, "SERVER_ERROR", None, "gate/server_error_internal_server_error",
      "server error"),
    R(V.EXCHANGE_DOWN, "TOO_BUSY", None, "gate/too_busy_server_is_too_busy", "busy"),
    R(V.OK, "ORDER_NOT_FOUND", None, "gate/order_not_found_order_not_found",
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
