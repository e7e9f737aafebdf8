"""Local Bybit v5 (``/v5/...``), unified trading account.

Signing (as ccxt's ``bybit.sign`` for v5 URLs): headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms),
``X-BAPI-RECV-WINDOW`` and ``X-BAPI-SIGN`` = lowercase hex HMAC-SHA256 of
``timestamp + apiKey + recvWindow + payload``, where payload is the query string as sent (GET) or the raw
JSON body (POST). Accepted when ``server - recvWindow <= timestamp < server + 1000``.

Bybit answers almost every error with HTTP 200 and a non-zero ``retCode``: 10003 unknown key, 10004 bad
signature (echoing the string it expected to be signed), 10002 clock skew, 10010 IP not bound, 33004
expired key, 10005 missing permission, 10006 per-key rate limit (with ``X-Bapi-Limit*`` headers on every
private reply). The per-IP limit (600 requests per 5 s) is enforced by its CDN: HTTP 403 "access too
frequent", which is also what the ``ban`` fault sends. Gateway failures come back as HTML pages.

Keys without a bound IP expire 90 days after creation; ``/v5/user/query-api`` reports that as
``expiredAt``/``deadlineDay``. For IP-bound keys it reports ``deadlineDay: -2`` and an empty ``expiredAt``
(an approximation: Bybit documents the fields only for keys that do expire).
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from .base import (
    AuthFailure,
    Call,
    Credentials,
    Endpoint,
    Fault,
    InsufficientBalance,
    LocalExchange,
    LocalKey,
    LocalOrder,
    Market,
    MarketSpec,
    Pool,
    Rejected,
    Reply,
    answer,
    decimals,
    hmac_hex,
    html_reply,
    iso_z,
    ms,
    parse_side,
    plain,
    random_token,
)

KEY_LIFETIME_DAYS = 90
DEFAULT_RECV_WINDOW_MS = 5000
PERMISSION_GROUPS = (
    "Options",
    "Derivatives",
    "CopyTrading",
    "BlockTrade",
    "Exchange",
    "NFT",
    "Affiliate",
    "Earn",
)


class LocalBybit(LocalExchange):
    exchange_id = "bybit"
    api_key_header = "X-BAPI-API-KEY"
    pools: ClassVar = {"ip": Pool(5, 600)}
    primary_pool = "ip"
    main_wallet = "unified"
    key_window_s = 1.0
    ban_after_strikes = 0  # going over the per-IP limit bans the IP straight away
    ban_seconds = 600.0
    market_overrides: ClassVar = {
        "BTC/USDT:USDT": {"min_notional": "5"},
        "ETH/USDT:USDT": {"min_notional": "5"},
    }

    # ---- identity ---------------------------------------------------------------------------------

    def market_id(self, spec: MarketSpec) -> str:
        return spec.symbol.partition(":")[0].replace("/", "")

    def new_credentials(self) -> tuple[str, str, str | None]:
        return random_token(18), random_token(36), None

    def looks_like_key(self, api_key: str) -> bool:
        """Bybit has one answer (10003) for malformed and unknown keys alike."""
        return True

    def new_order_id(self) -> str:
        return str(uuid.uuid4())

    def policy_expiry(self, key: LocalKey) -> datetime | None:
        """A key without a bound IP stops working 90 days after it was created."""
        return key.created_at + timedelta(days=KEY_LIFETIME_DAYS) if key.whitelist is None else None

    # ---- wire format ------------------------------------------------------------------------------

    def ok(self, result: Any) -> Reply:
        return Reply(
            json={"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": self.now_ms()}
        )

    def error(self, code: int, msg: str) -> Reply:
        return Reply(
            json={"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": self.now_ms()},
            error_code=str(code),
        )

    def read_credentials(self, call: Call) -> Credentials | Reply:
        api_key = call.api_key or ""
        timestamp = call.headers.get("X-BAPI-TIMESTAMP", "")
        signature = call.headers.get("X-BAPI-SIGN", "")
        recv_window = call.headers.get("X-BAPI-RECV-WINDOW", str(DEFAULT_RECV_WINDOW_MS))
        if not (api_key and timestamp and signature):
            return self.error(
                10001,
                f"empty value: apiTimestamp[{timestamp}] apiKey[{api_key}] apiSignature[{signature}]: "
                "openapi sign params error!",
            )
        payload = call.raw_body if call.method == "POST" else call.raw_query
        try:
            return Credentials(
                api_key,
                signature,
                f"{timestamp}{api_key}{recv_window}{payload}",
                int(timestamp),
                int(recv_window),
            )
        except ValueError:
            return self.skew_error(timestamp, recv_window)

    def signature(self, secret: str, payload: str) -> str:
        return hmac_hex(secret, payload)

    def skew_error(self, timestamp: str, recv_window: str) -> Reply:
        return answer(
            "bybit/10002_invalid_request_please_check",
            req_ts=timestamp,
            now_ms=self.now_ms(),
            recv_window=recv_window,
        )

    def auth_error(self, failure: AuthFailure, call: Call) -> Reply:
        credentials = call.credentials
        match failure:
            case AuthFailure.CLOCK_SKEW if credentials is not None:
                return self.skew_error(str(credentials.timestamp_ms), str(credentials.recv_window_ms))
            case AuthFailure.BAD_SIGNATURE if credentials is not None:
                payload = json.dumps(credentials.payload)[1:-1]  # inside a JSON string
                return answer("bybit/10004_error_sign_origin_string", payload=payload, now_ms=self.now_ms())
            case AuthFailure.IP_NOT_ALLOWED:
                return answer("bybit/10010_unmatched_ip_please_check", now_ms=self.now_ms())
            case AuthFailure.EXPIRED:
                return answer("bybit/33004_your_api_key_has", now_ms=self.now_ms())
            case AuthFailure.NO_PERMISSION:
                return answer("bybit/10005_permission_denied_please_check", now_ms=self.now_ms())
            case _:
                return answer("bybit/10003_api_key_is_invalid", now_ms=self.now_ms())

    def fault_reply(self, fault: Fault, call: Call) -> Reply:
        match fault.kind:
            case "status_5xx":
                return html_reply(fault.status or 502)
            case "maintenance":
                return html_reply(503, "<p>The system is under maintenance.</p>")
            case "rate_limit":
                return self.rate_limit_reply(call, self.key_window_s)
            case _:
                return self.ban_reply(call, self.ban_seconds)

    def rate_limit_reply(self, call: Call, retry_after_s: float) -> Reply:
        """Per-key limits answer 10006; the per-IP limit bans at once (``ban_after_strikes = 0``)."""
        return answer("bybit/10006_too_many_visits", now_ms=self.now_ms())

    def ban_reply(self, call: Call, retry_after_s: float) -> Reply:
        return answer("bybit/403_access_too_frequent")

    def decorate(self, call: Call, reply: Reply) -> None:
        super().decorate(call, reply)
        endpoint = call.endpoint
        if endpoint is None or endpoint.key_limit is None or call.key_used is None:
            return
        reply.headers |= {
            "X-Bapi-Limit": str(endpoint.key_limit),
            "X-Bapi-Limit-Status": str(max(0, endpoint.key_limit - call.key_used)),
            "X-Bapi-Limit-Reset-Timestamp": str(self.key_window_reset_ms()),
        }

    # ---- routes -----------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        return {
            ("GET", "/v5/market/time"): Endpoint(self.server_time),
            ("GET", "/v5/market/instruments-info"): Endpoint(self.instruments),
            ("GET", "/v5/market/tickers"): Endpoint(self.tickers),
            ("GET", "/v5/user/query-api"): Endpoint(self.query_api, signed=True, key_limit=10),
            ("GET", "/v5/account/info"): Endpoint(self.account_info, signed=True, key_limit=50),
            ("GET", "/v5/account/wallet-balance"): Endpoint(self.wallet_balance, signed=True, key_limit=50),
            ("GET", "/v5/order/realtime"): Endpoint(self.list_orders, signed=True, key_limit=50),
            ("POST", "/v5/order/create"): Endpoint(self.create, signed=True, scope="trade", key_limit=10),
            ("POST", "/v5/order/cancel"): Endpoint(
                self.cancel_by_request, signed=True, scope="trade", key_limit=10
            ),
        }

    # ---- market data ------------------------------------------------------------------------------

    def server_time(self, call: Call) -> Reply:
        now = self.now_ms()
        return self.ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})

    def category_markets(self, call: Call) -> tuple[str, list[Market]]:
        """Markets of the requested ``category``; inverse and option are valid but list nothing here."""
        category = call.params.get("category", "")
        if category not in ("spot", "linear", "inverse", "option"):
            raise Rejected(self.error(10001, "Illegal category"))
        if category in ("inverse", "option"):
            return category, []
        markets = [m for m in self.markets.values() if m.is_contract == (category == "linear")]
        if call.params.get("symbol"):
            markets = [m for m in markets if m.id == call.params["symbol"]]
        if call.params.get("baseCoin"):
            markets = [m for m in markets if m.base == call.params["baseCoin"]]
        return category, markets

    def instrument(self, m: Market) -> dict[str, Any]:
        common = {"symbol": m.id, "baseCoin": m.base, "quoteCoin": m.quote, "status": "Trading"}
        if not m.is_contract:
            return common | {
                "innovation": "0",
                "marginTrading": "utaOnly",
                "stTag": "0",
                "lotSizeFilter": {
                    "basePrecision": plain(m.step),
                    "quotePrecision": "0.0000001",
                    "minOrderQty": plain(m.min_qty),
                    "maxOrderQty": plain(m.max_qty),
                    "minOrderAmt": plain(m.min_notional),
                    "maxOrderAmt": "2000000",
                },
                "priceFilter": {"tickSize": plain(m.tick)},
                "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
            }
        return common | {
            "contractType": "LinearPerpetual",
            "settleCoin": m.settle,
            "launchTime": "1585526400000",
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(decimals(m.tick)),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": plain(m.tick), "maxPrice": "1999999.80", "tickSize": plain(m.tick)},
            "lotSizeFilter": {
                "maxOrderQty": plain(m.max_qty),
                "minOrderQty": plain(m.min_qty),
                "qtyStep": plain(m.step),
                "postOnlyMaxOrderQty": plain(m.max_qty),
                "maxMktOrderQty": plain(m.max_qty),
                "minNotionalValue": plain(m.min_notional),
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "copyTrading": "both",
            "upperFundingRate": "0.00375",
            "lowerFundingRate": "-0.00375",
            "isPreListing": False,
            "preListingInfo": None,
        }

    def instruments(self, call: Call) -> Reply:
        category, markets = self.category_markets(call)
        if call.params.get("status", "Trading") != "Trading":
            markets = []
        return self.ok(
            {"category": category, "list": [self.instrument(m) for m in markets], "nextPageCursor": ""}
        )

    def ticker(self, m: Market) -> dict[str, Any]:
        volume = Decimal(1000)
        ticker = {
            "symbol": m.id,
            "bid1Price": plain(m.bid),
            "bid1Size": "1",
            "ask1Price": plain(m.ask),
            "ask1Size": "1",
            "lastPrice": plain(m.price),
            "prevPrice24h": plain(m.open_price),
            "price24hPcnt": f"{m.change_pct / 100:.4f}",
            "highPrice24h": plain(m.high),
            "lowPrice24h": plain(m.low),
            "turnover24h": plain(volume * m.price),
            "volume24h": plain(volume),
        }
        if m.is_contract:
            ticker |= {
                "indexPrice": plain(m.price),
                "markPrice": plain(m.price),
                "prevPrice1h": plain(m.price),
                "openInterest": "1000",
                "openInterestValue": plain(volume * m.price),
                "fundingRate": "0.0001",
                "nextFundingTime": str(self.now_ms() + 3_600_000),
                "predictedDeliveryPrice": "",
                "basisRate": "",
                "deliveryFeeRate": "",
                "deliveryTime": "0",
            }
        return ticker

    def tickers(self, call: Call) -> Reply:
        category, markets = self.category_markets(call)
        if call.params.get("symbol") and not markets:
            return self.error(10001, "Not supported symbols")
        return self.ok({"category": category, "list": [self.ticker(m) for m in markets]})

    # ---- account ----------------------------------------------------------------------------------

    def query_api(self, call: Call) -> Reply:
        key = call.signed_key
        trade = key.trading_allowed
        expiry = self.key_expiry(key)
        wallet = ["AccountTransfer", "SubMemberTransfer"] + (["Withdraw"] if key.withdrawals_allowed else [])
        permissions: dict[str, list[str]] = {group: [] for group in PERMISSION_GROUPS} | {
            "ContractTrade": ["Order", "Position"] if trade else [],
            "Spot": ["SpotTrade"] if trade else [],
            "Wallet": wallet,
            "Options": ["OptionsTrade"] if trade else [],
            "Derivatives": ["DerivativesTrade"] if trade else [],
            "Exchange": ["ExchangeHistory"],
        }
        return self.ok(
            {
                "id": str(13_770_000 + list(self.keys).index(key.api_key)),
                "note": key.label,
                "apiKey": key.api_key,
                "readOnly": 0 if trade else 1,
                "secret": "",
                "permissions": permissions,
                "ips": key.whitelist or ["*"],
                "type": 1,
                "deadlineDay": math.ceil((expiry - self.now()) / timedelta(days=1)) if expiry else -2,
                "expiredAt": iso_z(expiry) if expiry else "",
                "createdAt": iso_z(key.created_at),
                "unified": 0,
                "uta": 1,
                "userID": int(key.uid),
                "inviterID": 0,
                "vipLevel": "No VIP",
                "mktMakerLevel": "0",
                "affiliateID": 0,
                "rsaPublicKey": "",
                "isMaster": True,
                "parentUid": "0",
                "kycLevel": "LEVEL_DEFAULT",
                "kycRegion": "",
            }
        )

    def account_info(self, call: Call) -> Reply:
        """UTA 2.0 (``unifiedMarginStatus`` 5); ccxt reads it in ``is_unified_enabled`` before balances."""
        return self.ok(
            {
                "unifiedMarginStatus": 5,
                "marginMode": "REGULAR_MARGIN",
                "isMasterTrader": False,
                "spotHedgingStatus": "OFF",
                "updatedTime": str(ms(call.signed_key.created_at)),
                "dcpStatus": "OFF",
                "timeWindow": 10,
                "smpGroup": 0,
            }
        )

    def wallet_balance(self, call: Call) -> Reply:
        """UNIFIED only. Spot orders hold coins in ``locked``, contract orders hold margin in
        ``totalOrderIM``; ``availableToWithdraw`` is empty as on real UTA accounts since 2025."""
        key = call.signed_key
        if call.params.get("accountType") != "UNIFIED":
            return self.error(10001, "accountType only support UNIFIED.")
        wanted = set(filter(None, call.params.get("coin", "").split(",")))
        order_margin: dict[str, Decimal] = {}
        for order in self.key_orders(key, contract=True):
            order_margin[order.locked_asset] = (
                order_margin.get(order.locked_asset, Decimal(0)) + order.locked_amount
            )
        coins, equity, available, initial = [], Decimal(0), Decimal(0), Decimal(0)
        for asset, h in key.wallets.get(self.main_wallet, {}).items():
            if wanted and asset not in wanted:
                continue
            order_im = order_margin.get(asset, Decimal(0))
            usd = self.usd_price(asset)
            equity += h.total * usd
            available += h.free * usd
            initial += order_im * usd
            coins.append(
                {
                    "coin": asset,
                    "equity": plain(h.total),
                    "usdValue": plain(h.total * usd),
                    "walletBalance": plain(h.total),
                    "availableToWithdraw": "",
                    "locked": plain(h.locked - order_im),
                    "totalOrderIM": plain(order_im),
                    "totalPositionIM": "0",
                    "totalPositionMM": "0",
                    "unrealisedPnl": "0",
                    "cumRealisedPnl": "0",
                    "borrowAmount": "0",
                    "accruedInterest": "0",
                    "bonus": "0",
                    "collateralSwitch": True,
                    "marginCollateral": True,
                    "spotHedgingQty": "0",
                }
            )
        account = {
            "accountType": "UNIFIED",
            "totalEquity": plain(equity),
            "totalWalletBalance": plain(equity),
            "totalMarginBalance": plain(equity),
            "totalAvailableBalance": plain(available),
            "totalInitialMargin": plain(initial),
            "totalMaintenanceMargin": "0",
            "totalPerpUPL": "0",
            "accountIMRate": "0",
            "accountMMRate": "0",
            "accountLTV": "0",
            "coin": coins,
        }
        return self.ok({"list": [account]})

    # ---- orders -----------------------------------------------------------------------------------

    def order_json(self, order: LocalOrder) -> dict[str, Any]:
        created = str(ms(order.created_at))
        return {
            "orderId": order.order_id,
            "orderLinkId": order.client_order_id,
            "blockTradeId": "",
            "symbol": order.market.id,
            "price": plain(order.price),
            "qty": plain(order.amount),
            "side": order.side.capitalize(),
            "isLeverage": "0",
            "positionIdx": 0,
            "orderStatus": "New",
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": "",
            "leavesQty": plain(order.amount),
            "leavesValue": plain(order.amount * order.price),
            "cumExecQty": "0",
            "cumExecValue": "0",
            "cumExecFee": "0",
            "timeInForce": "GTC",
            "orderType": "Limit",
            "stopOrderType": "",
            "triggerPrice": "",
            "takeProfit": "",
            "stopLoss": "",
            "triggerDirection": 0,
            "reduceOnly": False,
            "closeOnTrigger": False,
            "smpType": "None",
            "createdTime": created,
            "updatedTime": created,
            # Contract orders only ("Spot does not have this field",
            # https://bybit-exchange.github.io/docs/v5/order/open-order); ccxt's bybit.parse_order tells
            # a linear order from a spot one of the same id ("BTCUSDT") by this key alone.
            **({"tpslMode": ""} if order.market.is_contract else {}),
        }

    def list_orders(self, call: Call) -> Reply:
        category, markets = self.category_markets(call)
        if category == "linear" and not (
            call.params.get("symbol") or call.params.get("settleCoin") or call.params.get("baseCoin")
        ):
            return self.error(
                10001, "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin"
            )
        settle = call.params.get("settleCoin")
        orders = [
            order
            for order in self.key_orders(call.signed_key)
            if order.market in markets
            and (not settle or order.market.settle == settle)
            and call.params.get("orderId", order.order_id) == order.order_id
            and call.params.get("orderLinkId", order.client_order_id) == order.client_order_id
        ]
        # ``limit`` (default 20, max 50) per page; ``nextPageCursor`` continues, "" on the last page
        # (https://bybit-exchange.github.io/docs/v5/order/open-order). The cursor is an offset here.
        limit = min(int(call.params.get("limit") or 20), 50)
        start = int(call.params.get("cursor") or 0)
        page = orders[start : start + limit]
        cursor = str(start + limit) if start + limit < len(orders) else ""
        return self.ok(
            {"category": category, "list": [self.order_json(o) for o in page], "nextPageCursor": cursor}
        )

    def single_market(self, call: Call) -> Market:
        if not call.params.get("symbol"):
            raise Rejected(self.error(10001, "params error: symbol is required"))
        category, markets = self.category_markets(call)
        if not markets:
            raise Rejected(self.error(10001, f"params error: symbol invalid for category {category}"))
        return markets[0]

    def create(self, call: Call) -> Reply:
        market = self.single_market(call)
        side = parse_side(call.params.get("side"))
        if side is None:
            return self.error(10001, "params error: side invalid")
        if call.params.get("orderType") != "Limit":
            return self.error(10001, "params error: orderType invalid")
        try:
            price, amount = Decimal(call.params["price"]), Decimal(call.params["qty"])
        except (KeyError, InvalidOperation):
            return self.error(10001, "params error: price and qty are required")
        try:
            order = self.place_order(
                call.signed_key, market, side, price, amount, client_order_id=call.params.get("orderLinkId")
            )
        except InsufficientBalance:
            if market.is_contract:
                return self.error(110007, "ab not enough for new order")
            return self.error(170131, "Insufficient balance.")
        return self.ok({"orderId": order.order_id, "orderLinkId": order.client_order_id})

    def cancel_by_request(self, call: Call) -> Reply:
        market = self.single_market(call)
        order = self.find_order(
            call.signed_key, market, call.params.get("orderId"), call.params.get("orderLinkId")
        )
        if order is None:
            if market.is_contract:
                return self.error(110001, "order not exists or too late to cancel")
            return self.error(170213, "Order does not exist.")
        self.drop_order(order)
        return self.ok({"orderId": order.order_id, "orderLinkId": order.client_order_id})
