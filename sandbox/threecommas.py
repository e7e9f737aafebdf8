"""A local 3Commas: the parts of its public API keysentry uses, with 3Commas' own rules.

It exists so the client, the deal checks and the whole bot can be exercised without real
money or real keys, and so every failure keysentry must recognise can be produced on demand.
What it reproduces, because the client depends on it:

* the path layout under ``/public/api`` and the signature over the path with the prefix plus
  ``?query`` or the raw body (both the ``path?body`` and ``pathbody`` forms): hex HMAC-SHA256
  for system-generated keys, base64 RSASSA-PKCS1-v1_5/SHA-256 for self-generated RSA keys
  (docs ``quick-start/5_…`` and ``6_…``); 3Commas' 401 bodies when a key is unknown, revoked,
  signed with the wrong secret, or used from an IP outside the key's whitelist (docs
  ``quick-start/8_errors``: one 401 for all of these; no separate IP body is documented, so the
  IP refusal answers tests/corpus ``threecommas/401_ip_not_whitelisted``, the invalid-key body);
  :meth:`LocalThreeCommas.whitelist_elsewhere` moves every key's whitelist away from our address
  at once, as when keysentry's server changes IP;
* JSON shaped like 3Commas' (decimals as strings, ISO times with milliseconds and ``Z``,
  ``QUOTE_BASE`` pairs, ``finished?`` style keys, and SmartTrades whose ``data.finished`` stays
  false when they fail or are cancelled, as in the docs' own examples);
* limits as documented in ``quick-start/9_limits``: per key and route (100/min with a 300 s
  block, ``/ver1/deals`` and ``deals/:id/show`` 120/min with 60 s, the SmartTrade list 40/10 s
  with 10 s), 429s without ``Retry-After`` (as a recorded real 429, recomma/3commas-sdk-go
  testdata), and an IP ban (418) for the caller's address once it keeps calling while blocked,
  which then refuses every key from that address; the subscription-plan 429; a 403 for a key
  without the write permission;
* ``Forced-Mode``: paper accounts are only visible in paper mode, and a request without the
  header is answered in the mode the user last chose in the app (old docs README, "API modes");
* ``POST /ver1/accounts/update`` and ``load_balances``, and ``reset_exchange_keys``, the mass
  reset keysentry exists for: every exchange key 3Commas holds stops working at once.
* the trader's Cancel / Close at market price from 3Commas' app (:meth:`LocalThreeCommas.
  request_deal_action`, ``request_smart_trade_action``): the documented pending statuses
  (``cancel_pending``, ``cancellation_pending``, ``panic_sell_pending``; corpus
  ``threecommas/*_pending_docs``) and, while the account's exchange key is broken, the error
  fields the entity docs name (``error_message``, ``status.error``, ``market_close.status.error``;
  the shape of a failed cancel is not documented: corpus ``*_failed_docs_silent``).

Scenarios are set up through the Python methods of :class:`LocalThreeCommas` or, for other
processes, the same methods over HTTP: ``POST /__control/<method>`` with the keyword arguments
as a JSON object, ``GET /__control/requests`` for the request log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.corpus import case
from services.core.clock import Clock, SystemClock

API_PREFIX = "/public/api"
CONTROL_PREFIX = "/__control"

_NOT_FOUND = {"error": "not_found", "error_description": "Not Found"}


def _recorded(case_id: str) -> Any:
    """The body of a recorded answer (tests/corpus/threecommas), as this fake sends it."""
    return json.loads(case(case_id).render())


# Error bodies come from the corpus, each case naming its source.
_INVALID_KEY = _recorded("threecommas/401_invalid_key")
_BAD_SIGNATURE = _recorded("threecommas/401_signature_invalid")
_NO_PERMISSION = _recorded("threecommas/403_access_denied")
# docs quick-start/8_errors: 401 for "a request from a non-whitelisted IP address".
_IP_REFUSED = _recorded("threecommas/401_ip_not_whitelisted")
# docs quick-start/9_limits give only the status of a 429 and a 418; the recorded 429 has no body
# and no Retry-After, so the client must decide on the status alone.
_RATE_LIMITED = _recorded("threecommas/429_rate_limited_deals")
_BANNED = _recorded("threecommas/418_ip_banned")
# docs account/9_load_balances_for_specified_exchange: the exchange key 3Commas holds is bad.
_EXCHANGE_KEY_INVALID = _recorded("threecommas/load_balances_invalid_api_key_docs")
# What an exchange answers 3Commas after the reset (the text deals fail with on 3Commas).
RESET_ERROR = "Invalid API key"
# docs quick-start/9_limits: (requests, per seconds, block seconds after a 429).
_ROUTE_LIMITS = {"default": (100, 60.0, 300.0), "deals": (120, 60.0, 60.0), "smart_trades": (40, 10.0, 10.0)}
_PLAN_RESTRICTED = _recorded("threecommas/429_plan_restricted")

_TERMINAL_DEAL = frozenset({"completed", "cancelled", "failed", "panic_sold", "stop_loss_finished"})
_TERMINAL_SMART_TRADE = frozenset({"finished", "cancelled", "failed"})
_SMART_TRADE_TITLES = {
    "created": "Pending",
    "waiting_position": "Pending Position Opened",
    "waiting_targets": "Waiting Targets",
    "finished": "Finished",
    "cancelled": "Cancelled",
    "failed": "Failed",
    # docs smart-trade/10_cancel_smart_trade and 8_close_smart_trade_at_market_price (example responses)
    "cancellation_pending": "Cancelling",
    "panic_sell_pending": "Closing at Market Price",
}
_DEAL_ORDERS = frozenset({"created_at", "updated_at", "closed_at"})
_DEAL_TITLES = {
    "completed": "Completed",
    "cancelled": "Cancelled",
    "failed": "Failed",
    "panic_sold": "Closed at Market Price",
    # docs dca-bot/deals/6_cancel_deal and 4_close_deal_at_market_price (example responses)
    "cancel_pending": "Cancel pending",
    "panic_sell_pending": "Closing at Market Price",
}
# The trader's Cancel / Close at market price: (pending status, status once done), per entity.
_DEAL_ACTIONS = {"cancel": ("cancel_pending", "cancelled"), "close": ("panic_sell_pending", "panic_sold")}
_SMART_TRADE_ACTIONS = {
    "cancel": ("cancellation_pending", "cancelled"),
    "close": ("panic_sell_pending", "finished"),
}
_PENDING = frozenset(status for status, _ in (*_DEAL_ACTIONS.values(), *_SMART_TRADE_ACTIONS.values()))


@dataclass(frozen=True, slots=True)
class LocalTcKey:
    api_key: str
    secret: str


@dataclass(frozen=True, slots=True)
class TcRequest:
    """One API request as the server saw it; ``body`` is the parsed JSON (or form) body."""

    method: str
    path: str
    api_key: str | None
    status: int
    query: str = ""
    body: Any = None


# --------------------------------------------------------------------------------------------
# Helpers


def _dec(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _opt_dec(value: Any) -> Decimal | None:
    return None if value is None else _dec(value)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _moment(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _truthy(value: Any) -> bool:
    return value in (True, "true", "1", 1)


def _path_id(request: web.Request, name: str) -> int:
    """A numeric id from the path; anything else is simply not found, as on 3Commas."""
    try:
        return int(request.match_info[name])
    except ValueError:
        return -1


def _caller(request: web.Request) -> str:
    """The Apikey of a request the middleware already authenticated."""
    return request.headers["Apikey"]


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def _route_group(request: web.Request) -> str:
    """Which documented limit a request falls under (docs quick-start/9_limits)."""
    path = request.path[len(API_PREFIX) :].rstrip("/")
    parts = path.split("/")
    if request.method == "GET" and (
        path == "/ver1/deals" or (len(parts) == 5 and parts[2] == "deals" and parts[4] == "show")
    ):
        return "deals"
    if request.method == "GET" and path == "/v2/smart_trades":
        return "smart_trades"
    return "default"


# --------------------------------------------------------------------------------------------
# State


@dataclass
class _Key:
    api_key: str
    secret: str
    can_write: bool
    subscription_active: bool
    revoked: bool = False
    rsa_public: rsa.RSAPublicKey | None = None
    can_write_accounts: bool = True
    whitelist: frozenset[str] = frozenset()
    app_mode: str = "real"


@dataclass
class _Window:
    """Rate-limit state of one Apikey header value on one route group (known or not, as
    3Commas counts before auth)."""

    sent: deque[float] = field(default_factory=deque)
    blocked_until: float = float("-inf")


@dataclass
class _Address:
    """The 418 state of one caller IP: ignoring blocks counts here, and the ban covers every key."""

    violations: int = 0
    banned_until: float = float("-inf")


@dataclass
class _Account:
    id: int
    owner: str
    name: str
    market_code: str
    paper: bool
    usd_amount: Decimal
    smart_trading_supported: bool
    created_at: datetime
    updated_at: datetime
    api_key_invalid: bool = False
    api_keys_state: str = "ok"
    is_locked: bool = False
    lock_reason: str | None = None
    auto_balance_error: Any = None
    exchange_key: str | None = None
    balances_loaded_at: datetime | None = None


@dataclass
class _Bot:
    id: int
    owner: str
    account_id: int
    name: str
    pairs: list[str]
    max_active_deals: int
    is_enabled: bool
    base_order_volume: Decimal
    safety_order_volume: Decimal
    take_profit: Decimal
    stop_loss_percentage: Decimal | None
    strategy: str
    created_at: datetime


@dataclass
class _Order:
    order_id: str
    side: str
    deal_order_type: str
    status: str
    price: Decimal
    amount: Decimal
    filled: Decimal
    created_at: datetime
    updated_at: datetime


@dataclass
class _Deal:
    id: int
    owner: str
    bot_id: int
    account_id: int
    pair: str
    status: str
    strategy: str
    market_type: str
    created_at: datetime
    updated_at: datetime
    current_price: Decimal | None
    take_profit: Decimal | None
    stop_loss_percentage: Decimal | None
    base_order_volume: Decimal | None
    safety_order_volume: Decimal | None
    bought_amount: Decimal | None
    bought_average_price: Decimal | None
    orders: list[_Order]
    events: list[tuple[str, datetime]]
    closed_at: datetime | None = None
    deal_has_error: bool = False
    error_message: str | None = None
    failed_message: str | None = None
    frozen: bool = False

    @property
    def finished(self) -> bool:
        return self.status in _TERMINAL_DEAL


@dataclass
class _SmartTrade:
    id: int
    owner: str
    account_id: int
    body: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    current_price: Decimal | None
    entered_amount: Decimal
    average_enter_price: Decimal | None
    error: str | None = None
    frozen: bool = False
    profit: Decimal | None = None
    market_close_error: str | None = None


class _Rejected(ValueError):
    """A request refused with a 3Commas error body; scenario controls given the same bad input
    (another user's account, an invalid SmartTrade) raise it as a plain ValueError."""

    def __init__(
        self, status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _record_invalid(attributes: Mapping[str, list[str]]) -> _Rejected:
    return _Rejected(
        422,
        {
            "error": "record_invalid",
            "error_description": "Invalid parameters",
            "error_attributes": dict(attributes),
        },
    )


# --------------------------------------------------------------------------------------------
# Server


class LocalThreeCommas:
    """The local 3Commas server and its scenario controls.

    ``clock`` (``.now()`` → aware datetime) stamps deals and trades; ``monotonic`` (seconds)
    drives the rate limiter, so tests can run both without sleeping.
    """

    _CONTROL_METHODS = frozenset(
        {
            "add_key",
            "revoke_key",
            "add_account",
            "set_account",
            "add_bot",
            "add_deal",
            "set_deal",
            "fail_deal",
            "finish_deal",
            "freeze_upnl",
            "set_price",
            "add_smart_trade",
            "fail_smart_trade",
            "finish_smart_trade",
            "freeze_smart_trade",
            "throttle",
            "ban",
            "set_rate_limit",
            "set_app_mode",
            "set_whitelist",
            "whitelist_elsewhere",
            "reset_exchange_keys",
            "lose_answers",
        }
    )

    def __init__(self, clock: Clock | None = None, *, monotonic: Callable[[], float] | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._monotonic = monotonic or time.monotonic
        self.requests: list[TcRequest] = []
        self._keys: dict[str, _Key] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._addresses: dict[str, _Address] = {}
        self._accounts: dict[int, _Account] = {}
        self._bots: dict[int, _Bot] = {}
        self._deals: dict[int, _Deal] = {}
        self._smart_trades: dict[int, _SmartTrade] = {}
        self._prices: dict[str, Decimal] = {}
        self._account_ids = itertools.count(30_000_001)
        self._bot_ids = itertools.count(15_000_001)
        self._deal_ids = itertools.count(2_300_000_001)
        self._smart_trade_ids = itertools.count(30_350_001)
        self._order_ids = itertools.count(1_500_000_001)
        self.limits = dict(_ROUTE_LIMITS)
        self.ban_after = 10
        self.ban_seconds = 120.0  # the shortest documented ban
        self.send_retry_after = False
        self._lost_answers: list[bool] = []
        self._down_after = 0
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.control_url = ""
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, port: int = 0, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
    ) -> str:
        """Serve on ``host:port`` (0 picks a free port), over TLS when ``ssl_context`` is given (tests
        serve ``api.3commas.io`` that way, see tests/production_net.py); returns the API base URL."""
        app = web.Application(middlewares=[self._api_middleware])
        api = [
            web.get(f"{API_PREFIX}/ver1/validate", self._validate),
            web.get(f"{API_PREFIX}/ver1/accounts", self._accounts_list),
            web.get(f"{API_PREFIX}/ver1/accounts/{{account_id}}", self._account_show),
            web.post(f"{API_PREFIX}/ver1/accounts/update", self._account_update),
            web.post(f"{API_PREFIX}/ver1/accounts/{{account_id}}/load_balances", self._load_balances),
            web.get(f"{API_PREFIX}/ver1/bots", self._bots_list),
            web.get(f"{API_PREFIX}/ver1/deals", self._deals_list),
            web.get(f"{API_PREFIX}/ver1/deals/{{deal_id}}/show", self._deal_show),
            web.get(f"{API_PREFIX}/ver1/deals/{{deal_id}}/market_orders", self._deal_orders),
            web.get(f"{API_PREFIX}/ver1/bots/{{bot_id}}/show", self._bot_show),
            web.post(f"{API_PREFIX}/ver1/bots/{{bot_id}}/start_new_deal", self._start_new_deal),
            web.get(f"{API_PREFIX}/v2/smart_trades", self._smart_trades_list),
            web.get(f"{API_PREFIX}/v2/smart_trades/{{smart_trade_id}}", self._smart_trade_show),
            web.post(f"{API_PREFIX}/v2/smart_trades", self._smart_trade_create),
        ]
        control = [
            web.get(f"{CONTROL_PREFIX}/requests", self._control_requests),
            web.post(f"{CONTROL_PREFIX}/{{method}}", self._control_call),
        ]
        app.add_routes(api + control)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = self.port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context else "http"
        self.control_url = f"{scheme}://{host}:{bound}{CONTROL_PREFIX}"
        self.url = f"{scheme}://{host}:{bound}{API_PREFIX}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- scenario controls -------------------------------------------------------------------

    def add_key(
        self,
        api_key: str | None = None,
        secret: str | None = None,
        *,
        can_write: bool = True,
        subscription_active: bool = True,
        rsa_public_pem: str | None = None,
        can_write_accounts: bool = True,
    ) -> LocalTcKey:
        """A new 3Commas key; each key is its own user. ``can_write`` False makes it read-only
        for bots and SmartTrades, ``can_write_accounts`` False takes ACCOUNTS_WRITE away.
        ``rsa_public_pem`` makes a self-generated key: 3Commas keeps only the public key and
        ``secret`` is then empty (the user holds the private key)."""
        public = None
        if rsa_public_pem is not None:
            loaded = serialization.load_pem_public_key(rsa_public_pem.encode())
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise ValueError("3Commas self-generated keys are RSA keys")
            public = loaded
        key = _Key(
            api_key=api_key or secrets.token_hex(32),
            secret="" if public else secret or secrets.token_hex(48),
            can_write=can_write,
            subscription_active=subscription_active,
            rsa_public=public,
            can_write_accounts=can_write_accounts,
        )
        self._keys[key.api_key] = key
        return LocalTcKey(key.api_key, key.secret)

    def revoke_key(self, api_key: str) -> None:
        self._keys[api_key].revoked = True

    def set_app_mode(self, api_key: str, mode: str) -> None:
        """The user switches the 3Commas app to ``paper`` or ``real``; requests without a
        ``Forced-Mode`` header are answered in that mode from then on."""
        if mode not in ("real", "paper"):
            raise ValueError("mode is real or paper")
        self._owner(api_key).app_mode = mode

    def set_whitelist(self, api_key: str, ips: Sequence[str] = ()) -> None:
        """Restrict the key to these caller IPs (empty: any); others get the 401."""
        self._owner(api_key).whitelist = frozenset(ips)

    def whitelist_elsewhere(self, ips: Sequence[str] = ("203.0.113.7",)) -> None:
        """Every key's whitelist names only ``ips`` (by default a documentation address, never
        ours): keysentry's server changed IP, and every key answers the non-whitelisted 401."""
        for key in self._keys.values():
            key.whitelist = frozenset(ips)

    def reset_exchange_keys(
        self, api_key: str | None = None, error_message: str = RESET_ERROR
    ) -> dict[str, int]:
        """The mass reset: every exchange key 3Commas holds (of one user, or everyone's) stops
        working. Accounts turn ``api_key_invalid``; active deals and SmartTrades fail with the
        exchange's complaint, their UPNL freezes; bots are switched off; balances stop loading."""
        counts = {"accounts": 0, "deals": 0, "smart_trades": 0, "bots": 0}
        now = self.clock.now()
        for account in self._accounts.values():
            if (api_key is not None and account.owner != api_key) or account.paper:
                continue
            account.api_key_invalid, account.api_keys_state = True, "expired"
            account.updated_at = now
            counts["accounts"] += 1
            for deal in self._deals.values():
                if deal.account_id == account.id and not deal.finished:
                    self.fail_deal(deal.id, error_message)
                    counts["deals"] += 1
            for trade in self._smart_trades.values():
                if trade.account_id == account.id and trade.status not in _TERMINAL_SMART_TRADE:
                    self.fail_smart_trade(trade.id, error_message)
                    counts["smart_trades"] += 1
            for bot in self._bots.values():
                if bot.account_id == account.id and bot.is_enabled:
                    bot.is_enabled = False
                    counts["bots"] += 1
        return counts

    def add_account(
        self,
        api_key: str,
        exchange: str = "binance",
        name: str = "Main",
        balances_usd: float = 1000.0,
        *,
        paper: bool = False,
        smart_trading_supported: bool = True,
    ) -> int:
        """An exchange account under the key's user; ``exchange`` is 3Commas' ``market_code``."""
        self._owner(api_key)
        now = self.clock.now()
        account = _Account(
            id=next(self._account_ids),
            owner=api_key,
            name=name,
            market_code=exchange,
            paper=paper,
            usd_amount=_dec(balances_usd),
            smart_trading_supported=smart_trading_supported,
            created_at=now,
            updated_at=now,
        )
        self._accounts[account.id] = account
        return account.id

    def set_account(self, account_id: int, **fields: Any) -> None:
        """Change ``api_key_invalid``, ``api_keys_state``, ``is_locked``, ``lock_reason``,
        ``auto_balance_error``, ``name``, ``balances_usd`` or ``smart_trading_supported``."""
        account = self._accounts[account_id]
        for name, value in fields.items():
            if name == "balances_usd":
                account.usd_amount = _dec(value)
            elif name in {
                "api_key_invalid",
                "api_keys_state",
                "is_locked",
                "lock_reason",
                "auto_balance_error",
                "name",
                "smart_trading_supported",
            }:
                setattr(account, name, value)
            else:
                raise TypeError(f"unknown account field {name!r}")
        account.updated_at = self.clock.now()

    def add_bot(
        self,
        api_key: str,
        account_id: int,
        *,
        pairs: Sequence[str] = ("USDT_BTC",),
        name: str = "DCA bot",
        max_active_deals: int = 1,
        is_enabled: bool = True,
        base_order_volume: float | str = 10,
        safety_order_volume: float | str = 10,
        take_profit: float | str = "1.5",
        stop_loss_percentage: float | str | None = None,
        strategy: str = "long",
        bot_id: int | None = None,
    ) -> int:
        self._own_account(api_key, account_id)
        bot = _Bot(
            id=bot_id or next(self._bot_ids),
            owner=api_key,
            account_id=account_id,
            name=name,
            pairs=list(pairs),
            max_active_deals=max_active_deals,
            is_enabled=is_enabled,
            base_order_volume=_dec(base_order_volume),
            safety_order_volume=_dec(safety_order_volume),
            take_profit=_dec(take_profit),
            stop_loss_percentage=_opt_dec(stop_loss_percentage),
            strategy=strategy,
            created_at=self.clock.now(),
        )
        self._bots[bot.id] = bot
        return bot.id

    def add_deal(
        self,
        api_key: str,
        account_id: int,
        *,
        pair: str = "USDT_BTC",
        status: str = "bought",
        bot_id: int | None = None,
        orders: Iterable[Mapping[str, Any]] = (),
        current_price: float | str | None = None,
        updated_at: datetime | str | None = None,
        created_at: datetime | str | None = None,
        bought_amount: float | str | None = None,
        bought_average_price: float | str | None = None,
        take_profit: float | str | None = None,
        stop_loss_percentage: float | str | None = None,
        base_order_volume: float | str | None = None,
        deal_has_error: bool = False,
        error_message: str | None = None,
        market_type: str = "spot",
    ) -> int:
        """A deal of ``bot_id`` (a bot for the pair is made, or made under that id, if missing).

        ``orders``: dicts with ``side``, ``price``, ``amount`` and optionally ``created_at``,
        ``status`` (active/filled/cancelled), ``deal_order_type``, ``filled``, ``order_id``.
        """
        if bot_id is None or bot_id not in self._bots:
            bot_id = self.add_bot(api_key, account_id, pairs=[pair], bot_id=bot_id)
        bot = self._bots[bot_id]
        now = self.clock.now()
        created = _moment(created_at) or now
        deal = _Deal(
            id=next(self._deal_ids),
            owner=api_key,
            bot_id=bot_id,
            account_id=account_id,
            pair=pair,
            status=status,
            strategy=bot.strategy,
            market_type=market_type,
            created_at=created,
            updated_at=_moment(updated_at) or created,
            current_price=_opt_dec(current_price if current_price is not None else self._prices.get(pair)),
            take_profit=_opt_dec(take_profit) if take_profit is not None else bot.take_profit,
            stop_loss_percentage=(
                _opt_dec(stop_loss_percentage)
                if stop_loss_percentage is not None
                else bot.stop_loss_percentage
            ),
            base_order_volume=(
                _opt_dec(base_order_volume) if base_order_volume is not None else bot.base_order_volume
            ),
            safety_order_volume=bot.safety_order_volume,
            bought_amount=_opt_dec(bought_amount),
            bought_average_price=_opt_dec(bought_average_price),
            orders=[self._order(raw, created) for raw in orders],
            events=[("Base order placed.", created)],
            deal_has_error=deal_has_error,
            error_message=error_message,
        )
        if deal.finished:
            deal.closed_at = deal.updated_at
        self._deals[deal.id] = deal
        return deal.id

    def set_deal(self, deal_id: int, **fields: Any) -> None:
        """Change ``status``, ``current_price``, ``updated_at``, ``deal_has_error`` or ``error_message``."""
        deal = self._deals[deal_id]
        for name, value in fields.items():
            if name == "current_price":
                deal.current_price = _opt_dec(value)
            elif name == "updated_at":
                deal.updated_at = _moment(value) or self.clock.now()
            elif name in {"status", "deal_has_error", "error_message"}:
                setattr(deal, name, value)
            else:
                raise TypeError(f"unknown deal field {name!r}")

    def fail_deal(self, deal_id: int, error_message: str = "Invalid API key") -> None:
        """The deal fails the way 3Commas fails deals whose exchange key broke."""
        deal = self._deals[deal_id]
        now = self.clock.now()
        deal.status = "failed"
        deal.deal_has_error = True
        deal.error_message = deal.failed_message = error_message
        deal.updated_at = deal.closed_at = now
        deal.events.append((f"Deal failed: {error_message}", now))

    def finish_deal(self, deal_id: int, status: str = "completed") -> None:
        if status not in _TERMINAL_DEAL:
            raise ValueError(f"not a finished deal status: {status!r}")
        deal = self._deals[deal_id]
        deal.status = status
        deal.updated_at = deal.closed_at = self.clock.now()

    def freeze_upnl(self, deal_id: int, frozen: bool = True) -> None:
        """The deal's ``current_price`` and ``updated_at`` stop following the market."""
        self._deals[deal_id].frozen = frozen

    def set_price(self, pair: str, price: float | str) -> None:
        """The market moves: every open, unfrozen deal and SmartTrade on ``pair`` follows."""
        value = _dec(price)
        now = self.clock.now()
        self._prices[pair] = value
        for deal in self._deals.values():
            if deal.pair == pair and not deal.finished and not deal.frozen:
                deal.current_price, deal.updated_at = value, now
        for trade in self._smart_trades.values():
            if trade.body["pair"] == pair and trade.status not in _TERMINAL_SMART_TRADE and not trade.frozen:
                trade.current_price = value
                trade.profit = self._smart_trade_profit(trade)

    def add_smart_trade(
        self,
        api_key: str,
        account_id: int,
        *,
        pair: str = "USDT_BTC",
        side: str = "buy",
        units: float | str = "0.01",
        price: float | str | None = None,
        order_type: str = "limit",
        take_profit: Sequence[Mapping[str, Any]] = (),
        stop_loss: Mapping[str, Any] | None = None,
        skip_enter_step: bool = False,
        status: str | None = None,
        entered_amount: float | str | None = None,
        average_enter_price: float | str | None = None,
    ) -> int:
        """A SmartTrade as if created through the API. ``take_profit``: dicts with ``price``,
        ``volume`` (percent) and optionally ``price_type``/``order_type``; ``stop_loss``: a dict
        with ``price`` and optionally ``price_type``/``order_type``."""
        position: dict[str, Any] = {"type": side, "order_type": order_type, "units": {"value": str(units)}}
        if price is not None:
            position["price"] = {"value": str(price)}
        body: dict[str, Any] = {
            "account_id": account_id,
            "pair": pair,
            "position": position,
            "take_profit": {
                "enabled": bool(take_profit),
                "steps": [
                    {
                        "order_type": step.get("order_type", "limit"),
                        "price": {"value": str(step["price"]), "type": step.get("price_type", "bid")},
                        "volume": str(step["volume"]),
                    }
                    for step in take_profit
                ],
            },
            "stop_loss": {"enabled": False},
        }
        if stop_loss is not None:
            body["stop_loss"] = {
                "enabled": True,
                "order_type": stop_loss.get("order_type", "market"),
                "conditional": {
                    "price": {"value": str(stop_loss["price"]), "type": stop_loss.get("price_type", "bid")}
                },
            }
        if skip_enter_step:
            body["skip_enter_step"] = True
        trade = self._create_smart_trade(api_key, body)
        if status is not None:
            trade.status = status
        if entered_amount is not None:
            trade.entered_amount = _dec(entered_amount)
        if average_enter_price is not None:
            trade.average_enter_price = _dec(average_enter_price)
        return trade.id

    def fail_smart_trade(self, smart_trade_id: int, error_message: str = "Invalid API key") -> None:
        trade = self._smart_trades[smart_trade_id]
        trade.status, trade.error = "failed", error_message
        trade.updated_at = self.clock.now()

    def freeze_smart_trade(self, smart_trade_id: int, frozen: bool = True) -> None:
        """The SmartTrade's price and profit stop following the market (UPNL goes stale)."""
        trade = self._smart_trades[smart_trade_id]
        trade.profit = self._smart_trade_profit(trade)
        trade.frozen = frozen

    def finish_smart_trade(self, smart_trade_id: int, status: str = "finished") -> None:
        if status not in _TERMINAL_SMART_TRADE:
            raise ValueError(f"not a finished SmartTrade status: {status!r}")
        trade = self._smart_trades[smart_trade_id]
        trade.status = status
        trade.updated_at = self.clock.now()

    def request_deal_action(self, deal_id: int, action: str = "cancel", *, hang: bool = False) -> None:
        """The trader presses Cancel (``action="cancel"``) or Close at market price (``"close"``)
        in 3Commas' app. With the account's exchange key working the deal ends (``cancelled`` /
        ``panic_sold``); while it is broken the deal stays ``cancel_pending`` /
        ``panic_sell_pending`` carrying the exchange's complaint in ``error_message``; ``hang``
        leaves it pending without an error (corpus threecommas/deal_cancel_failed_docs_silent)."""
        deal = self._deals[deal_id]
        pending, done = _DEAL_ACTIONS[action]
        broken = self._accounts[deal.account_id].api_key_invalid
        deal.updated_at = self.clock.now()
        if broken or hang:
            deal.status = pending
            deal.deal_has_error, deal.error_message = broken, RESET_ERROR if broken else None
            return
        deal.deal_has_error, deal.error_message = False, None
        self.finish_deal(deal_id, done)

    def request_smart_trade_action(
        self, smart_trade_id: int, action: str = "cancel", *, hang: bool = False
    ) -> None:
        """As :meth:`request_deal_action` for a SmartTrade: ``cancellation_pending`` with
        ``status.error``, or ``panic_sell_pending`` with ``market_close.status.error``."""
        trade = self._smart_trades[smart_trade_id]
        pending, done = _SMART_TRADE_ACTIONS[action]
        broken = self._accounts[trade.account_id].api_key_invalid
        trade.updated_at = self.clock.now()
        trade.error = trade.market_close_error = None
        if broken or hang:
            trade.status = pending
            if broken and action == "cancel":
                trade.error = RESET_ERROR
            elif broken:
                trade.market_close_error = RESET_ERROR
            return
        self.finish_smart_trade(smart_trade_id, done)

    def throttle(self, api_key: str, seconds: float, route: str = "default") -> None:
        """Block the key on a route group as after a 429: its calls there get 429 for ``seconds``."""
        self._windows.setdefault((api_key, route), _Window()).blocked_until = self._monotonic() + seconds

    def ban(self, seconds: float, address: str = "127.0.0.1") -> None:
        """Ban a caller IP as after ignored 429s: every key from it gets 418 for ``seconds``."""
        self._addresses.setdefault(address, _Address()).banned_until = self._monotonic() + seconds

    def set_rate_limit(
        self,
        *,
        per_minute: int | None = None,
        block_seconds: float | None = None,
        ban_after: int | None = None,
        ban_seconds: float | None = None,
        send_retry_after: bool | None = None,
    ) -> None:
        """Tune the limiter: ``per_minute``/``block_seconds`` change the general rule. Real
        3Commas 429s were seen *without* Retry-After, the default here; tests may turn it on."""
        requests, span, block = self.limits["default"]
        self.limits["default"] = (
            per_minute if per_minute is not None else requests,
            span,
            block_seconds if block_seconds is not None else block,
        )
        if ban_after is not None:
            self.ban_after = ban_after
        if ban_seconds is not None:
            self.ban_seconds = ban_seconds
        if send_retry_after is not None:
            self.send_retry_after = send_retry_after

    def lose_answers(self, times: int = 1, *, carried_out: bool = True, down_after: int = 0) -> None:
        """The next ``times`` POSTs get a bare 504 page instead of their answer.

        ``carried_out`` (the default) runs the request first: the gateway gave up while 3Commas went
        on and created the trade, as Cloudflare's 504/524 pages in front of api.3commas.io do when
        the origin is slow (Cloudflare docs, "Error 524: a timeout occurred"). Without it the
        request never reaches 3Commas. ``down_after``: that many requests after it get a 503 page,
        as while the origin stays overloaded.
        """
        self._lost_answers.extend([carried_out] * times)
        self._down_after += down_after

    # -- gatekeeping -------------------------------------------------------------------------

    @web.middleware
    async def _api_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        raw_body = await request.read()
        api_key = request.headers.get("Apikey")
        body = self._parse_body(request, raw_body)
        response: web.StreamResponse
        try:
            self._rate_check(api_key, request.remote or "", _route_group(request))
            key = self._authenticate(request, api_key, raw_body)
            self._authorize(request, key)
            lost = self._lost_answers.pop(0) if request.method == "POST" and self._lost_answers else None
            if lost is None and self._down_after and not self._lost_answers:
                self._down_after -= 1
                response = web.Response(status=503, text="<html>503 Service Temporarily Unavailable</html>")
            elif lost is not None:
                if lost:
                    await handler(request)
                response = web.Response(status=504, text="<html>504 Gateway Time-out</html>")
            else:
                response = await handler(request)
        except _Rejected as rejected:
            response = _json(rejected.body, rejected.status, rejected.headers)
        except web.HTTPNotFound:
            response = _json(_NOT_FOUND, 404)
        self.requests.append(
            TcRequest(
                request.method, request.path, api_key, response.status, request.rel_url.raw_query_string, body
            )
        )
        return response

    @staticmethod
    def _parse_body(request: web.Request, raw_body: bytes) -> Any:
        if not raw_body:
            return None
        if request.content_type == "application/json":
            try:
                return json.loads(raw_body)
            except ValueError:
                return raw_body.decode(errors="replace")
        if request.content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw_body.decode(errors="replace")))
        return raw_body.decode(errors="replace")

    def _rate_check(self, api_key: str | None, address: str, route: str) -> None:
        """Every call counts in the key's general window and its route's; a call into a running
        block is a violation of the caller's IP, and too many ban the IP for every key."""
        now = self._monotonic()
        caller = self._addresses.setdefault(address, _Address())
        if now < caller.banned_until:
            raise self._limited(418, _BANNED, caller.banned_until - now)
        groups = ["default"] if route == "default" else ["default", route]
        windows = [(group, self._windows.setdefault((api_key or "", group), _Window())) for group in groups]
        for _group, window in windows:
            if now < window.blocked_until:
                caller.violations += 1
                if caller.violations > self.ban_after:
                    caller.banned_until = now + self.ban_seconds
                    caller.violations = 0
                    raise self._limited(418, _BANNED, self.ban_seconds)
                raise self._limited(429, _RATE_LIMITED, window.blocked_until - now)
        for group, window in windows:
            requests, span, block = self.limits[group]
            while window.sent and window.sent[0] <= now - span:
                window.sent.popleft()
            if len(window.sent) >= requests:
                window.blocked_until = now + block
                raise self._limited(429, _RATE_LIMITED, block)
        for _group, window in windows:
            window.sent.append(now)

    def _limited(self, status: int, body: Mapping[str, Any] | None, seconds: float) -> _Rejected:
        headers = {"Retry-After": str(int(seconds + 0.999))} if self.send_retry_after else {}
        return _Rejected(status, body, headers)

    @staticmethod
    def _authorize(request: web.Request, key: _Key) -> None:
        """Writes need the matching permission (docs quick-start/1_security_and_permission_types)."""
        if request.method == "GET":
            return
        path = request.path[len(API_PREFIX) :]
        if path.startswith("/ver1/accounts/"):
            if path.endswith("/load_balances"):
                return  # ACCOUNTS_READ is enough (docs account/9_…)
            if not key.can_write_accounts:
                raise _Rejected(403, _NO_PERMISSION)
        elif not key.can_write:
            raise _Rejected(403, _NO_PERMISSION)

    def _authenticate(self, request: web.Request, api_key: str | None, raw_body: bytes) -> _Key:
        key = self._keys.get(api_key or "")
        if key is None or key.revoked:
            raise _Rejected(401, _INVALID_KEY)
        if key.whitelist and (request.remote or "") not in key.whitelist:
            raise _Rejected(401, _IP_REFUSED)
        path = request.rel_url.raw_path
        query = request.rel_url.raw_query_string
        body = raw_body.decode(errors="replace")
        # 3Commas signs path?query for GET and path?body for JSON POSTs; clients following the
        # RSA page and py3cw omit the "?" before a body, and 3Commas accepts both.
        candidates = {f"{path}?{query}", f"{path}?{query}{body}", f"{path}?{body}", f"{path}{body}"}
        if not query and not body:
            candidates.add(path)
        given = request.headers.get("Signature", "")
        if not any(self._signature_matches(key, text, given) for text in candidates):
            raise _Rejected(401, _BAD_SIGNATURE)
        if not key.subscription_active:
            raise _Rejected(429, _PLAN_RESTRICTED)
        return key

    @staticmethod
    def _signature_matches(key: _Key, text: str, given: str) -> bool:
        """Hex HMAC compared case-insensitively; RSA as base64, case-sensitive (docs page 5)."""
        if key.rsa_public is None:
            expected = hmac.new(key.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, given.lower())
        try:
            key.rsa_public.verify(
                base64.b64decode(given, validate=True), text.encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _owner(self, api_key: str) -> _Key:
        try:
            return self._keys[api_key]
        except KeyError:
            raise KeyError(f"unknown 3Commas key {api_key!r}") from None

    def _own_account(self, api_key: str, account_id: Any) -> _Account:
        self._owner(api_key)
        try:
            account = self._accounts[int(account_id)]
        except (KeyError, ValueError, TypeError):
            raise _Rejected(404, _NOT_FOUND) from None
        if account.owner != api_key:
            raise _Rejected(404, _NOT_FOUND)
        return account

    def _paper(self, request: web.Request) -> bool:
        """``Forced-Mode`` when sent, else the mode the user last chose in the 3Commas app."""
        mode = request.headers.get("Forced-Mode") or self._keys[_caller(request)].app_mode
        return mode.lower() == "paper"

    def _visible(self, request: web.Request, owner: str, account_id: int) -> bool:
        account = self._accounts.get(account_id)
        return owner == _caller(request) and account is not None and account.paper == self._paper(request)

    def _order(self, raw: Mapping[str, Any], default_time: datetime) -> _Order:
        side = str(raw["side"]).lower()
        created = _moment(raw.get("created_at")) or default_time
        return _Order(
            order_id=str(raw.get("order_id") or next(self._order_ids)),
            side=side,
            deal_order_type=str(raw.get("deal_order_type") or ("Take Profit" if side == "sell" else "Base")),
            status=str(raw.get("status", "active")).lower(),
            price=_dec(raw["price"]),
            amount=_dec(raw["amount"]),
            filled=_dec(raw.get("filled", 0)),
            created_at=created,
            updated_at=_moment(raw.get("updated_at")) or created,
        )

    # -- rendering ---------------------------------------------------------------------------

    def _render_account(self, account: _Account) -> dict[str, Any]:
        code = account.market_code
        return {
            "id": account.id,
            "name": account.name,
            "market_code": code,
            "exchange_name": code.replace("_", " ").title(),
            "pretty_display_type": code.replace("_", " ").title().replace(" ", ""),
            "api_key_invalid": account.api_key_invalid,
            "api_keys_state": account.api_keys_state,
            "is_locked": account.is_locked,
            "lock_reason": account.lock_reason,
            "auto_balance_error": account.auto_balance_error,
            "autobalance_enabled": False,
            "smart_trading_supported": account.smart_trading_supported,
            "smart_selling_supported": account.smart_trading_supported,
            "trading_supported": True,
            "bots_allowed": True,
            "supported_market_types": ["futures"] if "futures" in code else ["spot"],
            "usd_amount": _s(account.usd_amount),
            "btc_amount": None,
            "created_at": _iso(account.created_at),
            "updated_at": _iso(account.updated_at),
        }

    def _render_deal(self, deal: _Deal, *, with_events: bool = False) -> dict[str, Any]:
        bot = self._bots[deal.bot_id]
        account = self._accounts[deal.account_id]
        quote, _, base = deal.pair.partition("_")
        profit = None
        if deal.current_price and deal.bought_amount and deal.bought_average_price:
            delta = deal.current_price - deal.bought_average_price
            profit = (delta if deal.strategy == "long" else -delta) * deal.bought_amount
        take_profit_price = None
        if deal.take_profit is not None and deal.bought_average_price is not None:
            take_profit_price = deal.bought_average_price * (1 + deal.take_profit / 100)
        payload: dict[str, Any] = {
            "id": deal.id,
            "type": "Deal",
            "bot_id": deal.bot_id,
            "account_id": deal.account_id,
            "bot_name": bot.name,
            "account_name": account.name,
            "pair": deal.pair,
            "from_currency": quote,
            "to_currency": base,
            "status": deal.status,
            "localized_status": _DEAL_TITLES.get(deal.status, "Active"),
            "created_at": _iso(deal.created_at),
            "updated_at": _iso(deal.updated_at),
            "closed_at": _iso(deal.closed_at),
            "finished?": deal.finished,
            "cancellable?": not deal.finished and deal.status not in _PENDING,
            "panic_sellable?": not deal.finished and deal.status not in _PENDING,
            "deal_has_error": deal.deal_has_error,
            "error_message": deal.error_message,
            "failed_message": deal.failed_message,
            "current_price": _s(deal.current_price) if not deal.finished else "0.0",
            "take_profit": _s(deal.take_profit),
            "take_profit_type": "total",
            "take_profit_price": _s(take_profit_price),
            "stop_loss_percentage": _s(deal.stop_loss_percentage),
            "base_order_volume": _s(deal.base_order_volume),
            "safety_order_volume": _s(deal.safety_order_volume),
            "max_safety_orders": 0,
            "bought_amount": _s(deal.bought_amount),
            "bought_average_price": _s(deal.bought_average_price),
            "sold_amount": "0.0",
            "actual_usd_profit": _s(profit),
            "usd_final_profit": _s(profit),
            "market_type": deal.market_type,
            "strategy": deal.strategy,
            "note": None,
        }
        if with_events:
            payload["bot_events"] = [
                {"message": text, "created_at": _iso(when)} for text, when in deal.events
            ]
        return payload

    @staticmethod
    def _smart_trade_profit(trade: _SmartTrade) -> Decimal | None:
        if not (trade.entered_amount and trade.average_enter_price and trade.current_price):
            return None
        delta = trade.current_price - trade.average_enter_price
        return (delta if trade.body["position"]["type"] == "buy" else -delta) * trade.entered_amount

    def _render_smart_trade(self, trade: _SmartTrade) -> dict[str, Any]:
        body = trade.body
        account = self._accounts[trade.account_id]
        position = body["position"]
        units = _dec(position["units"]["value"])
        price = _opt_dec(position.get("price", {}).get("value"))
        side = position["type"]
        instant = _truthy(body.get("instant"))
        skip = _truthy(body.get("skip_enter_step"))
        if instant:
            data_type = f"simple_{side}"
        elif skip:
            data_type = "smart_sell" if side == "buy" else "smart_buy"
        else:
            data_type = "smart_trade" if side == "buy" else "smart_cover"
        status: dict[str, Any] = {
            "type": trade.status,
            "basic_type": trade.status,
            "title": _SMART_TRADE_TITLES.get(trade.status, trade.status),
        }
        if trade.error:
            status["error"] = trade.error
        take_profit = body.get("take_profit") or {"enabled": False}
        steps = [
            {
                "id": number,
                "order_type": step.get("order_type", "limit"),
                "editable": True,
                "units": {"value": _s(units * _dec(step["volume"]) / 100)},
                "price": {
                    "type": step["price"]["type"],
                    "value": _s(_dec(step["price"]["value"])),
                    "percent": None,
                },
                "volume": _s(_dec(step["volume"])),
                "trailing": step.get("trailing") or {"enabled": False, "percent": None},
                "status": {"type": "idle", "basic_type": "idle", "title": "Pending"},
                "position": number,
            }
            for number, step in enumerate(take_profit.get("steps") or (), start=1)
        ]
        profit = trade.profit if trade.frozen else self._smart_trade_profit(trade)
        entered = trade.status not in {"created", "waiting_position"}
        actionable = trade.status not in _TERMINAL_SMART_TRADE and trade.status not in _PENDING
        # docs smart-trade/0_smart_trade_entity documents market_close.status {basic_type, title,
        # error}; the value of a failed close is not documented (corpus
        # threecommas/smart_trade_close_failed_docs_silent).
        market_close = (
            {"status": {"basic_type": "failed", "title": "Failed", "error": trade.market_close_error}}
            if trade.market_close_error
            else {}
        )
        current = _s(trade.current_price)
        return {
            "id": trade.id,
            "version": 2,
            "account": {
                "id": account.id,
                "type": account.market_code,
                "name": account.name,
                "market": account.market_code.replace("_", " ").title(),
                "link": f"/accounts/{account.id}",
            },
            "pair": body["pair"],
            "instant": instant,
            "skip_enter_step": skip,
            "note": "",
            "status": status,
            "leverage": body.get("leverage") or {"enabled": False},
            "position": {
                "type": side,
                "editable": False,
                "order_type": position["order_type"],
                "units": {"value": _s(units), "editable": False},
                "price": {"value": _s(price), "value_without_commission": _s(price), "editable": True},
                "total": {"value": _s(units * price) if price is not None else None},
                "status": (
                    {"type": "finished", "basic_type": "finished", "title": "Finished"}
                    if entered
                    else {"type": "order_placed", "basic_type": "order_placed", "title": "Placed"}
                ),
            },
            "take_profit": {
                "enabled": _truthy(take_profit.get("enabled")),
                "price_type": "value",
                "steps": steps,
            },
            "stop_loss": body.get("stop_loss") or {"enabled": False},
            "market_close": market_close,
            "profit": {"volume": None, "usd": _s(profit), "percent": "0.0", "roe": None},
            "data": {
                "current_price": {"bid": current, "ask": current, "last": current},
                "average_enter_price": _s(trade.average_enter_price),
                "entered_amount": _s(trade.entered_amount),
                "closed_amount": "0.0",
                "cancel_available": actionable,
                "panic_sell_available": actionable and entered,
                # As in the docs' examples: a failed or cancelled trade still says finished false.
                "finished": trade.status == "finished",
                "created_at": _iso(trade.created_at),
                "updated_at": _iso(trade.updated_at),
                "type": data_type,
            },
        }

    # -- API handlers ------------------------------------------------------------------------

    async def _validate(self, request: web.Request) -> web.Response:
        return _json({"valid": True})

    async def _accounts_list(self, request: web.Request) -> web.Response:
        accounts = [
            a
            for a in self._accounts.values()
            if a.owner == _caller(request) and a.paper == self._paper(request)
        ]
        return _json([self._render_account(a) for a in self._page(request, accounts, default_per_page=100)])

    async def _account_show(self, request: web.Request) -> web.Response:
        account = self._own_account(_caller(request), request.match_info["account_id"])
        return _json(self._render_account(account))

    async def _account_update(self, request: web.Request) -> web.Response:
        """``POST /ver1/accounts/update`` (docs account/4_edit_exchange_account): a new exchange
        key reconnects the account; too short a key is the docs' own ``record_invalid`` example."""
        body = self._parse_body(request, await request.read())
        params = {**(body if isinstance(body, dict) else {}), **request.query}
        account = self._own_account(_caller(request), params.get("account_id"))
        errors = {
            name: ["is too short (minimum is 5 characters)"]
            for name in ("api_key", "secret")
            if name in params and len(str(params[name])) < 5
        }
        if errors:
            raise _record_invalid(errors)
        if params.get("name"):
            account.name = str(params["name"])
        if params.get("api_key") and params.get("secret"):
            account.exchange_key = str(params["api_key"])
            account.api_key_invalid, account.api_keys_state = False, "ok"
        account.updated_at = self.clock.now()
        return _json(self._render_account(account), 201)

    async def _load_balances(self, request: web.Request) -> web.Response:
        """``POST …/load_balances`` (docs account/9_…): 422 ``invalid_api_key`` while the exchange
        key is broken; otherwise the balances refresh."""
        account = self._own_account(_caller(request), request.match_info["account_id"])
        if account.api_key_invalid:
            raise _Rejected(422, _EXCHANGE_KEY_INVALID)
        account.balances_loaded_at = account.updated_at = self.clock.now()
        return _json(self._render_account(account), 201)

    async def _bots_list(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope")
        bots = [
            b
            for b in self._bots.values()
            if self._visible(request, b.owner, b.account_id)
            and (scope is None or (scope == "enabled") == b.is_enabled)
        ]
        bots.sort(key=lambda b: b.id, reverse=True)
        limit = min(int(request.query.get("limit", 50)), 1000)
        return _json([self._render_bot(b) for b in bots[:limit]])

    async def _deals_list(self, request: web.Request) -> web.Response:
        query = request.query
        scope = query.get("scope")
        matches: dict[str | None, Callable[[_Deal], bool]] = {
            "active": lambda d: not d.finished,
            "finished": lambda d: d.finished,
            "completed": lambda d: d.status == "completed",
            "cancelled": lambda d: d.status == "cancelled",
            "failed": lambda d: d.status == "failed",
        }
        wanted = matches.get(scope, lambda d: True)
        deals = [
            d
            for d in self._deals.values()
            if self._visible(request, d.owner, d.account_id)
            and wanted(d)
            and str(d.account_id) == query.get("account_id", str(d.account_id))
            and str(d.bot_id) == query.get("bot_id", str(d.bot_id))
        ]
        order = query.get("order", "created_at")
        epoch = datetime.min.replace(tzinfo=UTC)
        deals.sort(
            key=lambda d: (
                (getattr(d, order, None) or epoch, d.id) if order in _DEAL_ORDERS else (d.created_at, d.id)
            ),
            reverse=query.get("order_direction", "desc").lower() != "asc",
        )
        limit = min(int(query.get("limit", 50)), 1000)
        offset = int(query.get("offset", 0))
        return _json([self._render_deal(d) for d in deals[offset : offset + limit]])

    def _own_deal(self, request: web.Request) -> _Deal:
        deal = self._deals.get(_path_id(request, "deal_id"))
        if deal is None or not self._visible(request, deal.owner, deal.account_id):
            raise _Rejected(404, _NOT_FOUND)
        return deal

    async def _deal_show(self, request: web.Request) -> web.Response:
        return _json(self._render_deal(self._own_deal(request), with_events=True))

    async def _deal_orders(self, request: web.Request) -> web.Response:
        deal = self._own_deal(request)
        return _json(
            [
                {
                    "order_id": order.order_id,
                    "order_type": order.side.upper(),
                    "deal_order_type": order.deal_order_type,
                    "cancellable": order.status == "active",
                    "status_string": order.status.capitalize(),
                    "created_at": _iso(order.created_at),
                    "updated_at": _iso(order.updated_at),
                    "quantity": _s(order.amount),
                    "quantity_remaining": _s(order.amount - order.filled),
                    "total": _s(order.filled * order.price),
                    "rate": _s(order.price),
                    "average_price": _s(order.price if order.filled else Decimal("0.0")),
                }
                for order in deal.orders
            ]
        )

    def _own_bot(self, request: web.Request) -> _Bot:
        bot = self._bots.get(_path_id(request, "bot_id"))
        if bot is None or not self._visible(request, bot.owner, bot.account_id):
            raise _Rejected(404, {"error": "Not found"})
        return bot

    async def _bot_show(self, request: web.Request) -> web.Response:
        return _json(self._render_bot(self._own_bot(request)))

    def _render_bot(self, bot: _Bot) -> dict[str, Any]:
        active = [d.id for d in self._deals.values() if d.bot_id == bot.id and not d.finished]
        return {
            "id": bot.id,
            "account_id": bot.account_id,
            "account_name": self._accounts[bot.account_id].name,
            "name": bot.name,
            "type": "Bot::SingleBot" if len(bot.pairs) == 1 else "Bot::MultiBot",
            "is_enabled": bot.is_enabled,
            "pairs": bot.pairs,
            "strategy": bot.strategy,
            "max_active_deals": bot.max_active_deals,
            "active_deals_count": len(active),
            "base_order_volume": _s(bot.base_order_volume),
            "safety_order_volume": _s(bot.safety_order_volume),
            "take_profit": _s(bot.take_profit),
            "stop_loss_percentage": _s(bot.stop_loss_percentage),
            "created_at": _iso(bot.created_at),
        }

    async def _start_new_deal(self, request: web.Request) -> web.Response:
        bot = self._own_bot(request)
        body = self._parse_body(request, await request.read())
        params = {**(body if isinstance(body, dict) else {}), **request.query}
        pair = params.get("pair") or (bot.pairs[0] if len(bot.pairs) == 1 else None)
        if pair is None:
            raise _record_invalid({"pair": ["is missing"]})
        if pair not in bot.pairs:
            raise _record_invalid({"pair": ["is not among the bot's pairs"]})
        if not bot.is_enabled and _truthy(params.get("only_for_enabled")):
            raise _Rejected(422, {"error": "Bot is disabled"})
        active = sum(1 for d in self._deals.values() if d.bot_id == bot.id and not d.finished)
        if active >= bot.max_active_deals:
            raise _Rejected(422, {"error": "Max active deals reached"})
        bot.is_enabled = True
        deal_id = self.add_deal(
            bot.owner, bot.account_id, pair=pair, status="base_order_placed", bot_id=bot.id
        )
        return _json(self._render_deal(self._deals[deal_id], with_events=True), 201)

    async def _smart_trades_list(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "all")
        matches: dict[str, Callable[[_SmartTrade], bool]] = {
            "active": lambda t: t.status not in _TERMINAL_SMART_TRADE,
            "finished": lambda t: t.status in _TERMINAL_SMART_TRADE,
            "successfully_finished": lambda t: t.status == "finished",
            "successfully_finish": lambda t: t.status == "finished",
            "cancelled": lambda t: t.status == "cancelled",
            "failed": lambda t: t.status == "failed",
        }
        wanted = matches.get(status, lambda t: True)
        account_id = request.query.get("account_id")
        trades = [
            t
            for t in self._smart_trades.values()
            if self._visible(request, t.owner, t.account_id)
            and wanted(t)
            and (account_id is None or str(t.account_id) == account_id)
        ]
        # 3Commas orders by status unless told otherwise (docs smart-trade/4_…): without an
        # explicit order_by the first page is not the most recent trades.
        order_by = request.query.get("order_by", "status")
        descending = request.query.get("order_direction", "desc").lower() != "asc"
        sort_keys: dict[str, Callable[[_SmartTrade], Any]] = {
            "updated_at": lambda t: (t.updated_at, t.id),
            "created_at": lambda t: (t.created_at, t.id),
            "closed_at": lambda t: (
                t.updated_at if t.status in _TERMINAL_SMART_TRADE else t.created_at,
                t.id,
            ),
            "status": lambda t: (t.status, t.id),
        }
        trades.sort(key=sort_keys.get(order_by, sort_keys["status"]), reverse=descending)
        return _json([self._render_smart_trade(t) for t in self._page(request, trades, default_per_page=10)])

    async def _smart_trade_show(self, request: web.Request) -> web.Response:
        trade = self._smart_trades.get(_path_id(request, "smart_trade_id"))
        if trade is None or not self._visible(request, trade.owner, trade.account_id):
            raise _Rejected(404, {"error": "Not found", "error_description": "Smart Trade not found"})
        return _json(self._render_smart_trade(trade))

    async def _smart_trade_create(self, request: web.Request) -> web.Response:
        body = self._parse_body(request, await request.read())
        if not isinstance(body, dict):
            raise _record_invalid({"base": ["send the SmartTrade as a JSON object"]})
        trade = self._create_smart_trade(_caller(request), body)
        return _json(self._render_smart_trade(trade), 201)

    def _create_smart_trade(self, api_key: str, body: dict[str, Any]) -> _SmartTrade:
        """Validate like 3Commas (422 ``record_invalid`` naming the fields) and store the trade."""
        errors: dict[str, list[str]] = {}
        for name in ("account_id", "pair"):
            if body.get(name) in (None, ""):
                errors[name] = ["is missing"]
        position: dict[str, Any] = body["position"] if isinstance(body.get("position"), dict) else {}
        if position.get("type") not in ("buy", "sell"):
            errors["position[type]"] = ["is missing or invalid"]
        if position.get("order_type") not in ("market", "limit"):
            errors["position[order_type]"] = ["is missing or invalid"]
        try:
            if _dec((position.get("units") or {}).get("value")) <= 0:
                errors["position[units][value]"] = ["must be greater than 0"]
        except ValueError:
            errors["position[units][value]"] = ["is missing"]
        if position.get("order_type") == "limit" and (position.get("price") or {}).get("value") is None:
            errors["position[price][value]"] = ["is missing"]
        instant = _truthy(body.get("instant"))
        if not instant:
            errors.update(self._target_errors(body))
        if errors:
            raise _record_invalid(errors)
        account = self._own_account(api_key, body["account_id"])
        if not account.smart_trading_supported:
            raise _Rejected(422, {"error": "Smart trading is not supported for this account"})
        now = self.clock.now()
        entered = position["order_type"] == "market" or _truthy(body.get("skip_enter_step"))
        price = self._prices.get(body["pair"])
        units = _dec(position["units"]["value"])
        trade = _SmartTrade(
            id=next(self._smart_trade_ids),
            owner=api_key,
            account_id=account.id,
            body=body,
            status=("finished" if instant else "waiting_targets") if entered else "waiting_position",
            created_at=now,
            updated_at=now,
            current_price=price,
            entered_amount=units if entered else Decimal(0),
            average_enter_price=(
                (_opt_dec((position.get("price") or {}).get("value")) or price) if entered else None
            ),
        )
        self._smart_trades[trade.id] = trade
        return trade

    @staticmethod
    def _target_errors(body: Mapping[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        take_profit = body.get("take_profit") if isinstance(body.get("take_profit"), dict) else None
        stop_loss = body.get("stop_loss") if isinstance(body.get("stop_loss"), dict) else None
        if take_profit is None or "enabled" not in take_profit:
            errors["take_profit[enabled]"] = ["is missing"]
        elif _truthy(take_profit["enabled"]):
            steps = take_profit.get("steps") or []
            if not steps or len(steps) > 8:
                errors["take_profit[steps]"] = ["must have 1 to 8 steps"]
            total = Decimal(0)
            for number, step in enumerate(steps):
                price = step.get("price") or {}
                if price.get("type") not in ("bid", "ask", "last"):
                    errors[f"take_profit[steps][{number}][price][type]"] = ["is missing"]
                if price.get("value") is None:
                    errors[f"take_profit[steps][{number}][price][value]"] = ["is missing"]
                try:
                    total += _dec(step.get("volume"))
                except ValueError:
                    errors[f"take_profit[steps][{number}][volume]"] = ["is missing"]
            if steps and total != 100:
                errors["take_profit[steps]"] = ["volumes must sum to 100"]
        if stop_loss is None or "enabled" not in stop_loss:
            errors["stop_loss[enabled]"] = ["is missing"]
        elif _truthy(stop_loss["enabled"]):
            price = (stop_loss.get("conditional") or {}).get("price") or {}
            if price.get("value") is None:
                errors["stop_loss[conditional][price][value]"] = ["is missing"]
            if price.get("type") not in ("bid", "ask", "last"):
                errors["stop_loss[conditional][price][type]"] = ["is missing"]
        return errors

    @staticmethod
    def _page(request: web.Request, items: list[Any], *, default_per_page: int) -> list[Any]:
        page = max(1, int(request.query.get("page", 1)))
        per_page = min(100, max(1, int(request.query.get("per_page", default_per_page))))
        return items[(page - 1) * per_page : page * per_page]

    # -- control over HTTP -------------------------------------------------------------------

    async def _control_requests(self, request: web.Request) -> web.Response:
        return _json([asdict(entry) for entry in self.requests])

    async def _control_call(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if name not in self._CONTROL_METHODS:
            return _json({"error": f"unknown control method {name!r}"}, 404)
        kwargs = await request.json() if request.can_read_body else {}
        try:
            result = getattr(self, name)(**kwargs)
        except _Rejected as rejected:
            return _json(rejected.body, 400)
        except (KeyError, TypeError, ValueError) as error:
            return _json({"error": str(error)}, 400)
        if isinstance(result, LocalTcKey):
            return _json(asdict(result))
        return _json({"id": result} if isinstance(result, int) else {"ok": True})
