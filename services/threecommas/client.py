"""Signed client for the 3Commas public REST API.

Why it looks the way it does:

* **Signing.** Every call carries ``Apikey`` and ``Signature`` headers. The signature is the hex
  HMAC-SHA256 (keyed with the secret) of the request *path including the ``/public/api``
  prefix*, followed by ``?`` and the raw query string (GET) or ``?`` and the raw JSON body
  (POST); a request with neither signs the bare path. Host, method and time are not signed. The
  client serialises the query and the body once and sends exactly the bytes it signed, because
  3Commas compares against what arrives on the wire.
* **Limits.** 3Commas allows about 100 requests per minute per key and blocks a key for minutes
  after a 429; clients that keep calling get their IP banned (418) for minutes up to days, which
  would hurt every user behind our IP. :class:`~services.threecommas.limiter.KeyLimiter` spaces
  calls per key, waits out short blocks and fails fast, without touching the network, during
  long blocks and bans.
Entities are parsed in :mod:`services.threecommas.entities`; errors live in
:mod:`services.threecommas.errors`.

Secrets never leave this module except inside the HMAC; logs show the masked key only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from services.core.transport import Transport
from services.core.vault import Credentials, mask
from services.threecommas.entities import (
    Account,
    Deal,
    MarketOrder,
    SmartTrade,
    SmartTradeParams,
    parse_bool,
    parse_str,
)
from services.threecommas.errors import (
    Banned,
    KeyInvalid,
    NotFound,
    PermissionDenied,
    PlanRestricted,
    RateLimited,
    ThreeCommasError,
    Unavailable,
)
from services.threecommas.limiter import KeyLimiter

log = logging.getLogger(__name__)

# How long 3Commas blocks after a 429 when it sends no Retry-After (its 429s usually carry
# none): 60 s for the deal routes, 10 s for SmartTrade listing, 300 s for everything else.
_BLOCK_AFTER_429_S = {"deals": 60.0, "smart_trades": 10.0, "default": 300.0}
# A 418 ban lasts from two minutes to three days; without a Retry-After assume ten minutes.
_DEFAULT_BAN_S = 600.0

_PLAN_RESTRICTION_MARKER = "subscription plan"


# --------------------------------------------------------------------------------------------
# Client


def start_new_deal_body(pair: str | None) -> dict[str, Any]:
    """The body of ``start_new_deal``: a single-pair bot needs no pair."""
    return {"pair": pair} if pair else {}


def _param(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def _route_group(method: str, route: str) -> str:
    if method == "GET" and route.startswith("/ver1/deals"):
        return "deals"
    if method == "GET" and route.startswith("/v2/smart_trades"):
        return "smart_trades"
    return "default"


class ThreeCommasClient:
    """One 3Commas key. The aiohttp session is the app's shared one; the client never closes it.

    ``base_url`` is the API root including ``/public/api`` (that prefix is part of what is
    signed). ``forced_mode`` (``real``/``paper``) pins the trading mode; without it 3Commas
    answers in whatever mode the user last chose in its app.
    """

    _MAX_ATTEMPTS = 3  # the first call plus two after short 429 blocks
    _PAGE_SIZE = 100

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        secret: str,
        *,
        limiter: KeyLimiter | None = None,
        timeout_s: float = 15,
        forced_mode: str | None = None,
        max_pages: int = 20,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"3Commas base URL must be absolute, got {base_url!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path
        self._session = session
        self._api_key = api_key
        self._secret = secret.encode()
        self.limiter = limiter or KeyLimiter()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._forced_mode = forced_mode
        self._max_pages = max_pages

    def __repr__(self) -> str:
        return f"ThreeCommasClient({self._origin}{self._prefix}, key={mask(self._api_key)!r})"

    # -- endpoints ---------------------------------------------------------------------------

    async def validate(self) -> None:
        """``GET /ver1/validate``: raises :class:`KeyInvalid` unless the key and secret work."""
        answer = await self._request("GET", "/ver1/validate")
        if not (isinstance(answer, dict) and parse_bool(answer.get("valid"))):
            raise KeyInvalid(200, "not_valid", "3Commas did not confirm the key")

    async def accounts(self) -> list[Account]:
        items = await self._pages("/ver1/accounts", {}, None)
        return [Account.from_json(item) for item in items]

    async def deals(
        self,
        *,
        scope: str | None = None,
        limit: int = 100,
        account_id: int | None = None,
        order: str | None = None,
    ) -> list[Deal]:
        """Newest first by ``order`` (created_at by default; closed_at, updated_at, …).

        ``scope``: active, finished, completed, cancelled, failed, or None for all deals.
        """
        params = {"scope": scope, "limit": limit, "account_id": account_id, "order": order}
        return [
            Deal.from_json(item) for item in self._list(await self._request("GET", "/ver1/deals", params))
        ]

    async def deal(self, deal_id: int) -> Deal:
        answer = await self._request("GET", f"/ver1/deals/{int(deal_id)}/show")
        return Deal.from_json(self._entity(answer))

    async def market_orders_of_deal(self, deal: Deal | int) -> list[MarketOrder]:
        """A deal's orders (``/ver1/deals/{id}/market_orders``); an id costs one more call for the pair."""
        if not isinstance(deal, Deal):
            deal = await self.deal(deal)
        answer = await self._request("GET", f"/ver1/deals/{deal.id}/market_orders")
        return [MarketOrder.from_json(item, deal) for item in self._list(answer)]

    async def smart_trades(
        self,
        *,
        status: str | None = None,
        account_id: int | None = None,
        limit: int | None = None,
        order_by: str | None = None,
    ) -> list[SmartTrade]:
        """``status``: active, finished, cancelled, failed, all (3Commas' default is all).

        Without ``limit`` every page is read (up to ``max_pages``); with it, only enough pages,
        newest first by ``order_by`` (created_at, updated_at, closed_at, …).
        """
        params = {"status": status, "account_id": account_id, "order_by": order_by}
        items = await self._pages("/v2/smart_trades", params, limit)
        return [SmartTrade.from_json(item) for item in items]

    async def smart_trade(self, smart_trade_id: int) -> SmartTrade:
        answer = await self._request("GET", f"/v2/smart_trades/{int(smart_trade_id)}")
        return SmartTrade.from_json(self._entity(answer))

    async def create_smart_trade(self, params: SmartTradeParams) -> SmartTrade:
        answer = await self._request("POST", "/v2/smart_trades", body=params.to_body())
        return SmartTrade.from_json(self._entity(answer))

    async def start_new_deal(self, bot_id: int, pair: str | None) -> Deal:
        """Ask a DCA bot for a deal now; the new deal uses the bot's current settings."""
        answer = await self._request(
            "POST", f"/ver1/bots/{int(bot_id)}/start_new_deal", body=start_new_deal_body(pair)
        )
        return Deal.from_json(self._entity(answer))

    # -- transport ---------------------------------------------------------------------------

    async def _pages(self, route: str, params: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
        """Follow ``page`` numbers until a short page or ``limit``; ``max_pages`` bounds a bad server."""
        per_page = min(self._PAGE_SIZE, limit) if limit else self._PAGE_SIZE
        items: list[dict[str, Any]] = []
        for page in range(1, self._max_pages + 1):
            batch = self._list(
                await self._request("GET", route, {**params, "page": page, "per_page": per_page})
            )
            items.extend(batch)
            if len(batch) < per_page or (limit and len(items) >= limit):
                break
        return items[:limit] if limit else items

    @staticmethod
    def _list(answer: Any) -> list[dict[str, Any]]:
        if not isinstance(answer, list):
            raise ThreeCommasError(0, "unexpected_response", "expected a JSON array")
        return [item for item in answer if isinstance(item, dict)]

    @staticmethod
    def _entity(answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise ThreeCommasError(0, "unexpected_response", "expected a JSON object")
        return answer

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    async def _request(
        self,
        method: str,
        route: str,
        params: Mapping[str, Any] | None = None,
        *,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        path = self._prefix + route
        query = urlencode(
            [(key, _param(value)) for key, value in (params or {}).items() if value is not None]
        )
        payload = json.dumps(body, separators=(",", ":")) if body else ""
        # Query for GET, JSON body for POST: never both, as 3Commas has no example of mixing.
        signed = f"{path}?{query}{payload}" if query or payload else path
        headers = {"Apikey": self._api_key, "Signature": self._sign(signed), "Accept": "application/json"}
        if payload:
            headers["Content-Type"] = "application/json"
        if self._forced_mode:
            headers["Forced-Mode"] = self._forced_mode
        url = URL(f"{self._origin}{path}" + (f"?{query}" if query else ""), encoded=True)

        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            try:
                async with self._session.request(
                    method,
                    url,
                    data=payload.encode() if payload else None,
                    headers=headers,
                    timeout=self._timeout,
                ) as response:
                    status = response.status
                    text = await response.text()
                    retry_after = _retry_after(response.headers)
            except TimeoutError:
                raise Unavailable(0, "timeout", f"no answer within {self._timeout.total} s") from None
            except aiohttp.ClientError as network_error:
                raise Unavailable(0, "network", type(network_error).__name__) from None
            log.debug("3commas %s %s key=%s → %s", method, route, mask(self._api_key), status)

            try:
                answer = json.loads(text) if text else None
            except ValueError:
                answer = None
            if 200 <= status < 300:
                if answer is None:
                    raise Unavailable(status, "unreadable_response", "3Commas sent no JSON")
                return answer
            failure = self._error(status, answer, retry_after, _route_group(method, route))
            if isinstance(failure, Banned):
                self.limiter.ban(failure.retry_after)
            elif isinstance(failure, RateLimited):
                self.limiter.block(failure.retry_after)
                if attempt < self._MAX_ATTEMPTS:
                    continue  # acquire() waits out a short block or raises for a long one
            raise failure

    @staticmethod
    def _error(status: int, answer: Any, retry_after: float | None, route_group: str) -> ThreeCommasError:
        body = answer if isinstance(answer, dict) else {}
        code = parse_str(body.get("error")) or f"http_{status}"
        message = parse_str(body.get("error_description")) or ""
        attributes = body.get("error_attributes") if isinstance(body.get("error_attributes"), dict) else None
        if status == 401:
            return KeyInvalid(status, code, message)
        if status == 418:
            return Banned(status, code, message, retry_after=retry_after or _DEFAULT_BAN_S)
        if status == 429:
            if _PLAN_RESTRICTION_MARKER in code.lower():
                return PlanRestricted(status, "plan_restricted", code)
            block = retry_after if retry_after is not None else _BLOCK_AFTER_429_S[route_group]
            return RateLimited(status, code, message, retry_after=block)
        if status == 403:
            return PermissionDenied(status, code, message)
        if status == 404 or code.lower() in {"not_found", "not found"}:
            return NotFound(status, code, message)
        if status >= 500:
            return Unavailable(status, code, message)
        return ThreeCommasError(status, code, message, attributes=attributes)


class ThreeCommasAccess:
    """Opens 3Commas clients that share one :class:`KeyLimiter` per key across calls.

    3Commas allows ~100 requests a minute per key and escalates ignored 429s to IP bans that
    would hit every user behind us, so the limiter must outlive a single /orders call. The
    HTTP session does not need to: each operation gets its own, closed when it ends, so
    nothing leaks when the bot stops.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 15,
        monotonic: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
    ) -> None:
        self.base_url = base_url
        self._transport = transport or Transport()
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._limiters: dict[str, KeyLimiter] = {}

    @contextlib.asynccontextmanager
    async def open(
        self, credentials: Credentials, *, max_pages: int = 20
    ) -> AsyncIterator[ThreeCommasClient]:
        limiter = self._limiters.get(credentials.api_key)
        if limiter is None:
            limiter = self._limiters[credentials.api_key] = KeyLimiter(clock=self._monotonic)
        async with self._transport.session() as session:
            yield ThreeCommasClient(
                session,
                self.base_url,
                credentials.api_key,
                credentials.secret,
                limiter=limiter,
                timeout_s=self._timeout_s,
                max_pages=max_pages,
            )
