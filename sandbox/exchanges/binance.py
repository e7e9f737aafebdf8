"""Local Binance: spot ``/api/v3``, wallet ``/sapi/v1``, USDⓈ-M futures ``/fapi/v1|v2|v3``, COIN-M
futures ``/dapi/v1`` (one inverse perpetual, ``BTC/USD:BTC``: exchangeInfo, openOrders, order).

Signing (as ccxt's ``binance.sign``): ``X-MBX-APIKEY`` header; the query string (GET/DELETE) or form body
(POST) carries ``timestamp``, ``recvWindow`` and, last, ``signature`` = lowercase hex HMAC-SHA256 of
everything before it. Binance signs query string + body concatenated, so either placement verifies.

Weights are Binance's documented IP weights, counted per IP per minute in separate buckets for ``/api``
(``X-MBX-USED-WEIGHT-1M``, default limit 6000), ``/sapi`` (``X-SAPI-USED-IP-WEIGHT-1M``, 12000) and
``/fapi`` (``X-MBX-USED-WEIGHT-1M``, 2400). Going over answers 429 ``-1003`` with ``Retry-After``; more than
``ban_after_strikes`` 429s within one window earn a 418 IP ban for ``ban_seconds``. ``/dapi`` has its own
2400 bucket (COIN-M docs "General Info"); its weights are ccxt's (binance.py ``dapiPrivate``: openOrders
1, 5 without a symbol; order 1), as Binance's COIN-M pages were not at hand.

Key states: unknown/revoked, IP not whitelisted and missing permission all answer 401 ``-2015`` (Binance
does not tell them apart). ``expired`` models the 30-day rule for keys without an IP whitelist: spot
trading authority lapses, so spot orders get ``-2015`` while reads keep working and ``apiRestrictions``
shows ``enableSpotAndMarginTrading: false`` with a past ``tradingAuthorityExpirationTime``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    by_symbol,
    decimals,
    fixed,
    hmac_hex,
    html_reply,
    ms,
    parse_side,
    random_token,
)

TRADING_AUTHORITY_DAYS = 30
MAX_RECV_WINDOW_MS = 60_000
FAR_FUTURE_DELIVERY_MS = 4133404800000  # what Binance reports as the delivery date of perpetuals


def _ticker_weight(with_symbol: int, few: int, many: int) -> Callable[[Mapping[str, str]], int]:
    """Binance's ticker weight: one symbol or up to 20 listed in ``symbols``, up to 100, or more/none."""

    def weight(params: Mapping[str, str]) -> int:
        if params.get("symbol"):
            return with_symbol
        listed = params.get("symbols")
        if listed:
            count = listed.count(",") + 1
            return with_symbol if count <= 20 else few if count <= 100 else many
        return many

    return weight


class LocalBinance(LocalExchange):
    exchange_id = "binance"
    api_key_header = "X-MBX-APIKEY"
    pools: ClassVar = {
        "api": Pool(60, 6000, "X-MBX-USED-WEIGHT-1M"),
        "sapi": Pool(60, 12000, "X-SAPI-USED-IP-WEIGHT-1M"),
        "fapi": Pool(60, 2400, "X-MBX-USED-WEIGHT-1M"),
        "dapi": Pool(60, 2400, "X-MBX-USED-WEIGHT-1M"),
    }
    primary_pool = "api"
    main_wallet = "spot"
    # 100 USD per contract, as Binance's BTCUSD_PERP (ccxt binance.py parse_market reads contractSize).
    own_markets = (MarketSpec("BTC/USD:BTC", "65005", "0.1", "1", "1", "100000", "0", "100"),)
    ban_after_strikes = 3
    first_order_id = 28_457_000

    # ---- identity ---------------------------------------------------------------------------------

    def market_id(self, spec: MarketSpec) -> str:
        pair, _, settle = spec.symbol.partition(":")
        plain = pair.replace("/", "")
        return f"{plain}_PERP" if settle and pair.startswith(f"{settle}/") else plain

    def new_credentials(self) -> tuple[str, str, str | None]:
        return random_token(64), random_token(64), None

    def looks_like_key(self, api_key: str) -> bool:
        return len(api_key) == 64 and api_key.isalnum()

    def policy_expiry(self, key: LocalKey) -> datetime | None:
        """Spot & margin trading on a key without an IP whitelist lapses 30 days after it was enabled."""
        if key.whitelist is None and key.can_trade:
            return key.created_at + timedelta(days=TRADING_AUTHORITY_DAYS)
        return None

    def expiry_blocks(self, endpoint: Endpoint) -> bool:
        return endpoint.scope == "trade"

    def wallet_for(self, market: Market) -> str:
        return "futures" if market.is_contract else "spot"

    # ---- wire format ------------------------------------------------------------------------------

    def error(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Reply:
        return Reply(status, {"code": code, "msg": msg}, headers=headers or {}, error_code=str(code))

    def read_credentials(self, call: Call) -> Credentials | Reply:
        api_key = call.api_key
        if not api_key:
            return self.error(401, -2014, "API-key format invalid.")
        signature, unsigned = None, []
        for part in (call.raw_query, call.raw_body):
            pieces = part.split("&") if part else []
            for piece in pieces:
                if piece.startswith("signature="):
                    signature = piece.removeprefix("signature=")
            unsigned.append("&".join(p for p in pieces if not p.startswith("signature=")))
        if signature is None:
            return self.mandatory("signature")
        if "timestamp" not in call.params:
            return self.mandatory("timestamp")
        try:
            timestamp = int(call.params["timestamp"])
            recv_window = int(call.params.get("recvWindow", "5000"))
        except ValueError:
            return self.error(
                400,
                -1100,
                "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.",
            )
        if recv_window > MAX_RECV_WINDOW_MS:
            return self.error(400, -1131, "recvWindow must be less than 60000")
        return Credentials(api_key, signature, "".join(unsigned), timestamp, recv_window)

    def signature(self, secret: str, payload: str) -> str:
        return hmac_hex(secret, payload)

    def auth_error(self, failure: AuthFailure, call: Call) -> Reply:
        match failure:
            case AuthFailure.MALFORMED_KEY:
                return answer("binance/2014_api_key_format_invalid")
            case AuthFailure.CLOCK_SKEW:
                return answer("binance/1021_timestamp_for_this_request")
            case AuthFailure.BAD_SIGNATURE:
                return answer("binance/1022_signature_for_this_request")
            case AuthFailure.UNKNOWN_KEY if call.path.startswith("/sapi/"):
                # Deleted keys often answer -2008 on sapi (ccxt issues #16777, #11045).
                return answer("binance/2008_invalid_api_key_id")
            case _:
                return answer("binance/2015_invalid_api_key_ip", ip=call.ip)

    def fault_reply(self, fault: Fault, call: Call) -> Reply:
        match fault.kind:
            case "status_5xx" if fault.status is not None:
                return html_reply(fault.status)
            case "status_5xx":
                return self.error(
                    503, -1001, "Internal error; unable to process your request. Please try again."
                )
            case "maintenance":
                return self.error(503, 1, "System is under maintenance.")
            case "rate_limit":
                return self.rate_limit_reply(call, self.seconds_to_reset(self.call_pool(call)))
            case "key_ban":
                # A temporary ban as Binance shows it to signed calls: -2015 for valid keys
                # (ccxt binance.py handle_errors comment; ccxt issue #11045).
                return answer("binance/2015_during_ip_ban", ip=call.ip)
            case _:
                return self.ban_reply(call, self.ban_seconds)

    def call_pool(self, call: Call) -> str:
        return self.pool_of(call.endpoint) if call.endpoint else self.primary_pool

    def rate_limit_reply(self, call: Call, retry_after_s: float) -> Reply:
        return answer(
            "binance/1003_rate_limited_429",
            limit=self.limits[self.call_pool(call)],
            retry_after=max(1, round(retry_after_s)),
        )

    def ban_reply(self, call: Call, retry_after_s: float) -> Reply:
        return answer(
            "binance/1003_ip_banned_418",
            until_ms=self.now_ms() + int(retry_after_s * 1000),
            retry_after=max(1, round(retry_after_s)),
        )

    def mandatory(self, name: str) -> Reply:
        return self.error(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )

    # ---- routes -----------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        spot, futures, coinm, margin = "api", "fapi", "dapi", "margin"
        return {
            ("GET", "/api/v3/ping"): Endpoint(lambda call: Reply(json={}), pool="api"),
            ("GET", "/api/v3/time"): Endpoint(self.server_time, pool="api"),
            ("GET", "/api/v3/exchangeInfo"): Endpoint(self.spot_exchange_info, weight=20, pool="api"),
            ("GET", "/api/v3/ticker/24hr"): Endpoint(
                lambda call: self.tickers(call, spot), weight=_ticker_weight(2, 40, 80), pool="api"
            ),
            ("GET", "/api/v3/ticker/price"): Endpoint(
                lambda call: self.prices(call, spot), weight=by_symbol(2, 4), pool="api"
            ),
            ("GET", "/api/v3/account"): Endpoint(self.spot_account, signed=True, weight=20, pool="api"),
            ("GET", "/api/v3/openOrders"): Endpoint(
                lambda call: self.list_orders(call, spot), signed=True, weight=by_symbol(6, 80), pool="api"
            ),
            ("POST", "/api/v3/order"): Endpoint(
                lambda call: self.create(call, spot), signed=True, scope="trade", pool="api"
            ),
            ("DELETE", "/api/v3/order"): Endpoint(
                lambda call: self.cancel_by_request(call, spot), signed=True, scope="trade", pool="api"
            ),
            ("GET", "/api/v3/order"): Endpoint(
                lambda call: self.query_order(call, spot), signed=True, weight=4, pool="api"
            ),
            ("GET", "/sapi/v1/system/status"): Endpoint(self.system_status, pool="sapi"),
            ("GET", "/sapi/v1/account/status"): Endpoint(
                lambda call: Reply(json={"data": "Normal"}), signed=True, pool="sapi"
            ),
            ("GET", "/sapi/v1/account/apiRestrictions"): Endpoint(
                self.api_restrictions, signed=True, pool="sapi"
            ),
            # Cross margin: IP weight 10 to list or query, 1 to cancel (ccxt binance.py describe()
            # sapi costs 1 / 1 / 0.006667, at 0.1 per IP weight and 0.006667 per UID weight).
            ("GET", "/sapi/v1/margin/openOrders"): Endpoint(
                lambda call: self.list_orders(call, margin), signed=True, weight=10, pool="sapi"
            ),
            ("GET", "/sapi/v1/margin/order"): Endpoint(
                lambda call: self.query_order(call, margin), signed=True, weight=10, pool="sapi"
            ),
            ("DELETE", "/sapi/v1/margin/order"): Endpoint(
                lambda call: self.cancel_by_request(call, margin), signed=True, scope="trade", pool="sapi"
            ),
            ("GET", "/fapi/v1/ping"): Endpoint(lambda call: Reply(json={}), pool="fapi"),
            ("GET", "/fapi/v1/time"): Endpoint(self.server_time, pool="fapi"),
            ("GET", "/fapi/v1/exchangeInfo"): Endpoint(self.futures_exchange_info, pool="fapi"),
            ("GET", "/fapi/v1/ticker/24hr"): Endpoint(
                lambda call: self.tickers(call, futures), weight=by_symbol(1, 40), pool="fapi"
            ),
            ("GET", "/fapi/v1/ticker/price"): Endpoint(
                lambda call: self.prices(call, futures), weight=by_symbol(1, 2), pool="fapi"
            ),
            ("GET", "/fapi/v2/account"): Endpoint(
                lambda call: self.futures_account(call, v2=True), signed=True, weight=5, pool="fapi"
            ),
            ("GET", "/fapi/v3/account"): Endpoint(
                lambda call: self.futures_account(call, v2=False), signed=True, weight=5, pool="fapi"
            ),
            ("GET", "/fapi/v2/balance"): Endpoint(self.futures_balance, signed=True, weight=5, pool="fapi"),
            ("GET", "/fapi/v3/balance"): Endpoint(self.futures_balance, signed=True, weight=5, pool="fapi"),
            ("GET", "/fapi/v1/accountConfig"): Endpoint(
                self.futures_account_config, signed=True, weight=5, pool="fapi"
            ),
            ("GET", "/fapi/v1/openOrders"): Endpoint(
                lambda call: self.list_orders(call, futures),
                signed=True,
                weight=by_symbol(1, 40),
                pool="fapi",
            ),
            ("POST", "/fapi/v1/order"): Endpoint(
                lambda call: self.create(call, futures),
                signed=True,
                scope="futures_trade",
                weight=0,
                pool="fapi",
            ),
            **self.contract_order_routes(futures),
            ("GET", "/dapi/v1/time"): Endpoint(self.server_time, pool="dapi"),
            ("GET", "/dapi/v1/exchangeInfo"): Endpoint(self.coin_exchange_info, pool="dapi"),
            ("GET", "/dapi/v1/openOrders"): Endpoint(
                lambda call: self.list_orders(call, coinm), signed=True, weight=by_symbol(1, 5), pool="dapi"
            ),
            **self.contract_order_routes(coinm),
        }

    def contract_order_routes(self, pool: str) -> dict[tuple[str, str], Endpoint]:
        """Cancel and query one order on a futures API (``fapi``/``dapi``), weight 1 each."""
        return {
            ("DELETE", f"/{pool}/v1/order"): Endpoint(
                lambda call: self.cancel_by_request(call, pool), signed=True, scope="futures_trade", pool=pool
            ),
            ("GET", f"/{pool}/v1/order"): Endpoint(
                lambda call: self.query_order(call, pool), signed=True, weight=1, pool=pool
            ),
        }

    # ---- public -----------------------------------------------------------------------------------

    def server_time(self, call: Call) -> Reply:
        return Reply(json={"serverTime": self.now_ms()})

    def system_status(self, call: Call) -> Reply:
        under_maintenance = any(fault.kind == "maintenance" for fault in self.faults)
        return Reply(
            json={"status": 1, "msg": "system maintenance"}
            if under_maintenance
            else {"status": 0, "msg": "normal"}
        )

    def exchange_info_shell(self, pool: str, symbols: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limits[pool],
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    @staticmethod
    def api_of(market: Market) -> str:
        """The API that lists a market: ``api`` spot, ``fapi`` USDⓈ-M, ``dapi`` COIN-M (inverse)."""
        if not market.is_contract:
            return "api"
        return "dapi" if market.is_inverse else "fapi"

    def venue_of_order(self, order: LocalOrder) -> str:
        """Where an order is listed and cancelled: its market's API, or ``margin`` (``/sapi/v1/margin``)
        for a spot-market order of the margin wallet."""
        return "margin" if order.wallet == "margin" else self.api_of(order.market)

    def venue_markets(self, pool: str) -> list[Market]:
        return [market for market in self.markets.values() if self.api_of(market) == pool]

    def spot_exchange_info(self, call: Call) -> Reply:
        symbols = [
            {
                "symbol": m.id,
                "status": "TRADING",
                "baseAsset": m.base,
                "baseAssetPrecision": 8,
                "quoteAsset": m.quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True,
                "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": True,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": fixed(m.tick),
                        "maxPrice": "1000000.00000000",
                        "tickSize": fixed(m.tick),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": fixed(m.min_qty),
                        "maxQty": fixed(m.max_qty),
                        "stepSize": fixed(m.step),
                    },
                    {"filterType": "ICEBERG_PARTS", "limit": 10},
                    {
                        "filterType": "MARKET_LOT_SIZE",
                        "minQty": "0.00000000",
                        "maxQty": fixed(m.max_qty),
                        "stepSize": "0.00000000",
                    },
                    {
                        "filterType": "NOTIONAL",
                        "minNotional": fixed(m.min_notional),
                        "applyMinToMarket": True,
                        "maxNotional": "9000000.00000000",
                        "applyMaxToMarket": False,
                        "avgPriceMins": 5,
                    },
                    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
                ],
                "permissions": [],
                "permissionSets": [["SPOT", "MARGIN"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
            for m in self.venue_markets("api")
        ]
        return Reply(json=self.exchange_info_shell("api", symbols))

    def contract_symbol(self, m: Market) -> dict[str, Any]:
        """One ``symbols`` entry of a futures exchangeInfo (USDⓈ-M shape; COIN-M adds to it)."""
        return {
            "symbol": m.id,
            "pair": m.id,
            "contractType": "PERPETUAL",
            "deliveryDate": FAR_FUTURE_DELIVERY_MS,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": m.base,
            "quoteAsset": m.quote,
            "marginAsset": m.settle,
            "pricePrecision": decimals(m.tick),
            "quantityPrecision": decimals(m.step),
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": str(m.tick),
                    "maxPrice": "4529764",
                    "tickSize": str(m.tick),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": str(m.min_qty),
                    "maxQty": str(m.max_qty),
                    "stepSize": str(m.step),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": str(m.min_qty),
                    "maxQty": str(m.max_qty),
                    "stepSize": str(m.step),
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": str(m.min_notional)},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.0500",
                    "multiplierDown": "0.9500",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def futures_exchange_info(self, call: Call) -> Reply:
        symbols = [self.contract_symbol(m) for m in self.venue_markets("fapi")]
        shell = self.exchange_info_shell("fapi", symbols)
        shell["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
        return Reply(json=shell)

    def coin_exchange_info(self, call: Call) -> Reply:
        """COIN-M markets: the USDⓈ-M shape plus what the COIN-M API adds (``pair`` without the
        ``_PERP`` suffix, ``contractStatus``, ``contractSize`` in USD, ``equalQtyPrecision``)."""
        symbols = [
            self.contract_symbol(m)
            | {
                "pair": m.id.removesuffix("_PERP"),
                "contractStatus": "TRADING",
                "contractSize": int(m.contract_size),
                "equalQtyPrecision": 4,
            }
            for m in self.venue_markets("dapi")
        ]
        return Reply(json=self.exchange_info_shell("dapi", symbols))

    def selected_markets(self, call: Call, pool: str) -> list[Market] | Market:
        """The market named by ``symbol``, the ones listed in ``symbols`` (a JSON array), or all."""
        if "symbol" in call.params:
            return self.require_market(call.params["symbol"], pool)
        if "symbols" in call.params:
            ids = call.params["symbols"].strip("[]").replace('"', "").split(",")
            return [self.require_market(market_id, pool) for market_id in ids]
        return self.venue_markets(pool)

    def require_market(self, market_id: str, pool: str) -> Market:
        markets_of = "api" if pool == "margin" else pool  # margin trades the spot markets
        market = self.market_by_id(market_id, contract=markets_of != "api")
        if market is None or self.api_of(market) != markets_of:
            raise Rejected(self.error(400, -1121, "Invalid symbol."))
        return market

    def ticker(self, m: Market, pool: str) -> dict[str, Any]:
        now = self.now_ms()
        volume = Decimal(1000)
        ticker = {
            "symbol": m.id,
            "priceChange": fixed(m.price - m.open_price),
            "priceChangePercent": f"{m.change_pct:.3f}",
            "weightedAvgPrice": fixed((m.high + m.low) / 2),
            "lastPrice": fixed(m.price),
            "lastQty": fixed(m.step),
            "openPrice": fixed(m.open_price),
            "highPrice": fixed(m.high),
            "lowPrice": fixed(m.low),
            "volume": fixed(volume),
            "quoteVolume": fixed(volume * m.price),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }
        if pool == "api":
            ticker |= {
                "prevClosePrice": fixed(m.open_price),
                "bidPrice": fixed(m.bid),
                "bidQty": "1.00000000",
                "askPrice": fixed(m.ask),
                "askQty": "1.00000000",
            }
        return ticker

    def tickers(self, call: Call, pool: str) -> Reply:
        selected = self.selected_markets(call, pool)
        if isinstance(selected, Market):
            return Reply(json=self.ticker(selected, pool))
        return Reply(json=[self.ticker(m, pool) for m in selected])

    def prices(self, call: Call, pool: str) -> Reply:
        def entry(m: Market) -> dict[str, Any]:
            return {"symbol": m.id, "price": fixed(m.price)} | (
                {"time": self.now_ms()} if pool != "api" else {}
            )

        selected = self.selected_markets(call, pool)
        return Reply(json=entry(selected) if isinstance(selected, Market) else [entry(m) for m in selected])

    # ---- account ----------------------------------------------------------------------------------

    def api_restrictions(self, call: Call) -> Reply:
        key = call.signed_key
        unrestricted = key.whitelist is None
        expiry = self.key_expiry(key)
        body: dict[str, Any] = {
            "ipRestrict": not unrestricted,
            "createTime": ms(key.created_at),
            "enableReading": True,
            "enableWithdrawals": key.withdrawals_allowed,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableFutures": key.trading_allowed,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": False,
            "enableSpotAndMarginTrading": key.trading_allowed and not self.is_expired(key),
            "enablePortfolioMarginTrading": False,
        }
        if unrestricted and key.trading_allowed and expiry is not None:
            body["tradingAuthorityExpirationTime"] = ms(expiry)
        return Reply(json=body)

    def spot_account(self, call: Call) -> Reply:
        key = call.signed_key
        omit_zero = call.params.get("omitZeroBalances") == "true"
        balances = [
            {"asset": asset, "free": fixed(h.free), "locked": fixed(h.locked)}
            for asset, h in key.wallets.get("spot", {}).items()
            if not (omit_zero and h.total == 0)
        ]
        return Reply(
            json={
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": "0.00100000",
                    "taker": "0.00100000",
                    "buyer": "0.00000000",
                    "seller": "0.00000000",
                },
                "canTrade": key.trading_allowed and not self.is_expired(key),
                "canWithdraw": key.withdrawals_allowed,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": self.now_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": int(key.uid),
            }
        )

    def futures_assets(self, key: LocalKey) -> list[dict[str, Any]]:
        updated = ms(key.created_at)
        return [
            {
                "asset": asset,
                "walletBalance": fixed(h.total),
                "unrealizedProfit": "0.00000000",
                "marginBalance": fixed(h.total),
                "maintMargin": "0.00000000",
                "initialMargin": fixed(h.locked),
                "positionInitialMargin": "0.00000000",
                "openOrderInitialMargin": fixed(h.locked),
                "crossWalletBalance": fixed(h.total),
                "crossUnPnl": "0.00000000",
                "availableBalance": fixed(h.free),
                "maxWithdrawAmount": fixed(h.free),
                "updateTime": updated,
            }
            for asset, h in key.wallets.get("futures", {}).items()
        ]

    def futures_account(self, call: Call, *, v2: bool) -> Reply:
        key = call.signed_key
        assets = self.futures_assets(key)
        total = sum((Decimal(a["walletBalance"]) for a in assets), Decimal(0))
        locked = sum((Decimal(a["initialMargin"]) for a in assets), Decimal(0))
        body: dict[str, Any] = {
            "totalInitialMargin": fixed(locked),
            "totalMaintMargin": "0.00000000",
            "totalWalletBalance": fixed(total),
            "totalUnrealizedProfit": "0.00000000",
            "totalMarginBalance": fixed(total),
            "totalPositionInitialMargin": "0.00000000",
            "totalOpenOrderInitialMargin": fixed(locked),
            "totalCrossWalletBalance": fixed(total),
            "totalCrossUnPnl": "0.00000000",
            "availableBalance": fixed(total - locked),
            "maxWithdrawAmount": fixed(total - locked),
            "assets": assets,
            "positions": [],
        }
        if v2:
            body |= {
                "feeTier": 0,
                "canTrade": key.trading_allowed,
                "canDeposit": True,
                "canWithdraw": key.withdrawals_allowed,
                "updateTime": 0,
                "multiAssetsMargin": False,
            }
        return Reply(json=body)

    def futures_balance(self, call: Call) -> Reply:
        key = call.signed_key
        return Reply(
            json=[
                {
                    "accountAlias": "SgsR",
                    "asset": a["asset"],
                    "balance": a["walletBalance"],
                    "crossWalletBalance": a["crossWalletBalance"],
                    "crossUnPnl": "0.00000000",
                    "availableBalance": a["availableBalance"],
                    "maxWithdrawAmount": a["maxWithdrawAmount"],
                    "marginAvailable": True,
                    "updateTime": a["updateTime"],
                }
                for a in self.futures_assets(key)
            ]
        )

    def futures_account_config(self, call: Call) -> Reply:
        key = call.signed_key
        return Reply(
            json={
                "feeTier": 0,
                "canTrade": key.trading_allowed,
                "canDeposit": True,
                "canWithdraw": key.withdrawals_allowed,
                "dualSidePosition": False,
                "updateTime": 0,
                "multiAssetsMargin": False,
                "tradeGroupId": -1,
            }
        )

    # ---- orders -----------------------------------------------------------------------------------

    def order_json(self, order: LocalOrder, *, status: str = "NEW") -> dict[str, Any]:
        created = ms(order.created_at)
        common = {
            "symbol": order.market.id,
            "orderId": int(order.order_id),
            "clientOrderId": order.client_order_id,
            "price": fixed(order.price),
            "origQty": fixed(order.amount),
            "executedQty": "0.00000000",
            "status": status,
            "timeInForce": "GTC",
            "type": "LIMIT",
            "side": order.side.upper(),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if order.market.is_inverse:  # COIN-M names the pair and counts cost in the coin
            common |= {"pair": order.market.id.removesuffix("_PERP"), "cumBase": "0"}
        if order.market.is_contract:
            return common | {
                "avgPrice": "0.00",
                "cumQuote": "0.00000000",
                "cumQty": "0.00000000",
                "reduceOnly": False,
                "closePosition": False,
                "positionSide": "BOTH",
                "stopPrice": "0",
                "workingType": "CONTRACT_PRICE",
                "priceProtect": False,
                "origType": "LIMIT",
                "priceMatch": "NONE",
                "goodTillDate": 0,
                "time": created,
                "updateTime": created,
            }
        if order.wallet == "margin":  # margin orders: the spot shape plus isIsolated (cross margin here)
            common |= {"isIsolated": False}
        return common | {
            "orderListId": -1,
            "cummulativeQuoteQty": "0.00000000",
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": created,
            "updateTime": created,
            "isWorking": True,
            "workingTime": created,
            "origQuoteOrderQty": "0.00000000",
        }

    def list_orders(self, call: Call, pool: str) -> Reply:
        key = call.signed_key
        market = self.require_market(call.params["symbol"], pool) if call.params.get("symbol") else None
        orders = [
            o
            for o in self.key_orders(key)
            if self.venue_of_order(o) == pool and (market is None or o.market is market)
        ]
        return Reply(json=[self.order_json(order) for order in orders])

    def decimal_param(self, call: Call, name: str) -> Decimal:
        value = call.params.get(name)
        if not value:
            raise Rejected(self.mandatory(name))
        try:
            return Decimal(value)
        except InvalidOperation:
            raise Rejected(
                self.error(400, -1100, f"Illegal characters found in parameter '{name}'.")
            ) from None

    def create(self, call: Call, pool: str) -> Reply:
        key = call.signed_key
        if not call.params.get("symbol"):
            return self.mandatory("symbol")
        market = self.require_market(call.params["symbol"], pool)
        side = parse_side(call.params.get("side"))
        if side is None:
            return self.mandatory("side")
        if call.params.get("type") != "LIMIT":
            return self.error(400, -1116, "Invalid orderType.")
        price, amount = self.decimal_param(call, "price"), self.decimal_param(call, "quantity")
        try:
            order = self.place_order(
                key, market, side, price, amount, client_order_id=call.params.get("newClientOrderId")
            )
        except InsufficientBalance:
            if pool != "api":
                return self.error(400, -2019, "Margin is insufficient.")
            return self.error(400, -2010, "Account has insufficient balance for requested action.")
        body = self.order_json(order)
        if pool == "api":
            body |= {"transactTime": ms(order.created_at), "fills": []}
        return Reply(json=body)

    def query_order(self, call: Call, pool: str) -> Reply:
        """``GET /api/v3/order`` (weight 4) and ``GET /fapi/v1/order`` (weight 1): open, ``FILLED``
        or ``CANCELED`` orders of the key; an order it never had gets -2013 "Order does not exist."
        (Binance spot API "Query order"; USDⓈ-M docs, Trade, "Query Order"). A filled order reports
        its full quantity executed."""
        key = call.signed_key
        if not call.params.get("symbol"):
            return self.mandatory("symbol")
        market = self.require_market(call.params["symbol"], pool)
        order_id, client_id = call.params.get("orderId"), call.params.get("origClientOrderId")
        order = self.find_order(key, market, order_id, client_id)
        if order is not None and self.venue_of_order(order) == pool:
            return Reply(json=self.order_json(order))
        for done, how in self.finished.values():
            if (
                done.api_key == key.api_key
                and done.market is market
                and self.venue_of_order(done) == pool
                and (
                    (order_id and done.order_id == order_id)
                    or (client_id and done.client_order_id == client_id)
                )
            ):
                body = self.order_json(done, status="FILLED" if how == "filled" else "CANCELED")
                if how == "filled":
                    body["executedQty"] = fixed(done.amount)
                return Reply(json=body)
        return answer("binance/2013_order_does_not_exist")

    def cancel_by_request(self, call: Call, pool: str) -> Reply:
        key = call.signed_key
        if not call.params.get("symbol"):
            return self.mandatory("symbol")
        market = self.require_market(call.params["symbol"], pool)
        order_id, client_id = call.params.get("orderId"), call.params.get("origClientOrderId")
        if not order_id and not client_id:
            return self.error(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        order = self.find_order(key, market, order_id, client_id)
        if order is None or self.venue_of_order(order) != pool:
            # Recorded answers: COIN-M's own case; spot's for spot and margin (the same table).
            case = "2011_unknown_order_sent_dapi" if pool == "dapi" else "2011_unknown_order_sent"
            return answer(f"binance/{case}")
        self.drop_order(order)
        body = self.order_json(order, status="CANCELED")
        if pool in ("api", "margin"):
            body |= {"origClientOrderId": order.client_order_id, "transactTime": self.now_ms()}
        return Reply(json=body)
