"""Local OKX v5 (``/api/v5/...``), trading account in single-currency margin mode.

Signing (as ccxt's ``okx.sign``): headers ``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE`` (ccxt's
``password``), ``OK-ACCESS-TIMESTAMP`` (ISO-8601 UTC with milliseconds) and ``OK-ACCESS-SIGN`` = base64
HMAC-SHA256 of ``timestamp + METHOD + requestPath(?query) + body``. Requests more than 30 s away from
server time are refused.

Authentication errors are HTTP 401 with a string ``code``: 50111 malformed key, 50119 key does not exist
(revoked, or deleted by the lifetime policy), 50105 wrong passphrase, 50102 clock skew, 50113 bad signature,
50110 IP not whitelisted, 50120 key lacks the permission (wording approximate). A key sent with
``x-simulated-trading: 1`` gets 50101 (these are live keys). Busy is 503 50013, maintenance 503 50001,
rate limits 429 50011 (per key and endpoint, 2 s windows). The ``ban`` fault is a WAF 403 page.

Lifetime policy: a key with trade or withdraw permission and no bound IP is deleted after 14 days without
authenticated use; from then on it answers 50119 like a revoked key. ``account/config`` has no expiry
field, only ``perm`` and ``ip``.
"""

from __future__ import annotations

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
    hmac_base64,
    html_reply,
    ms,
    parse_side,
    plain,
    random_token,
)

IDLE_DELETION_DAYS = 14
TIMESTAMP_WINDOW_MS = 30_000
INSTRUMENT_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")


class LocalOkx(LocalExchange):
    exchange_id = "okx"
    api_key_header = "OK-ACCESS-KEY"
    pools: ClassVar = {"ip": Pool(2, None)}
    primary_pool = "ip"
    main_wallet = "trading"
    uses_passphrase = True
    key_window_s = 2.0
    future_tolerance_ms = TIMESTAMP_WINDOW_MS
    first_order_id = 612_345_678_901_234_567
    market_overrides: ClassVar = {
        "BTC/USDT:USDT": {"contract_size": "0.01", "step": "0.01", "min_qty": "0.01", "max_qty": "10000"},
        "ETH/USDT:USDT": {"contract_size": "0.1", "step": "0.01", "min_qty": "0.01", "max_qty": "10000"},
    }

    # ---- identity ---------------------------------------------------------------------------------

    def market_id(self, spec: MarketSpec) -> str:
        pair, _, settle = spec.symbol.partition(":")
        return pair.replace("/", "-") + ("-SWAP" if settle else "")

    def new_credentials(self) -> tuple[str, str, str | None]:
        return str(uuid.uuid4()), random_token(32, "0123456789ABCDEF"), random_token(12) + "!"

    def looks_like_key(self, api_key: str) -> bool:
        try:
            uuid.UUID(api_key)
        except ValueError:
            return False
        return True

    def policy_expiry(self, key: LocalKey) -> datetime | None:
        """Unbound keys that can trade or withdraw are deleted after 14 idle days."""
        if key.whitelist is None and (key.trading_allowed or key.withdrawals_allowed):
            return key.last_used_at + timedelta(days=IDLE_DELETION_DAYS)
        return None

    def key_is_gone(self, key: LocalKey) -> bool:
        return key.state == "revoked" or self.is_expired(key)

    # ---- wire format ------------------------------------------------------------------------------

    def ok(self, data: list[Any]) -> Reply:
        return Reply(json={"code": "0", "msg": "", "data": data})

    def error(self, status: int, code: str, msg: str) -> Reply:
        return Reply(status, {"msg": msg, "code": code, "data": []}, error_code=code)

    def read_credentials(self, call: Call) -> Credentials | Reply:
        headers = call.headers
        for header, code in (
            ("OK-ACCESS-KEY", "50103"),
            ("OK-ACCESS-PASSPHRASE", "50104"),
            ("OK-ACCESS-SIGN", "50106"),
            ("OK-ACCESS-TIMESTAMP", "50107"),
        ):
            if not headers.get(header):
                return self.error(401, code, f"Request header {header} can not be empty.")
        if headers.get("x-simulated-trading") == "1":
            return self.error(401, "50101", "APIKey does not match current environment.")
        stamp = headers["OK-ACCESS-TIMESTAMP"]
        try:
            timestamp = ms(datetime.fromisoformat(stamp))
        except ValueError:
            return self.error(401, "50112", "Invalid OK-ACCESS-TIMESTAMP")
        request_path = call.path + (f"?{call.raw_query}" if call.raw_query else "")
        return Credentials(
            api_key=headers["OK-ACCESS-KEY"],
            signature=headers["OK-ACCESS-SIGN"],
            payload=f"{stamp}{call.method}{request_path}{call.raw_body}",
            timestamp_ms=timestamp,
            recv_window_ms=TIMESTAMP_WINDOW_MS,
            passphrase=headers["OK-ACCESS-PASSPHRASE"],
        )

    def signature(self, secret: str, payload: str) -> str:
        return hmac_base64(secret, payload)

    def auth_error(self, failure: AuthFailure, call: Call) -> Reply:
        match failure:
            case AuthFailure.MALFORMED_KEY:
                return answer("okx/50111_invalid_ok_access_key")
            case AuthFailure.BAD_PASSPHRASE:
                return answer("okx/50105_request_header_ok_access")
            case AuthFailure.CLOCK_SKEW:
                return answer("okx/50102_timestamp_request_expired")
            case AuthFailure.BAD_SIGNATURE:
                return answer("okx/50113_invalid_sign")
            case AuthFailure.IP_NOT_ALLOWED:
                return answer("okx/50110_your_ip_203_0", ip=call.ip)
            case AuthFailure.NO_PERMISSION:
                return answer("okx/50120_api_key_doesn_have")
            case _:
                return answer("okx/50119_api_key_doesn_exist")

    def fault_reply(self, fault: Fault, call: Call) -> Reply:
        match fault.kind:
            case "status_5xx" if fault.status is not None:
                return html_reply(fault.status)
            case "status_5xx":
                return self.error(503, "50013", "Systems are busy. Please try again later.")
            case "maintenance":
                return answer("okx/50001_service_temporarily_unavailable_try")
            case "rate_limit":
                return self.rate_limit_reply(call, self.key_window_s)
            case _:
                return self.ban_reply(call, self.ban_seconds)

    def rate_limit_reply(self, call: Call, retry_after_s: float) -> Reply:
        return answer("okx/50011_too_many_requests")

    def ban_reply(self, call: Call, retry_after_s: float) -> Reply:
        return answer("okx/403_waf_html")

    # ---- routes -----------------------------------------------------------------------------------

    def routes(self) -> dict[tuple[str, str], Endpoint]:
        return {
            ("GET", "/api/v5/public/time"): Endpoint(lambda call: self.ok([{"ts": str(self.now_ms())}])),
            ("GET", "/api/v5/public/instruments"): Endpoint(self.instruments),
            ("GET", "/api/v5/market/ticker"): Endpoint(self.ticker),
            ("GET", "/api/v5/market/tickers"): Endpoint(self.tickers),
            ("GET", "/api/v5/account/config"): Endpoint(self.account_config, signed=True, key_limit=5),
            ("GET", "/api/v5/account/balance"): Endpoint(self.balance, signed=True, key_limit=10),
            ("GET", "/api/v5/trade/orders-pending"): Endpoint(self.list_orders, signed=True, key_limit=60),
            ("POST", "/api/v5/trade/order"): Endpoint(self.create, signed=True, scope="trade", key_limit=60),
            ("POST", "/api/v5/trade/batch-orders"): Endpoint(
                self.create, signed=True, scope="trade", key_limit=300
            ),
            ("POST", "/api/v5/trade/cancel-order"): Endpoint(
                self.cancel_by_request, signed=True, scope="trade", key_limit=60
            ),
        }

    # ---- market data ------------------------------------------------------------------------------

    def typed_markets(self, call: Call) -> tuple[str, list[Market]]:
        inst_type = call.params.get("instType", "")
        if not inst_type:
            raise Rejected(self.error(400, "50014", "Parameter instType can not be empty."))
        if inst_type not in INSTRUMENT_TYPES:
            raise Rejected(self.error(400, "51000", "Parameter instType error"))
        if inst_type not in ("SPOT", "SWAP"):
            return inst_type, []
        markets = [m for m in self.markets.values() if m.is_contract == (inst_type == "SWAP")]
        if call.params.get("instId"):
            markets = [m for m in markets if m.id == call.params["instId"]]
        family = call.params.get("instFamily") or call.params.get("uly")
        if family:
            markets = [m for m in markets if m.id.startswith(family)]
        return inst_type, markets

    def instrument(self, m: Market) -> dict[str, Any]:
        common = {
            "instId": m.id,
            "tickSz": plain(m.tick),
            "lotSz": plain(m.step),
            "minSz": plain(m.min_qty),
            "maxLmtSz": plain(m.max_qty),
            "maxLmtAmt": "20000000",
            "maxMktAmt": "1000000",
            "state": "live",
            "ruleType": "normal",
            "listTime": "1606468572000",
            "alias": "",
            "expTime": "",
            "optType": "",
            "stk": "",
        }
        if not m.is_contract:
            return common | {
                "instType": "SPOT",
                "baseCcy": m.base,
                "quoteCcy": m.quote,
                "settleCcy": "",
                "ctVal": "",
                "ctMult": "",
                "ctValCcy": "",
                "ctType": "",
                "uly": "",
                "instFamily": "",
                "lever": "10",
                "category": "1",
            }
        family = f"{m.base}-{m.quote}"
        return common | {
            "instType": "SWAP",
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": m.settle,
            "ctVal": plain(m.contract_size),
            "ctMult": "1",
            "ctValCcy": m.base,
            "ctType": "linear",
            "uly": family,
            "instFamily": family,
            "lever": "100",
            "category": "1",
        }

    def instruments(self, call: Call) -> Reply:
        _, markets = self.typed_markets(call)
        return self.ok([self.instrument(m) for m in markets])

    def ticker_json(self, m: Market) -> dict[str, Any]:
        volume = Decimal(1000)
        return {
            "instType": "SWAP" if m.is_contract else "SPOT",
            "instId": m.id,
            "last": plain(m.price),
            "lastSz": plain(m.step),
            "askPx": plain(m.ask),
            "askSz": "1",
            "bidPx": plain(m.bid),
            "bidSz": "1",
            "open24h": plain(m.open_price),
            "high24h": plain(m.high),
            "low24h": plain(m.low),
            "volCcy24h": plain(volume * m.price),
            "vol24h": plain(volume),
            "sodUtc0": plain(m.open_price),
            "sodUtc8": plain(m.open_price),
            "ts": str(self.now_ms()),
        }

    def require_market(self, inst_id: str) -> Market:
        market = self.market_by_id(inst_id, contract=inst_id.endswith("-SWAP"))
        if market is None:
            raise Rejected(self.error(200, "51001", "Instrument ID does not exist."))
        return market

    def ticker(self, call: Call) -> Reply:
        return self.ok([self.ticker_json(self.require_market(call.params.get("instId", "")))])

    def tickers(self, call: Call) -> Reply:
        _, markets = self.typed_markets(call)
        return self.ok([self.ticker_json(m) for m in markets])

    # ---- account ----------------------------------------------------------------------------------

    def account_config(self, call: Call) -> Reply:
        key = call.signed_key
        perm = ["read_only"] + (["trade"] if key.trading_allowed else [])
        perm += ["withdraw"] if key.withdrawals_allowed else []
        return self.ok(
            [
                {
                    "uid": key.uid,
                    "mainUid": key.uid,
                    "acctLv": "2",
                    "acctStpMode": "cancel_maker",
                    "autoLoan": False,
                    "ctIsoMode": "automatic",
                    "mgnIsoMode": "automatic",
                    "enableSpotBorrow": False,
                    "spotBorrowAutoRepay": False,
                    "greeksType": "PA",
                    "posMode": "net_mode",
                    "level": "Lv1",
                    "levelTmp": "",
                    "liquidationGear": "-1",
                    "kycLv": "2",
                    "label": key.label,
                    "ip": ",".join(key.whitelist or []),
                    "perm": ",".join(perm),
                    "type": "0",
                    "opAuth": "0",
                    "roleType": "0",
                    "spotRoleType": "0",
                    "traderInsts": [],
                    "spotTraderInsts": [],
                    "spotOffsetType": "",
                    "settleCcy": "USDT",
                    "settleCcyList": ["USD", "USDC", "USDG"],
                }
            ]
        )

    def balance(self, call: Call) -> Reply:
        """Futures mode (``acctLv`` 2): ``availEq`` is filled; ``frozenBal``/``ordFrozen`` are order locks."""
        key = call.signed_key
        wanted = set(filter(None, call.params.get("ccy", "").split(",")))
        updated = str(self.now_ms())
        details, total_usd = [], Decimal(0)
        for asset, h in key.wallets.get(self.main_wallet, {}).items():
            if wanted and asset not in wanted:
                continue
            usd = h.total * self.usd_price(asset)
            total_usd += usd
            details.append(
                {
                    "ccy": asset,
                    "eq": plain(h.total),
                    "cashBal": plain(h.total),
                    "availBal": plain(h.free),
                    "availEq": plain(h.free),
                    "frozenBal": plain(h.locked),
                    "ordFrozen": plain(h.locked),
                    "disEq": plain(usd),
                    "eqUsd": plain(usd),
                    "upl": "0",
                    "isoEq": "0",
                    "fixedBal": "0",
                    "liab": "",
                    "crossLiab": "",
                    "interest": "",
                    "maxLoan": "",
                    "mgnRatio": "",
                    "notionalLever": "",
                    "stgyEq": "0",
                    "twap": "0",
                    "uTime": updated,
                }
            )
        account = {
            "adjEq": "",
            "details": details,
            "imr": "",
            "isoEq": "0",
            "mgnRatio": "",
            "mmr": "",
            "notionalUsd": "",
            "ordFroz": "",
            "totalEq": plain(total_usd),
            "uTime": updated,
            "upl": "0",
        }
        return self.ok([account])

    # ---- orders -----------------------------------------------------------------------------------

    def order_json(self, order: LocalOrder) -> dict[str, Any]:
        created = str(ms(order.created_at))
        contract = order.market.is_contract
        return {
            "instType": "SWAP" if contract else "SPOT",
            "instId": order.market.id,
            "ordId": order.order_id,
            "clOrdId": order.client_order_id,
            "tag": "",
            "px": plain(order.price),
            "sz": plain(order.amount),
            "side": order.side,
            "posSide": "net",
            "ordType": "limit",
            "state": "live",
            "tdMode": "cross" if contract else "cash",
            "accFillSz": "0",
            "fillPx": "",
            "fillSz": "0",
            "avgPx": "",
            "fee": "0",
            "feeCcy": order.market.settle if contract else order.market.quote,
            "lever": "10" if contract else "",
            "reduceOnly": "false",
            "category": "normal",
            "stpMode": "cancel_maker",
            "cTime": created,
            "uTime": created,
        }

    def list_orders(self, call: Call) -> Reply:
        inst_type, inst_id = call.params.get("instType"), call.params.get("instId")
        orders = [
            order
            for order in self.key_orders(call.signed_key)
            if (not inst_id or order.market.id == inst_id)
            and (not inst_type or (inst_type == "SWAP") == order.market.is_contract)
        ]
        # Newest first, ``limit`` (default and max 100) per page, ``after`` = older than that ordId
        # (https://www.okx.com/docs-v5/en/#order-book-trading-trade-get-order-list).
        orders.sort(key=lambda order: int(order.order_id), reverse=True)
        after = call.params.get("after")
        if after:
            orders = [order for order in orders if int(order.order_id) < int(after)]
        limit = min(int(call.params.get("limit") or 100), 100)
        return self.ok([self.order_json(order) for order in orders[:limit]])

    def batch_result(self, results: list[dict[str, Any]]) -> Reply:
        """OKX's per-item envelope: ``code`` 0 all done, 1 all failed, 2 partly; item codes in ``sCode``."""
        failed = [item for item in results if item["sCode"] != "0"]
        now = str(self.now_ms())
        if not failed:
            code, msg = "0", ""
        elif len(failed) == len(results):
            code, msg = "1", "All operations failed"
        else:
            code, msg = "2", "Bulk operation partially succeeded"
        body = {"code": code, "msg": msg, "data": results, "inTime": now, "outTime": now}
        return Reply(json=body, error_code=failed[0]["sCode"] if failed else None)

    def item(self, order_id: str, client_order_id: str, code: str = "0", msg: str = "") -> dict[str, Any]:
        return {
            "ordId": order_id,
            "clOrdId": client_order_id,
            "tag": "",
            "ts": str(self.now_ms()),
            "sCode": code,
            "sMsg": msg,
        }

    def place_one(self, key: LocalKey, request: dict[str, Any]) -> dict[str, Any]:
        client_id, inst_id = str(request.get("clOrdId") or ""), str(request.get("instId", ""))
        market = self.market_by_id(inst_id, contract=inst_id.endswith("-SWAP"))
        if market is None:
            return self.item("", client_id, "51001", "Instrument ID does not exist.")
        if request.get("ordType") not in ("limit", "post_only"):
            return self.item("", client_id, "51000", "Parameter ordType error")
        side = parse_side(request.get("side"))
        if side is None:
            return self.item("", client_id, "51000", "Parameter side error")
        try:
            price, amount = Decimal(str(request["px"])), Decimal(str(request["sz"]))
            order = self.place_order(key, market, side, price, amount, client_order_id=client_id or None)
        except InsufficientBalance:
            asset = market.settle or (market.quote if side == "buy" else market.base)
            return self.item(
                "", client_id, "51008", f"Order failed. Insufficient {asset} balance in account."
            )
        except (KeyError, InvalidOperation, ValueError):
            return self.item("", client_id, "51000", "Parameter sz or px error")
        return self.item(order.order_id, order.client_order_id, msg="Order placed")

    def create(self, call: Call) -> Reply:
        requests = call.body if isinstance(call.body, list) else [call.body or {}]
        return self.batch_result([self.place_one(call.signed_key, dict(request)) for request in requests])

    def cancel_by_request(self, call: Call) -> Reply:
        order_id, client_id = call.params.get("ordId", ""), call.params.get("clOrdId", "")
        market = self.require_market(call.params.get("instId", ""))
        order = self.find_order(call.signed_key, market, order_id, client_id)
        if order is None:
            return self.batch_result(
                [
                    self.item(
                        order_id,
                        client_id,
                        "51400",
                        "Order cancellation failed as the order has been filled, canceled or does not exist.",
                    )
                ]
            )
        self.drop_order(order)
        return self.batch_result([self.item(order.order_id, order.client_order_id)])
