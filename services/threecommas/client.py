"""Signed client for the 3Commas public REST API.

Why it looks the way it does:

* **Signing.** Every call carries ``Apikey`` and ``Signature`` headers over the request *path
  including the ``/public/api`` prefix*, followed by the raw query string (GET) or the raw JSON
  body (POST); a request with neither signs the bare path. Host, method and time are not
  signed. A system-generated key signs with hex HMAC-SHA256 keyed with the secret over
  ``path?query`` / ``path?body`` (docs ``quick-start/6_signing_a_request_using_hmac_sha256``); a
  self-generated RSA key (the "secret" is then a PEM private key) signs with RSASSA-PKCS1-v1_5
  over SHA-256, base64, over ``path?query`` / ``pathbody`` as the RSA page's own example does
  (docs ``quick-start/5_signing_a_request_using_rsa``). The client serialises the query and the
  body once and sends exactly the bytes it signed.
* **Mode.** ``Forced-Mode: real`` goes with every request: without it 3Commas answers in the mode
  the user last picked in its app (old docs README, "API modes"), so switching the app to paper
  trading would make every real account and deal vanish from monitoring.
* **Limits.** :class:`~services.threecommas.limiter.KeyLimiter` keeps each key under the documented
  per-route windows, honours 429 blocks by route (3Commas sends no Retry-After), and a 418 bans
  our IP for every key (:class:`~services.threecommas.limiter.IpGate`).

Entities are parsed in :mod:`services.threecommas.entities`; errors live in
:mod:`services.threecommas.errors`. Secrets never leave this module except inside the
signature or the body of ``accounts/update``; logs show the masked key and never a body.
"""

from __future__ import annotations

import base64
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from services.core.transport import Transport
from services.core.vault import Credentials, mask
from services.threecommas.entities import (
    Account,
    Bot,
    Deal,
    MarketOrder,
    SmartTrade,
    SmartTradeParams,
    parse_bool,
    parse_str,
)
from services.threecommas.errors import (
    ActionRefused,
    Banned,
    KeyInvalid,
    NotFound,
    PermissionDenied,
    PlanRestricted,
    RateLimited,
    ThreeCommasError,
    Unavailable,
)
from services.threecommas.limiter import DEFAULT_BAN_S, IpGate, KeyLimiter, route_group

log = logging.getLogger(__name__)

REAL_MODE = "real"
# 3Commas' plan refusals: the 429 "… not available with your current subscription plan" (a
# recorded answer, recomma/3commas-sdk-go testdata) and the 403 "active subscription is
# required" (docs quick-start/8_errors).
_SUBSCRIPTION_WORDS = ("subscription",)
# A 403 naming a permission is the key's; other 403s from 3Commas refuse the action in its state.
_PERMISSION_WORDS = ("permission", "not authorized", "access_denied")
# "deal cannot be cancelled" (docs quick-start/8_errors), "Cant be cancelled" (docs dca-bot/deals/11_…).
_STATE_WORDS = ("cancel", "cannot", "cant ", "can't", "close")
_RSA_MARKER = "-----BEGIN"


def is_rsa_secret(secret: str) -> bool:
    """A self-generated 3Commas key: its "secret" is the PEM private key the user keeps."""
    return secret.lstrip().startswith(_RSA_MARKER)


def load_rsa_key(secret: str) -> rsa.RSAPrivateKey:
    """The PEM private key of a self-generated 3Commas key; ValueError when it is not one."""
    try:
        key = serialization.load_pem_private_key(secret.strip().encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError("not an unencrypted PEM private key") from error
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("3Commas self-generated keys are RSA keys")
    return key


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


class ThreeCommasClient:
    """One 3Commas key. The aiohttp session is the app's shared one; the client never closes it.

    ``base_url`` is the API root including ``/public/api`` (that prefix is part of what is
    signed). ``forced_mode`` (``real``/``paper``) pins the trading mode; keysentry watches real
    trading, so it is ``real`` unless a caller explicitly asks for paper. ``interactive`` marks a
    client serving a user's tap: its calls take the key's interactive share
    (:class:`~services.threecommas.limiter.KeyLimiter`).
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
        forced_mode: str = REAL_MODE,
        max_pages: int = 20,
        interactive: bool = False,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"3Commas base URL must be absolute, got {base_url!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path
        self._session = session
        self._api_key = api_key
        self._rsa = load_rsa_key(secret) if is_rsa_secret(secret) else None
        self._secret = b"" if self._rsa else secret.encode()
        self.limiter = limiter or KeyLimiter()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._forced_mode = forced_mode
        self._max_pages = max_pages
        self._interactive = interactive

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

    async def account(self, account_id: int) -> Account:
        answer = await self._request("GET", f"/ver1/accounts/{int(account_id)}")
        return Account.from_json(self._entity(answer))

    async def update_account_keys(
        self, account_id: int, api_key: str, secret: str, passphrase: str | None = None
    ) -> Account:
        """``POST /ver1/accounts/update`` (ACCOUNTS_WRITE): give 3Commas a new exchange key for
        the account (docs ``account/4_edit_exchange_account``; ``passphrase`` for OKX, KuCoin,
        Bitget). The key travels only in this signed body and is never logged."""
        body: dict[str, Any] = {"account_id": int(account_id), "api_key": api_key, "secret": secret}
        if passphrase:
            body["passphrase"] = passphrase
        answer = await self._request("POST", "/ver1/accounts/update", body=body)
        return Account.from_json(self._entity(answer))

    async def load_balances(self, account_id: int) -> Account:
        """``POST /ver1/accounts/{id}/load_balances``: 3Commas re-reads balances from the exchange;
        422 ``invalid_api_key`` when the exchange key it holds is bad (docs ``account/9_…``)."""
        answer = await self._request("POST", f"/ver1/accounts/{int(account_id)}/load_balances")
        return Account.from_json(self._entity(answer))

    async def bots(self, *, scope: str | None = None, limit: int = 100) -> list[Bot]:
        """``GET /ver1/bots``: DCA bots; ``scope`` enabled or disabled (docs ``dca-bot/…list``)."""
        answer = await self._request("GET", "/ver1/bots", {"scope": scope, "limit": limit})
        return [Bot.from_json(item) for item in self._list(answer)]

    async def deals(
        self,
        *,
        scope: str | None = None,
        limit: int = 100,
        account_id: int | None = None,
        order: str = "created_at",
    ) -> list[Deal]:
        """Newest first by ``order`` (created_at by default; closed_at, updated_at, …), always sent
        with ``order_direction=desc`` so "the recent ones" are the recent ones.

        ``scope``: active, finished, completed, cancelled, failed, or None for all deals.
        """
        params = {
            "scope": scope,
            "limit": limit,
            "account_id": account_id,
            "order": order,
            "order_direction": "desc",
        }
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
        order_by: str = "created_at",
    ) -> list[SmartTrade]:
        """``status``: active, finished, cancelled, failed, all (3Commas' default is all).

        Without ``limit`` every page is read (up to ``max_pages``); with it, only enough pages,
        newest first by ``order_by`` (created_at, updated_at, closed_at, …). The order is always
        sent: 3Commas' default order is by *status* (docs ``smart-trade/4_…``), which would make
        the first page anything but recent.
        """
        params = {"status": status, "account_id": account_id, "order_by": order_by, "order_direction": "desc"}
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

    def _signature(self, path: str, query: str, payload: str) -> str:
        if self._rsa is not None:
            text = f"{path}?{query}" if query else f"{path}{payload}"
            signed = self._rsa.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
            return base64.b64encode(signed).decode()
        text = f"{path}?{query}{payload}" if query or payload else path
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
        headers = {
            "Apikey": self._api_key,
            "Signature": self._signature(path, query, payload),
            "Accept": "application/json",
            "Forced-Mode": self._forced_mode,
        }
        if payload:
            headers["Content-Type"] = "application/json"
        group = route_group(method, route)
        url = URL(f"{self._origin}{path}" + (f"?{query}" if query else ""), encoded=True)

        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(group, interactive=self._interactive)
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
            failure = self._error(status, answer, retry_after, self.limiter.limits[group].block_s)
            if isinstance(failure, Banned):
                self.limiter.ban(failure.retry_after)
            elif isinstance(failure, RateLimited):
                self.limiter.block(group, failure.retry_after)
                if attempt < self._MAX_ATTEMPTS:
                    continue  # acquire() waits out a short block or raises for a long one
            raise failure

    @staticmethod
    def _error(status: int, answer: Any, retry_after: float | None, block_s: float) -> ThreeCommasError:
        body = answer if isinstance(answer, dict) else {}
        has_error = parse_str(body.get("error")) is not None
        code = parse_str(body.get("error")) or f"http_{status}"
        message = parse_str(body.get("error_description")) or ""
        attributes = body.get("error_attributes") if isinstance(body.get("error_attributes"), dict) else None
        words = f"{code} {message}".lower()
        if status == 401:
            return KeyInvalid(status, code, message)
        if status == 418:
            return Banned(status, code, message, retry_after=retry_after or DEFAULT_BAN_S)
        if status == 429:
            if any(word in words for word in _SUBSCRIPTION_WORDS):
                return PlanRestricted(status, "plan_restricted", code)
            return RateLimited(
                status, code, message, retry_after=retry_after if retry_after is not None else block_s
            )
        if status == 403:
            # A 403 without 3Commas' JSON error object comes from in front of 3Commas (its CDN,
            # a proxy): it says nothing about the key.
            if not has_error:
                return Unavailable(status, "forbidden_upstream", "403 without a 3Commas error body")
            if any(word in words for word in _SUBSCRIPTION_WORDS):
                return PlanRestricted(status, code, message)
            if any(word in words for word in _STATE_WORDS):
                return ActionRefused(status, code, message)
            if any(word in words for word in _PERMISSION_WORDS):
                return PermissionDenied(status, code, message)
            return ActionRefused(status, code, message)
        if status == 422 and any(word in words for word in _STATE_WORDS):
            return ActionRefused(status, code, message, attributes=attributes)
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
        self.ip = IpGate(monotonic)  # one egress IP today: a 418 pauses every key

    @contextlib.asynccontextmanager
    async def open(
        self, credentials: Credentials, *, max_pages: int = 20, interactive: bool = False
    ) -> AsyncIterator[ThreeCommasClient]:
        """A client for ``credentials`` on the key's shared limiter; ``interactive`` for a user's tap."""
        limiter = self._limiters.get(credentials.api_key)
        if limiter is None:
            limiter = self._limiters[credentials.api_key] = KeyLimiter(ip=self.ip, clock=self._monotonic)
        async with self._transport.session() as session:
            yield ThreeCommasClient(
                session,
                self.base_url,
                credentials.api_key,
                credentials.secret,
                limiter=limiter,
                timeout_s=self._timeout_s,
                max_pages=max_pages,
                interactive=interactive,
            )
