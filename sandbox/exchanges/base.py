"""Shared machinery of the local exchange servers.

The monitor's job is to tell a dead key from a slow exchange, so the fakes have to fail the way the real
exchanges fail: the same signature checks, the same error codes and HTTP statuses, the same request
weights and bans. Everything that does not depend on one exchange's wire format lives here, once:

* the request pipeline (faults → IP ban → weight → authentication → per-key limit → handler),
* keys and their states, balances, orders and markets,
* fixed-window weight counters driven by an injectable clock, so tests move time instead of sleeping,
* the JSON control API under ``/__control/`` that lets another process (the sandbox) drive a server.

Each exchange subclass supplies its routes, how it reads credentials from a request, how it signs, and
how each failure looks on its wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import secrets
import string
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from ssl import SSLContext
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import parse_qsl

from aiohttp import web

from sandbox import corpus

KeyState = Literal["valid", "revoked", "ip_restricted", "expired", "read_only", "withdraw_enabled"]
KEY_STATES: tuple[str, ...] = get_args(KeyState)
FaultKind = Literal[
    "latency", "status_5xx", "maintenance", "timeout", "rate_limit", "ban", "key_ban", "lost_answer"
]
FAULTS: tuple[str, ...] = get_args(FaultKind)
Scope = Literal["read", "trade", "futures_trade"]
Side = Literal["buy", "sell"]

# An address from TEST-NET-3 (RFC 5737): no local caller ever has it, so a whitelist holding only this
# address excludes whoever is calling.
FOREIGN_IP = "203.0.113.7"
# Margin locked by a contract order is notional / leverage; one fixed leverage keeps the arithmetic obvious.
CONTRACT_LEVERAGE = Decimal(10)
# How long a "timeout" fault holds a request when nobody releases it.
DEFAULT_HANG_SECONDS = 300.0


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """Exact decimal from user input; going through ``str`` keeps ``0.1`` exactly ``0.1``."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def plain(value: Decimal) -> str:
    """Decimal as the shortest plain string (``"0.001"``, ``"65000"``), as Bybit and OKX print numbers."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def fixed(value: Decimal, places: int = 8) -> str:
    """Decimal with a fixed number of places, as Binance prints numbers (``"0.00100000"``)."""
    return f"{value:.{places}f}"


def decimals(step: Decimal) -> int:
    """Number of decimal places a tick or step size allows."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_side(value: object) -> Side | None:
    """``"BUY"``/``"Buy"``/``"buy"`` → ``"buy"``; anything else → None."""
    side = str(value).lower()
    return "buy" if side == "buy" else "sell" if side == "sell" else None


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_z(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and no fraction, as Bybit prints ``createdAt``/``expiredAt``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_token(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def hmac_base64(secret: str, payload: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


@dataclass
class Holding:
    """One asset in one wallet. ``locked`` is what open orders hold; ``total = free + locked`` always."""

    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass
class LocalKey:
    """An API key as the exchange stores it.

    ``can_trade``/``can_withdraw``/``ip_whitelist``/``expires_at`` are the key's configuration; ``state``
    is a scenario laid over it (see :meth:`LocalExchange.set_key_state`), so setting ``"valid"`` again
    restores the configuration instead of guessing what it was.
    """

    api_key: str
    secret: str
    passphrase: str | None
    uid: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    can_trade: bool
    can_withdraw: bool
    ip_whitelist: list[str] | None
    last_used_at: datetime
    state: KeyState = "valid"
    forced_expiry: datetime | None = None
    wallets: dict[str, dict[str, Holding]] = field(default_factory=dict)

    @property
    def whitelist(self) -> list[str] | None:
        """IPs the key is bound to right now; ``None`` means unrestricted."""
        return [FOREIGN_IP] if self.state == "ip_restricted" else self.ip_whitelist

    @property
    def trading_allowed(self) -> bool:
        return self.can_trade and self.state != "read_only"

    @property
    def withdrawals_allowed(self) -> bool:
        return self.can_withdraw or self.state == "withdraw_enabled"

    def holding(self, wallet: str, asset: str) -> Holding:
        return self.wallets.setdefault(wallet, {}).setdefault(asset, Holding())

    def to_json(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "secret": self.secret,
            "passphrase": self.passphrase,
            "uid": self.uid,
            "label": self.label,
            "state": self.state,
            "can_trade": self.can_trade,
            "can_withdraw": self.can_withdraw,
            "ip_whitelist": self.ip_whitelist,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


@dataclass(frozen=True)
class MarketSpec:
    """Exchange-neutral description of a market; each exchange renders it in its own format."""

    symbol: str  # ccxt unified symbol
    price: str
    tick: str
    step: str
    min_qty: str
    max_qty: str
    min_notional: str
    contract_size: str = "1"


# Realistic filters for the markets every fake lists. Perpetuals are USDT-settled linear contracts.
MARKET_CATALOGUE: tuple[MarketSpec, ...] = (
    MarketSpec("BTC/USDT", "65000", "0.01", "0.00001", "0.00001", "9000", "5"),
    MarketSpec("ETH/USDT", "3500", "0.01", "0.0001", "0.0001", "9000", "5"),
    MarketSpec("SOL/USDT", "150", "0.01", "0.001", "0.001", "90000", "5"),
    MarketSpec("XRP/USDT", "0.6", "0.0001", "0.1", "0.1", "9000000", "5"),
    MarketSpec("BNB/USDT", "600", "0.01", "0.001", "0.001", "9000", "5"),
    MarketSpec("BTC/USDT:USDT", "65010", "0.1", "0.001", "0.001", "1000", "100"),
    MarketSpec("ETH/USDT:USDT", "3501", "0.01", "0.001", "0.001", "10000", "20"),
)


@dataclass
class Market:
    """A listed market with its current price (movable through :meth:`LocalExchange.set_price`)."""

    symbol: str
    id: str
    base: str
    quote: str
    settle: str | None
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    contract_size: Decimal
    price: Decimal
    open_price: Decimal

    @property
    def is_contract(self) -> bool:
        return self.settle is not None

    @property
    def is_inverse(self) -> bool:
        """A coin-margined contract: settled in its base coin, sized in USD (``BTC/USD:BTC``)."""
        return self.settle is not None and self.settle == self.base

    @property
    def bid(self) -> Decimal:
        return self.price - self.tick

    @property
    def ask(self) -> Decimal:
        return self.price + self.tick

    @property
    def high(self) -> Decimal:
        return max(self.price, self.open_price)

    @property
    def low(self) -> Decimal:
        return min(self.price, self.open_price)

    @property
    def change_pct(self) -> Decimal:
        return (self.price - self.open_price) / self.open_price * 100


@dataclass
class LocalOrder:
    """A resting limit order and the funds it holds in its wallet."""

    order_id: str
    client_order_id: str
    api_key: str
    market: Market
    side: Side
    price: Decimal
    amount: Decimal
    created_at: datetime
    wallet: str
    locked_asset: str
    locked_amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.order_id,
            "client_order_id": self.client_order_id,
            "symbol": self.market.symbol,
            "side": self.side,
            "price": float(self.price),
            "amount": float(self.amount),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it; ``error_code`` is the exchange's own code (``"-2015"``…).

    ``at`` is when it was answered (``time.monotonic()``), for gap analysis in real-time tests.
    """

    method: str
    path: str
    api_key: str | None
    weight: int
    status: int
    error_code: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """An injected failure; ``remaining=None`` means until cleared."""

    kind: FaultKind
    remaining: int | None
    private_only: bool
    latency_ms: int
    status: int | None
    hold_s: float | None
    method: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.kind,
            "method": self.method,
            "remaining": self.remaining,
            "private_only": self.private_only,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "hold_s": self.hold_s,
        }


class InsufficientBalance(ValueError):
    """The wallet cannot cover what a new order would lock."""


# --------------------------------------------------------------------------------------------------
# Wire plumbing
# --------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the server answers; ``error_code`` only feeds :class:`RequestRecord`."""

    status: int = 200
    json: Any = None
    text: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None

    def to_response(self) -> web.Response:
        body = self.text if self.text is not None else json.dumps(self.json, separators=(",", ":"))
        return web.Response(
            status=self.status, text=body, content_type=self.content_type, headers=self.headers
        )


def answer(case_id: str, **fill: Any) -> Reply:
    """The reply recorded in corpus case ``case_id`` (tests/corpus), ``$placeholders`` filled in.

    Answers that stand for a documented real response come from here, so the fake and the
    classifier tests share one recorded truth (see sandbox/corpus.py).
    """
    recorded = corpus.case(case_id)
    headers = recorded.render_headers(**fill)
    content_type = headers.pop("Content-Type", "application/json")
    return Reply(
        status=recorded.status,
        text=recorded.render(**fill),
        content_type=content_type,
        headers=headers,
        error_code=recorded.code,
    )


def html_reply(status: int, detail: str = "") -> Reply:
    """A gateway/CDN error page: no JSON, so ccxt falls back to its HTTP-status table."""
    title = HTTPStatus(status).phrase
    page = (
        f"<html><head><title>{status} {title}</title></head><body><center><h1>{status} {title}</h1>"
        f"</center>{detail}<hr><center>nginx</center></body></html>"
    )
    return Reply(status=status, text=page, content_type="text/html")


class Rejected(Exception):
    """Raised by handlers and their helpers to answer with an error reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error_code)
        self.reply = reply


Weight = int | Callable[[Mapping[str, str]], int]


def by_symbol(with_symbol: int, without: int, param: str = "symbol") -> Callable[[Mapping[str, str]], int]:
    """Weight that depends on whether the request names one market, as Binance's openOrders/tickers do."""
    return lambda params: with_symbol if params.get(param) else without


@dataclass(frozen=True)
class Endpoint:
    """A served route. ``pool`` defaults to the exchange's primary pool; ``key_limit`` is a per-key,
    per-endpoint request cap (Bybit/OKX style) counted in ``key_window_s`` windows."""

    handler: Callable[[Call], Reply]
    signed: bool = False
    scope: Scope = "read"
    weight: Weight = 1
    pool: str | None = None
    key_limit: int | None = None

    def weight_for(self, params: Mapping[str, str]) -> int:
        return self.weight(params) if callable(self.weight) else self.weight


@dataclass
class Call:
    """A parsed request travelling through the pipeline."""

    method: str
    path: str
    ip: str
    headers: Mapping[str, str]
    raw_query: str
    raw_body: str
    params: dict[str, str]
    body: Any
    endpoint: Endpoint | None = None
    key: LocalKey | None = None
    api_key: str | None = None
    credentials: Credentials | None = None
    weight: int = 0
    key_used: int | None = None

    @property
    def signed_key(self) -> LocalKey:
        """The authenticated key; the pipeline sets it before any signed endpoint's handler runs."""
        if self.key is None:
            raise RuntimeError(f"{self.path} is not a signed endpoint")
        return self.key


@dataclass(frozen=True)
class Credentials:
    """What a signed request claims; ``payload`` is the exact text the client should have signed."""

    api_key: str
    signature: str
    payload: str
    timestamp_ms: int
    recv_window_ms: int
    passphrase: str | None = None


class AuthFailure(Enum):
    MALFORMED_KEY = "malformed_key"
    UNKNOWN_KEY = "unknown_key"
    BAD_PASSPHRASE = "bad_passphrase"
    CLOCK_SKEW = "clock_skew"
    BAD_SIGNATURE = "bad_signature"
    IP_NOT_ALLOWED = "ip_not_allowed"
    EXPIRED = "expired"
    NO_PERMISSION = "no_permission"


@dataclass(frozen=True)
class Pool:
    """A weight bucket counted per caller IP in fixed windows; ``header`` echoes the used weight."""

    window_s: float
    limit: int | None
    header: str | None = None


class WindowCounter:
    """Fixed-window counters keyed by anything hashable.

    Binance resets its weight at each wall-clock minute, so windows are aligned to multiples of their
    length on the injected clock rather than sliding.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[tuple[Any, ...], tuple[int, int]] = {}

    def _window(self, window_s: float) -> int:
        return math.floor(self._clock() / window_s)

    def add(self, bucket: tuple[Any, ...], window_s: float, amount: int) -> int:
        window = self._window(window_s)
        seen_window, used = self._counts.get(bucket, (window, 0))
        used = (used if seen_window == window else 0) + amount
        self._counts[bucket] = (window, used)
        return used

    def used(self, bucket: tuple[Any, ...], window_s: float) -> int:
        seen_window, used = self._counts.get(bucket, (None, 0))
        return used if seen_window == self._window(window_s) else 0

    def used_by_prefix(self, prefix: str, window_s: float) -> int:
        return sum(self.used(bucket, window_s) for bucket in self._counts if bucket[0] == prefix)

    def seconds_left(self, window_s: float) -> float:
        return (self._window(window_s) + 1) * window_s - self._clock()


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class LocalExchange(ABC):
    """An exchange REST API on one host:port, with keys, markets, orders and fault injection.

    ``clock`` (seconds, monotonic) drives rate-limit windows and bans; ``wall`` (epoch seconds) is the
    exchange's own time, used for signature timestamps, key expiry and the timestamps it reports.
    Give the server a ``wall`` ahead of real time to reproduce clock skew.
    """

    exchange_id: ClassVar[str]
    api_key_header: ClassVar[str]
    uses_passphrase: ClassVar[bool] = False
    pools: ClassVar[Mapping[str, Pool]]
    primary_pool: ClassVar[str]
    main_wallet: ClassVar[str] = "spot"
    key_window_s: ClassVar[float] = 1.0
    future_tolerance_ms: ClassVar[int] = 1000
    ban_after_strikes: ClassVar[int | None] = None
    ban_seconds: ClassVar[float] = 120.0
    market_overrides: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    own_markets: ClassVar[tuple[MarketSpec, ...]] = ()
    """Markets only this exchange lists, besides :data:`MARKET_CATALOGUE` (Binance's COIN-M)."""
    first_order_id: ClassVar[int] = 1

    def __init__(
        self, clock: Callable[[], float] | None = None, *, wall: Callable[[], float] | None = None
    ) -> None:
        self._clock = clock or time.monotonic
        self._wall = wall or time.time
        self.keys: dict[str, LocalKey] = {}
        self.markets: dict[str, Market] = {
            spec.symbol: self._build_market(spec) for spec in (*MARKET_CATALOGUE, *self.own_markets)
        }
        self.orders: dict[str, LocalOrder] = {}
        # Orders no longer open, with how they ended ("filled" / "cancelled"), for order queries.
        self.finished: dict[str, tuple[LocalOrder, str]] = {}
        self.requests: list[RequestRecord] = []
        self.limits: dict[str, int | None] = {name: pool.limit for name, pool in self.pools.items()}
        self.hang_seconds = DEFAULT_HANG_SECONDS
        self._counter = WindowCounter(self._clock)
        self._faults: list[Fault] = []
        self._order_seq = itertools.count()
        self._banned_until: dict[str, float] = {}
        self._release = asyncio.Event()
        self._closed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._routes = self.routes()
        self.url: str | None = None
        self.port: int | None = None

    # ---- exchange-specific hooks ------------------------------------------------------------------

    @abstractmethod
    def routes(self) -> dict[tuple[str, str], Endpoint]:
        """``{(METHOD, path): Endpoint}`` for everything the fake serves."""

    @abstractmethod
    def market_id(self, spec: MarketSpec) -> str: ...

    @abstractmethod
    def new_credentials(self) -> tuple[str, str, str | None]:
        """A fresh ``(api_key, secret, passphrase)`` shaped like the real exchange's."""

    @abstractmethod
    def looks_like_key(self, api_key: str) -> bool:
        """Whether an unknown key is well formed; decides "malformed" versus "does not exist"."""

    def new_order_id(self) -> str:
        """Increasing numeric ids, the way Binance and OKX hand them out."""
        return str(self.first_order_id + next(self._order_seq))

    @abstractmethod
    def policy_expiry(self, key: LocalKey) -> datetime | None:
        """When the exchange's key-lifetime policy ends the key (or its trading), absent an explicit date."""

    @abstractmethod
    def read_credentials(self, call: Call) -> Credentials | Reply:
        """Pull the signing material out of a request, or answer a malformed/missing-header error."""

    @abstractmethod
    def signature(self, secret: str, payload: str) -> str: ...

    @abstractmethod
    def auth_error(self, failure: AuthFailure, call: Call) -> Reply: ...

    @abstractmethod
    def fault_reply(self, fault: Fault, call: Call) -> Reply:
        """The wire shape of an injected ``status_5xx``/``maintenance``/``rate_limit`` fault."""

    @abstractmethod
    def rate_limit_reply(self, call: Call, retry_after_s: float) -> Reply:
        """Answer for a caller over a weight or per-key limit."""

    @abstractmethod
    def ban_reply(self, call: Call, retry_after_s: float) -> Reply:
        """Answer for a banned IP (also the ``ban`` fault)."""

    def key_is_gone(self, key: LocalKey) -> bool:
        """Whether the exchange treats the key as deleted (OKX also deletes expired keys)."""
        return key.state == "revoked"

    def expiry_blocks(self, endpoint: Endpoint) -> bool:
        """Whether an expired key is refused on this endpoint (Binance only loses spot trading)."""
        return True

    def wallet_for(self, market: Market) -> str:
        return self.main_wallet

    def decorate(self, call: Call, reply: Reply) -> None:
        """Echo the caller's used weight in the pool's header (Binance's ``X-MBX-USED-WEIGHT-1M``)."""
        if call.endpoint is None:
            return
        pool = self.pool_of(call.endpoint)
        header = self.pools[pool].header
        if header:
            reply.headers[header] = str(self.used_weight_in(pool, call.ip))

    def pool_of(self, endpoint: Endpoint) -> str:
        return endpoint.pool or self.primary_pool

    def not_found(self, call: Call) -> Reply:
        return html_reply(404)

    def gateway_timeout(self) -> Reply:
        return html_reply(504)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: SSLContext | None = None
    ) -> str:
        """Serve on ``host:port`` (0: a free port), over TLS when ``ssl_context`` is given (tests serve
        the exchange's real hostnames that way, see tests/production_net.py); returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/__control/{action:.*}", self._control)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._closed = asyncio.Event()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.port = bound_port
        self.url = f"{'https' if ssl_context else 'http'}://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        """Stop serving; held ("timeout") and delayed requests are let go first so shutdown is quick."""
        self._closed.set()
        self.release_hung()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- time -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    def now_ms(self) -> int:
        return int(self._wall() * 1000)

    # ---- keys -------------------------------------------------------------------------------------

    def add_key(
        self,
        api_key: str | None = None,
        secret: str | None = None,
        passphrase: str | None = None,
        *,
        balances: Mapping[str, float | str] | None = None,
        can_trade: bool = True,
        can_withdraw: bool = False,
        ip_whitelist: list[str] | None = None,
        created_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> LocalKey:
        """Register a key. ``expires_at=None`` applies the exchange's lifetime policy (see ``policy_expiry``);
        ``balances`` fill the main wallet (spot on Binance, the unified/trading account elsewhere)."""
        generated = self.new_credentials()
        created = created_at or self.now()
        key = LocalKey(
            api_key=api_key or generated[0],
            secret=secret or generated[1],
            passphrase=(passphrase or generated[2]) if self.uses_passphrase else None,
            uid=str(100_000_000 + len(self.keys) * 7919 + 1),
            label=f"keysentry-{len(self.keys) + 1}",
            created_at=created,
            expires_at=expires_at,
            can_trade=can_trade,
            can_withdraw=can_withdraw,
            ip_whitelist=list(ip_whitelist) if ip_whitelist is not None else None,
            last_used_at=created,
        )
        for asset, amount in (balances if balances is not None else {"USDT": 1000.0, "BTC": 0.1}).items():
            key.holding(self.main_wallet, asset).free = to_decimal(amount)
        self.keys[key.api_key] = key
        return key

    def key(self, api_key: str) -> LocalKey:
        try:
            return self.keys[api_key]
        except KeyError:
            raise KeyError(f"{self.exchange_id}: no key {api_key!r}") from None

    def set_key_state(self, api_key: str, state: KeyState) -> None:
        """Lay a scenario over the key: ``revoked`` (deleted), ``ip_restricted`` (bound to an IP that is not
        the caller's), ``expired`` (its lifetime ran out now), ``read_only`` (trading removed),
        ``withdraw_enabled`` (withdrawals added), ``valid`` (back to its configuration, freshly used)."""
        if state not in KEY_STATES:
            raise ValueError(f"unknown key state {state!r}; expected one of {KEY_STATES}")
        key = self.key(api_key)
        key.state = state
        key.forced_expiry = self.now() if state == "expired" else None
        if state == "valid":
            key.last_used_at = self.now()

    def key_expiry(self, key: LocalKey) -> datetime | None:
        if key.forced_expiry is not None:
            return key.forced_expiry
        return key.expires_at if key.expires_at is not None else self.policy_expiry(key)

    def is_expired(self, key: LocalKey) -> bool:
        expiry = self.key_expiry(key)
        return expiry is not None and expiry <= self.now()

    def set_balance(
        self, api_key: str, asset: str, amount: float | str, *, wallet: str | None = None
    ) -> None:
        """Set the free amount of one asset (Binance also has ``wallet="futures"``)."""
        self.key(api_key).holding(wallet or self.main_wallet, asset).free = to_decimal(amount)

    def balances(self, api_key: str, wallet: str | None = None) -> dict[str, dict[str, float]]:
        """``{asset: {"free", "used", "total"}}`` of one wallet, for assertions."""
        holdings = self.key(api_key).wallets.get(wallet or self.main_wallet, {})
        return {
            asset: {"free": float(h.free), "used": float(h.locked), "total": float(h.total)}
            for asset, h in holdings.items()
        }

    # ---- markets ----------------------------------------------------------------------------------

    def _build_market(self, spec: MarketSpec) -> Market:
        values = {**spec.__dict__, **self.market_overrides.get(spec.symbol, {})}
        pair, _, settle = spec.symbol.partition(":")
        base, quote = pair.split("/")
        price = to_decimal(values["price"])
        return Market(
            symbol=spec.symbol,
            id=self.market_id(spec),
            base=base,
            quote=quote,
            settle=settle or None,
            tick=to_decimal(values["tick"]),
            step=to_decimal(values["step"]),
            min_qty=to_decimal(values["min_qty"]),
            max_qty=to_decimal(values["max_qty"]),
            min_notional=to_decimal(values["min_notional"]),
            contract_size=to_decimal(values["contract_size"]),
            price=price,
            open_price=price,
        )

    def market(self, symbol: str) -> Market:
        try:
            return self.markets[symbol]
        except KeyError:
            raise KeyError(f"{self.exchange_id}: no market {symbol!r}") from None

    def market_by_id(self, market_id: str, *, contract: bool) -> Market | None:
        return next(
            (m for m in self.markets.values() if m.id == market_id and m.is_contract == contract),
            None,
        )

    def usd_price(self, asset: str) -> Decimal:
        """Value of one unit in USD, from the asset's USDT spot market (0 when not listed)."""
        if asset in ("USDT", "USDC", "USD"):
            return Decimal(1)
        market = self.markets.get(f"{asset}/USDT")
        return market.price if market else Decimal(0)

    def set_price(self, symbol: str, price: float | str) -> None:
        """Move one market's last price; tickers and the 24h change follow it."""
        self.market(symbol).price = to_decimal(price)

    # ---- orders -----------------------------------------------------------------------------------

    def add_order(
        self,
        api_key: str,
        symbol: str,
        side: Side,
        price: float | str,
        amount: float | str,
        *,
        created_at: datetime | None = None,
        client_order_id: str | None = None,
        wallet: str | None = None,
    ) -> str:
        """Rest a limit order for a key, locking its funds; returns the exchange order id.
        ``wallet``: another wallet than the market's own (Binance ``margin`` for a spot market)."""
        order = self.place_order(
            self.key(api_key),
            self.market(symbol),
            side,
            to_decimal(price),
            to_decimal(amount),
            client_order_id=client_order_id,
            created_at=created_at,
            wallet=wallet,
        )
        return order.order_id

    def place_order(
        self,
        key: LocalKey,
        market: Market,
        side: Side,
        price: Decimal,
        amount: Decimal,
        *,
        client_order_id: str | None = None,
        created_at: datetime | None = None,
        wallet: str | None = None,
    ) -> LocalOrder:
        """Lock funds and rest the order. A buy locks quote, a sell locks base; a contract order locks
        settle-currency margin of notional / leverage on either side."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        if price <= 0 or amount <= 0:
            raise ValueError("price and amount must be positive")
        if market.is_inverse:  # contracts of contract_size USD each: the notional in coin
            asset, needed = market.base, amount * market.contract_size / price / CONTRACT_LEVERAGE
        elif market.is_contract:
            asset, needed = (
                market.settle or market.quote,
                price * amount * market.contract_size / CONTRACT_LEVERAGE,
            )
        elif side == "buy":
            asset, needed = market.quote, price * amount
        else:
            asset, needed = market.base, amount
        wallet = wallet or self.wallet_for(market)
        holding = key.holding(wallet, asset)
        if holding.free < needed:
            raise InsufficientBalance(f"{asset}: need {needed}, free {holding.free}")
        holding.free -= needed
        holding.locked += needed
        order_id = self.new_order_id()
        order = LocalOrder(
            order_id=order_id,
            client_order_id=client_order_id or f"ks{order_id[-12:]}{len(self.orders):04d}",
            api_key=key.api_key,
            market=market,
            side=side,
            price=price,
            amount=amount,
            created_at=created_at or self.now(),
            wallet=wallet,
            locked_asset=asset,
            locked_amount=needed,
        )
        self.orders[order_id] = order
        return order

    def find_order(
        self, key: LocalKey, market: Market, order_id: str | None, client_order_id: str | None
    ) -> LocalOrder | None:
        for order in self.orders.values():
            if order.api_key != key.api_key or order.market is not market:
                continue
            if (order_id and order.order_id == order_id) or (
                client_order_id and order.client_order_id == client_order_id
            ):
                return order
        return None

    def cancel_order(self, api_key: str, order_id: str) -> bool:
        """Cancel one of the key's orders as the exchange would; False if it has no such open order."""
        order = self.orders.get(order_id)
        if order is None or order.api_key != api_key:
            return False
        self.drop_order(order)
        return True

    def drop_order(self, order: LocalOrder) -> None:
        """Remove the order and give its locked funds back; it is remembered as cancelled."""
        del self.orders[order.order_id]
        holding = self.key(order.api_key).holding(order.wallet, order.locked_asset)
        holding.locked -= order.locked_amount
        holding.free += order.locked_amount
        self.finished[order.order_id] = (order, "cancelled")

    def fill_order(self, api_key: str, order_id: str) -> None:
        """The order fills completely: its locked funds are spent, the bought asset (spot) credited."""
        order = self.orders.get(order_id)
        if order is None or order.api_key != api_key:
            raise KeyError(f"{self.exchange_id}: no open order {order_id!r} of {api_key!r}")
        del self.orders[order_id]
        key = self.key(api_key)
        key.holding(order.wallet, order.locked_asset).locked -= order.locked_amount
        if not order.market.is_contract:
            bought, amount = (
                (order.market.base, order.amount)
                if order.side == "buy"
                else (order.market.quote, order.amount * order.price)
            )
            key.holding(order.wallet, bought).free += amount
        self.finished[order_id] = (order, "filled")

    def key_orders(self, key: LocalKey, *, contract: bool | None = None) -> list[LocalOrder]:
        return [
            order
            for order in self.orders.values()
            if order.api_key == key.api_key and (contract is None or order.market.is_contract == contract)
        ]

    def open_orders(self, api_key: str) -> list[dict[str, Any]]:
        return [order.to_json() for order in self.key_orders(self.key(api_key))]

    # ---- faults -----------------------------------------------------------------------------------

    def inject(
        self,
        fault: FaultKind,
        *,
        times: int | None = None,
        private_only: bool = True,
        latency_ms: int = 0,
        status: int | None = None,
        hold_s: float | None = None,
        method: str | None = None,
    ) -> None:
        """Make the next requests fail. ``times`` limits it to N matching requests; ``latency_ms`` delays
        the reply first (it is the whole fault for ``"latency"``); ``status`` turns ``status_5xx`` into a
        bare HTML page with that status; ``hold_s`` bounds a ``timeout`` hold (then 504), otherwise the
        request waits for :meth:`release_hung` or :meth:`close` and is then served normally.
        ``lost_answer`` carries the request out and answers 504, as Binance documents: "the API
        successfully sent the message but not get a response within the timeout period … the
        execution status is UNKNOWN and could have been a success" (Binance spot API, HTTP return
        codes). ``method`` limits the fault to requests of that HTTP method (e.g. ``DELETE``)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self._faults.append(Fault(fault, times, private_only, latency_ms, status, hold_s, method))

    def clear_faults(self) -> None:
        self._faults.clear()

    def release_hung(self) -> None:
        """Let every request held by a ``timeout`` fault go on; later ones are held again."""
        self._release.set()
        self._release = asyncio.Event()

    @property
    def faults(self) -> list[Fault]:
        return list(self._faults)

    # ---- weight -----------------------------------------------------------------------------------

    @property
    def used_weight(self) -> int:
        """Weight used in the current window of the primary pool, over all caller IPs."""
        return self._counter.used_by_prefix(self.primary_pool, self.pools[self.primary_pool].window_s)

    @property
    def weight_limit(self) -> int | None:
        return self.limits[self.primary_pool]

    @weight_limit.setter
    def weight_limit(self, limit: int | None) -> None:
        self.limits[self.primary_pool] = limit

    def used_weight_in(self, pool: str, ip: str = "127.0.0.1") -> int:
        return self._counter.used((pool, ip), self.pools[pool].window_s)

    def lift_key_limits(self) -> None:
        """Serve every route without its per-key cap (Bybit/OKX style), for benches that sign
        with one key thousands of times a second to measure CPU rather than those limits."""
        self._routes = {route: replace(ep, key_limit=None) for route, ep in self._routes.items()}

    def used_by_key(self, api_key: str, path: str) -> int:
        """Requests one key made to one endpoint in the current per-key window (Bybit/OKX limits)."""
        return self._counter.used(("key", api_key, path), self.key_window_s)

    def seconds_to_reset(self, pool: str | None = None) -> float:
        return self._counter.seconds_left(self.pools[pool or self.primary_pool].window_s)

    # ---- the pipeline -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_query = request.raw_path.partition("?")[2]
        raw_body = await request.text()
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        body: Any = None
        if raw_body:
            if request.content_type == "application/x-www-form-urlencoded":
                params.update(parse_qsl(raw_body, keep_blank_values=True))
            else:
                with suppress(ValueError):
                    body = json.loads(raw_body)
                if isinstance(body, dict):
                    params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
        call = Call(
            method=request.method,
            path=request.path,
            ip=request.remote or "",
            headers=request.headers,
            raw_query=raw_query,
            raw_body=raw_body,
            params=params,
            body=body,
            api_key=request.headers.get(self.api_key_header),
        )
        reply = await self._serve(call)
        self.decorate(call, reply)
        self.requests.append(
            RequestRecord(call.method, call.path, call.api_key, call.weight, reply.status, reply.error_code)
        )
        return reply.to_response()

    async def _serve(self, call: Call) -> Reply:
        endpoint = self._routes.get((call.method, call.path))
        if endpoint is None:
            return self.not_found(call)
        call.endpoint = endpoint
        fault = await self._apply_faults(endpoint, call.method)
        lost = fault is not None and fault.kind == "lost_answer"
        if fault is not None and not lost:
            if fault.kind != "timeout":
                return self.fault_reply(fault, call)
            if not await self._wait(fault.hold_s or self.hang_seconds, releasable=True):
                return self.gateway_timeout()
        banned_until = self._banned_until.get(call.ip)
        if banned_until is not None and self._clock() < banned_until:
            return self.ban_reply(call, banned_until - self._clock())
        over = self._charge_pool(call, endpoint)
        if over is not None:
            return over
        try:
            if endpoint.signed:
                call.key = self._authenticate(call, endpoint)
                over = self._charge_key(call, endpoint)
                if over is not None:
                    return over
            reply = endpoint.handler(call)
        except Rejected as rejected:
            return rejected.reply
        return self.gateway_timeout() if lost else reply

    async def _apply_faults(self, endpoint: Endpoint, method: str) -> Fault | None:
        """Consume matching faults in order: latency ones delay and pass on, the first other one decides."""
        for fault in list(self._faults):
            if (fault.private_only and not endpoint.signed) or fault.method not in (None, method):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            if fault.latency_ms:
                await self._wait(fault.latency_ms / 1000, releasable=False)
            if fault.kind != "latency":
                return fault
        return None

    async def _wait(self, seconds: float, *, releasable: bool) -> bool:
        """Sleep that :meth:`close` (and, if releasable, :meth:`release_hung`) ends early; True if it did."""
        events = [self._closed.wait()] + ([self._release.wait()] if releasable else [])
        tasks = [asyncio.ensure_future(waiter) for waiter in events]
        done, pending = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return bool(done)

    def _charge_pool(self, call: Call, endpoint: Endpoint) -> Reply | None:
        """Count the request's weight against its pool; over the limit → rate-limit (then ban) reply."""
        pool_name = self.pool_of(endpoint)
        pool = self.pools[pool_name]
        call.weight = endpoint.weight_for(call.params)
        used = self._counter.add((pool_name, call.ip), pool.window_s, call.weight)
        limit = self.limits[pool_name]
        if limit is None or used <= limit:
            return None
        strikes = self._counter.add(("strikes", call.ip), pool.window_s, 1)
        if self.ban_after_strikes is not None and strikes > self.ban_after_strikes:
            self._banned_until[call.ip] = self._clock() + self.ban_seconds
            return self.ban_reply(call, self.ban_seconds)
        return self.rate_limit_reply(call, self._counter.seconds_left(pool.window_s))

    def _charge_key(self, call: Call, endpoint: Endpoint) -> Reply | None:
        if endpoint.key_limit is None or call.key is None:
            return None
        call.key_used = self._counter.add(("key", call.key.api_key, call.path), self.key_window_s, 1)
        if call.key_used <= endpoint.key_limit:
            return None
        return self.rate_limit_reply(call, self._counter.seconds_left(self.key_window_s))

    def key_window_reset_ms(self) -> int:
        return self.now_ms() + int(self._counter.seconds_left(self.key_window_s) * 1000)

    def _authenticate(self, call: Call, endpoint: Endpoint) -> LocalKey:
        """The checks every exchange makes, in one order; the exchange decides how each failure looks."""
        credentials = self.read_credentials(call)
        if isinstance(credentials, Reply):
            raise Rejected(credentials)
        call.credentials = credentials
        key = self.keys.get(credentials.api_key)

        def fail(failure: AuthFailure) -> Rejected:
            return Rejected(self.auth_error(failure, call))

        if key is None or self.key_is_gone(key):
            if key is None and not self.looks_like_key(credentials.api_key):
                raise fail(AuthFailure.MALFORMED_KEY)
            raise fail(AuthFailure.UNKNOWN_KEY)
        call.key = key
        if key.passphrase is not None and credentials.passphrase != key.passphrase:
            raise fail(AuthFailure.BAD_PASSPHRASE)
        now = self.now_ms()
        if not (
            now - credentials.recv_window_ms <= credentials.timestamp_ms < now + self.future_tolerance_ms
        ):
            raise fail(AuthFailure.CLOCK_SKEW)
        expected = self.signature(key.secret, credentials.payload)
        if not hmac.compare_digest(expected.encode(), credentials.signature.encode()):
            raise fail(AuthFailure.BAD_SIGNATURE)
        if key.whitelist is not None and call.ip not in key.whitelist:
            raise fail(AuthFailure.IP_NOT_ALLOWED)
        if self.is_expired(key) and self.expiry_blocks(endpoint):
            raise fail(AuthFailure.EXPIRED)
        if endpoint.scope != "read" and not key.trading_allowed:
            raise fail(AuthFailure.NO_PERMISSION)
        key.last_used_at = self.now()
        return key

    # ---- control API ------------------------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        """JSON mirror of the Python API so another process can drive the fake.

        ``GET state|orders?api_key=|requests``; ``POST keys|keys/<key>/state|balances|faults|release|
        prices|orders|weight_limit``; ``DELETE faults|orders/<id>?api_key=``. Bad input → 400
        ``{"error": ...}``, unknown action → 404.
        """
        action = request.match_info["action"].strip("/")
        try:
            payload: dict[str, Any] = await request.json() if request.can_read_body else {}
            result = self._control_action(request.method, action, payload, request.query)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if result is None:
            return web.json_response({"error": f"no control action {request.method} {action}"}, status=404)
        return web.json_response(result)

    def _control_action(
        self, method: str, action: str, payload: dict[str, Any], query: Mapping[str, str]
    ) -> Any:
        def when(name: str) -> datetime | None:
            value = payload.get(name)
            return datetime.fromisoformat(value) if value else None

        match method, action.split("/"):
            case "GET", ["state"]:
                return {
                    "exchange_id": self.exchange_id,
                    "url": self.url,
                    "used_weight": self.used_weight,
                    "weight_limit": self.weight_limit,
                    "faults": [fault.to_json() for fault in self._faults],
                    "keys": {api_key: key.state for api_key, key in self.keys.items()},
                }
            case "GET", ["orders"]:
                return self.open_orders(query["api_key"])
            case "GET", ["requests"]:
                return [asdict(record) for record in self.requests]
            case "POST", ["keys"]:
                key = self.add_key(
                    payload.get("api_key"),
                    payload.get("secret"),
                    payload.get("passphrase"),
                    balances=payload.get("balances"),
                    can_trade=payload.get("can_trade", True),
                    can_withdraw=payload.get("can_withdraw", False),
                    ip_whitelist=payload.get("ip_whitelist"),
                    created_at=when("created_at"),
                    expires_at=when("expires_at"),
                )
                return key.to_json()
            case "POST", ["keys", api_key, "state"]:
                self.set_key_state(api_key, payload["state"])
                return {"ok": True}
            case "POST", ["balances"]:
                self.set_balance(
                    payload["api_key"], payload["asset"], payload["amount"], wallet=payload.get("wallet")
                )
                return {"ok": True}
            case "POST", ["faults"]:
                self.inject(
                    payload["fault"],
                    times=payload.get("times"),
                    private_only=payload.get("private_only", True),
                    latency_ms=payload.get("latency_ms", 0),
                    status=payload.get("status"),
                    hold_s=payload.get("hold_s"),
                    method=payload.get("method"),
                )
                return {"ok": True}
            case "DELETE", ["faults"]:
                self.clear_faults()
                return {"ok": True}
            case "POST", ["release"]:
                self.release_hung()
                return {"ok": True}
            case "POST", ["prices"]:
                self.set_price(payload["symbol"], payload["price"])
                return {"ok": True}
            case "POST", ["orders"]:
                order_id = self.add_order(
                    payload["api_key"],
                    payload["symbol"],
                    payload["side"],
                    payload["price"],
                    payload["amount"],
                    created_at=when("created_at"),
                    client_order_id=payload.get("client_order_id"),
                )
                return {"order_id": order_id}
            case "DELETE", ["orders", order_id]:
                return {"cancelled": self.cancel_order(query["api_key"], order_id)}
            case "POST", ["weight_limit"]:
                self.weight_limit = payload["limit"]
                return {"ok": True}
        return None
