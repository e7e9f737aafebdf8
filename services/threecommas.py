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
  would hurt every user behind our IP. :class:`KeyLimiter` therefore spaces calls per key, waits
  out short blocks and fails fast, without touching the network, during long blocks and bans.
* **Parsing.** 3Commas sends most numbers as strings and omits fields freely; entities are parsed
  into frozen dataclasses with :class:`~decimal.Decimal` amounts and ``None`` for anything
  missing or unreadable, so a new or absent field never breaks monitoring.
* **Pairs.** 3Commas writes pairs as ``QUOTE_BASE`` (``USDT_BTC``); the rest of keysentry uses
  ccxt unified symbols (``BTC/USDT``). :func:`tc_pair_to_symbol` / :func:`symbol_to_tc_pair`
  convert.

Secrets never leave this module except inside the HMAC; logs show the masked key only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from services.vault import mask
from services.verdicts import Verdict

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.3commas.io/public/api"

REQUESTS_PER_MINUTE = 100
"""3Commas' documented limit for the whole REST API, per key."""

DEFAULT_BUDGET = 95
"""What :class:`KeyLimiter` allows per minute by default. The limiter stamps a call when it is
sent, 3Commas counts it when it arrives; uneven latency can squeeze a minute's worth of sends
into a shorter span at the server, and the 5 % margin absorbs that."""

# How long 3Commas blocks after a 429 when it sends no Retry-After (its 429s usually carry
# none): 60 s for the deal routes, 10 s for SmartTrade listing, 300 s for everything else.
_BLOCK_AFTER_429_S = {"deals": 60.0, "smart_trades": 10.0, "default": 300.0}
# A 418 ban lasts from two minutes to three days; without a Retry-After assume ten minutes.
_DEFAULT_BAN_S = 600.0

_PLAN_RESTRICTION_MARKER = "subscription plan"


# --------------------------------------------------------------------------------------------
# Pairs


_FUTURES_SETTLE_SUFFIXES = ("USDT", "USDC", "BUSD", "USD")


def tc_pair_to_symbol(pair: str, *, futures: bool = False) -> str:
    """``USDT_BTC`` → ``BTC/USDT``; with ``futures`` ``USDT_BTCUSDT`` → ``BTC/USDT:USDT``.

    Futures pairs name the contract after the underscore (``BTCUSDT``) and the margin asset
    before it (``USDT``, or ``BNFCR`` on Binance EU), so the settle currency is read from the
    contract's suffix; ``USD`` contracts are inverse and settle in the coin itself.
    """
    quote, sep, base = pair.partition("_")
    if not sep or not quote or not base or "_" in base:
        raise ValueError(f"not a 3Commas pair: {pair!r}")
    if futures:
        for settle in _FUTURES_SETTLE_SUFFIXES:
            if base.endswith(settle) and len(base) > len(settle):
                coin = base[: -len(settle)]
                return f"{coin}/{settle}:{coin if settle == 'USD' else settle}"
    return f"{base}/{quote}"


def symbol_to_tc_pair(symbol: str) -> str:
    """``BTC/USDT`` → ``USDT_BTC``; ``BTC/USDT:USDT`` → ``USDT_BTCUSDT`` (the inverse of the above)."""
    market, _, _settle = symbol.partition(":")
    base, sep, quote = market.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"not a ccxt symbol: {symbol!r}")
    if _settle:
        return f"{quote}_{base}{quote}"
    return f"{quote}_{base}"


# --------------------------------------------------------------------------------------------
# Errors


class ThreeCommasError(Exception):
    """A failed 3Commas call: HTTP ``status`` (0 when no response), 3Commas' ``error`` code and text.

    ``attributes`` carries ``error_attributes`` (field → messages) from validation failures.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str = "",
        *,
        attributes: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.attributes = dict(attributes or {})
        text = f"3Commas {status or 'request'} {error}"
        super().__init__(f"{text}: {message}" if message else text)

    @property
    def verdict(self) -> Verdict:
        """What this failure says about the key, in the vocabulary of exchange probes."""
        return Verdict.UNKNOWN


class KeyInvalid(ThreeCommasError):
    """401: the 3Commas key is revoked, expired or unknown, or the secret does not match it."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.SIGNATURE_INVALID if self.error == "signature_invalid" else Verdict.KEY_INVALID


class PermissionDenied(ThreeCommasError):
    """403: the key lacks the permission (e.g. a read-only key asked to trade) or the action is refused."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.PERMISSION_MISSING


class PlanRestricted(PermissionDenied):
    """3Commas' subscription-plan refusal. It arrives as a 429 but waiting never helps."""


class NotFound(ThreeCommasError):
    """404 (or 3Commas' 400 "Not found" for SmartTrades): the deal, trade, bot or account is gone."""


class RateLimited(ThreeCommasError):
    """429, or a local refusal while 3Commas' block is still running; retry after ``retry_after`` s."""

    def __init__(self, status: int, error: str, message: str = "", *, retry_after: float) -> None:
        super().__init__(status, error, message)
        self.retry_after = retry_after

    @property
    def verdict(self) -> Verdict:
        return Verdict.RATE_LIMITED


class Banned(RateLimited):
    """418: 3Commas banned us for ignoring 429s; no call is made until ``retry_after`` has passed."""


class Unavailable(ThreeCommasError):
    """5xx, timeout, connection failure or an unreadable answer: says nothing about the key."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.NETWORK if self.status == 0 else Verdict.EXCHANGE_DOWN


# --------------------------------------------------------------------------------------------
# Limiter


class KeyLimiter:
    """Keeps one 3Commas key under its request budget and honours 3Commas' blocks and bans.

    One instance per key, shared by every client built for that key. A sliding window keeps
    any ``per_seconds`` span at or below ``max_requests`` calls. After a 429 (:meth:`block`)
    calls wait when the block is at most ``max_wait_s`` long and otherwise fail fast with
    :class:`RateLimited`, so a poller never hammers a blocked key into a ban. After a 418
    (:meth:`ban`) every call fails fast with :class:`Banned` until the ban is over.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests simulate time.
    """

    def __init__(
        self,
        max_requests: int = DEFAULT_BUDGET,
        per_seconds: float = 60.0,
        *,
        max_wait_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError("max_requests and per_seconds must be positive")
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._banned_until = float("-inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a slot; raises :class:`Banned` or :class:`RateLimited` instead of long waits."""
        async with self._lock:  # one waiter at a time keeps the order fair and the window exact
            while True:
                now = self._clock()
                if now < self._banned_until:
                    raise Banned(
                        418, "local_ban", "3Commas ban still running", retry_after=self._banned_until - now
                    )
                if now < self._blocked_until:
                    wait = self._blocked_until - now
                    if wait > self.max_wait_s:
                        raise RateLimited(429, "local_block", "3Commas block still running", retry_after=wait)
                    await self._sleep(wait)
                    continue
                while self._sent and self._sent[0] <= now - self.per_seconds:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return
                await self._sleep(self._sent[0] + self.per_seconds - now)

    def block(self, seconds: float) -> None:
        """3Commas answered 429: no calls for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def ban(self, seconds: float) -> None:
        """3Commas answered 418: no calls at all for ``seconds``."""
        self._banned_until = max(self._banned_until, self._clock() + seconds)


# --------------------------------------------------------------------------------------------
# Defensive parsing helpers: 3Commas sends numbers as strings, booleans as "true", and nulls.


def _dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _time(value: Any) -> datetime | None:
    """ISO 8601 (``2025-09-26T17:26:26.529Z``) or epoch seconds → aware UTC datetime."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(payload: Mapping[str, Any], what: str) -> int:
    entity_id = _int(payload.get("id"))
    if entity_id is None:
        raise ThreeCommasError(0, "unexpected_response", f"{what} without an id")
    return entity_id


def _num(value: Decimal) -> str:
    """Plain decimal text (never ``1E+1``), the way 3Commas itself writes numbers."""
    return format(value, "f")


# --------------------------------------------------------------------------------------------
# Entities


_EXCHANGE_PREFIXES = (
    ("binance_us", "binanceus"),
    ("binance", "binance"),
    ("bybit", "bybit"),
    ("okex", "okx"),
    ("okx", "okx"),
)


@dataclass(frozen=True, slots=True)
class Account:
    """An exchange account connected to 3Commas (3Commas holds that exchange's key, not us)."""

    id: int
    name: str
    market_code: str | None
    exchange_name: str | None
    api_key_invalid: bool
    api_keys_state: str | None
    is_locked: bool
    lock_reason: str | None
    auto_balance_error: str | None
    smart_trading_supported: bool
    usd_amount: Decimal | None
    btc_amount: Decimal | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Account:
        # auto_balance_error is null when fine; 3Commas documents no type, so keep any text
        # and turn a bare true into a generic marker.
        error = payload.get("auto_balance_error")
        auto_balance_error = (
            None if error in (None, False, "", "false") else "true" if error is True else str(error)
        )
        return cls(
            id=_id(payload, "account"),
            name=_str(payload.get("name")) or "",
            market_code=_str(payload.get("market_code")),
            exchange_name=_str(payload.get("exchange_name")),
            api_key_invalid=_bool(payload.get("api_key_invalid")),
            api_keys_state=_str(payload.get("api_keys_state")),
            is_locked=_bool(payload.get("is_locked")),
            lock_reason=_str(payload.get("lock_reason")),
            auto_balance_error=auto_balance_error,
            smart_trading_supported=_bool(payload.get("smart_trading_supported")),
            usd_amount=_dec(payload.get("usd_amount")),
            btc_amount=_dec(payload.get("btc_amount")),
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
        )

    @property
    def exchange_id(self) -> str | None:
        """The ccxt exchange id behind ``market_code`` (``bybit_spot`` → ``bybit``), if known."""
        code = (self.market_code or "").lower()
        for prefix, ccxt_id in _EXCHANGE_PREFIXES:
            if code.startswith(prefix):
                return ccxt_id
        return None


_TERMINAL_DEAL_STATUSES = frozenset(
    {"completed", "cancelled", "failed", "panic_sold", "stop_loss_finished", "liquidated", "settled"}
)


@dataclass(frozen=True, slots=True)
class DealEvent:
    message: str
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class Deal:
    """A DCA-bot deal. Percentages (``take_profit``, ``stop_loss_percentage``) are in percent."""

    id: int
    bot_id: int | None
    account_id: int | None
    pair: str
    status: str
    localized_status: str | None
    finished: bool
    created_at: datetime | None
    updated_at: datetime | None
    closed_at: datetime | None
    current_price: Decimal | None
    take_profit: Decimal | None
    take_profit_type: str | None
    take_profit_price: Decimal | None
    stop_loss_percentage: Decimal | None
    stop_loss_price: Decimal | None
    base_order_volume: Decimal | None
    safety_order_volume: Decimal | None
    max_safety_orders: int | None
    bought_amount: Decimal | None
    bought_volume: Decimal | None
    bought_average_price: Decimal | None
    sold_amount: Decimal | None
    usd_final_profit: Decimal | None
    actual_usd_profit: Decimal | None
    actual_profit_percentage: Decimal | None
    deal_has_error: bool
    error_message: str | None
    failed_message: str | None
    strategy: str | None
    market_type: str | None
    bot_name: str | None
    account_name: str | None
    events: tuple[DealEvent, ...] = ()

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Deal:
        status = _str(payload.get("status")) or "unknown"
        finished_flag = payload.get("finished?")
        events = tuple(
            DealEvent(message=str(event.get("message") or ""), created_at=_time(event.get("created_at")))
            for event in payload.get("bot_events") or ()
            if isinstance(event, dict)
        )
        return cls(
            id=_id(payload, "deal"),
            bot_id=_int(payload.get("bot_id")),
            account_id=_int(payload.get("account_id")),
            pair=_str(payload.get("pair")) or "",
            status=status,
            localized_status=_str(payload.get("localized_status")),
            finished=_bool(finished_flag) if finished_flag is not None else status in _TERMINAL_DEAL_STATUSES,
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
            closed_at=_time(payload.get("closed_at")),
            current_price=_dec(payload.get("current_price")),
            take_profit=_dec(payload.get("take_profit")),
            take_profit_type=_str(payload.get("take_profit_type")),
            take_profit_price=_dec(payload.get("take_profit_price")),
            stop_loss_percentage=_dec(payload.get("stop_loss_percentage")),
            stop_loss_price=_dec(payload.get("stop_loss_price")),
            base_order_volume=_dec(payload.get("base_order_volume")),
            safety_order_volume=_dec(payload.get("safety_order_volume")),
            max_safety_orders=_int(payload.get("max_safety_orders")),
            bought_amount=_dec(payload.get("bought_amount")),
            bought_volume=_dec(payload.get("bought_volume")),
            bought_average_price=_dec(payload.get("bought_average_price")),
            sold_amount=_dec(payload.get("sold_amount")),
            usd_final_profit=_dec(payload.get("usd_final_profit")),
            actual_usd_profit=_dec(payload.get("actual_usd_profit")),
            actual_profit_percentage=_dec(payload.get("actual_profit_percentage")),
            deal_has_error=_bool(payload.get("deal_has_error")),
            error_message=_str(payload.get("error_message")),
            failed_message=_str(payload.get("failed_message")),
            strategy=_str(payload.get("strategy")),
            market_type=_str(payload.get("market_type")),
            bot_name=_str(payload.get("bot_name")),
            account_name=_str(payload.get("account_name")),
            events=events,
        )

    @property
    def symbol(self) -> str | None:
        """The ccxt symbol, or None when 3Commas sent a pair we cannot read."""
        try:
            return tc_pair_to_symbol(self.pair, futures=self.market_type not in (None, "spot"))
        except ValueError:
            return None

    @property
    def side(self) -> str:
        """Entry side: long deals buy first, short deals sell first."""
        return "sell" if self.strategy == "short" else "buy"

    @property
    def error_text(self) -> str | None:
        return self.error_message or self.failed_message


@dataclass(frozen=True, slots=True)
class MarketOrder:
    """One order of a deal as ``/deals/{id}/market_orders`` lists it.

    ``order_id`` is 3Commas' internal trade id, not the exchange's order id; attribution has
    to match by symbol, side, price, amount and time. ``status`` is lower case
    (``active``, ``filled``, ``finished``, ``cancelled``, ``inactive``).
    """

    deal_id: int
    pair: str
    symbol: str | None
    order_id: str
    side: str
    deal_order_type: str | None
    status: str
    price: Decimal | None
    amount: Decimal | None
    amount_remaining: Decimal | None
    average_price: Decimal | None
    total: Decimal | None
    cancellable: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any], deal: Deal) -> MarketOrder:
        return cls(
            deal_id=deal.id,
            pair=deal.pair,
            symbol=deal.symbol,
            order_id=str(payload.get("order_id") or ""),
            side=(_str(payload.get("order_type")) or "").lower(),
            deal_order_type=_str(payload.get("deal_order_type")),
            status=(_str(payload.get("status_string")) or "").lower(),
            price=_dec(payload.get("rate")),
            amount=_dec(payload.get("quantity")),
            amount_remaining=_dec(payload.get("quantity_remaining")),
            average_price=_dec(payload.get("average_price")),
            total=_dec(payload.get("total")),
            cancellable=_bool(payload.get("cancellable")),
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class TakeProfitStep:
    """One take-profit target: ``volume`` is the percent of the position it closes."""

    price: Decimal | None
    volume: Decimal
    price_type: str = "bid"
    order_type: str = "limit"
    trailing_percent: Decimal | None = None

    def to_body(self) -> dict[str, Any]:
        if self.price is None:
            raise ValueError("a take-profit step needs an absolute price to be sent")
        body: dict[str, Any] = {
            "order_type": self.order_type,
            "price": {"value": _num(self.price), "type": self.price_type},
            "volume": _num(self.volume),
        }
        if self.trailing_percent is not None:
            body["trailing"] = {"enabled": True, "percent": _num(self.trailing_percent)}
        return body


@dataclass(frozen=True, slots=True)
class StopLoss:
    """A conditional stop loss: when ``price_type`` reaches ``price``, close with ``order_type``."""

    price: Decimal | None
    price_type: str = "bid"
    order_type: str = "market"
    trailing_percent: Decimal | None = None

    def to_body(self) -> dict[str, Any]:
        if self.price is None:
            raise ValueError("a stop loss needs an absolute trigger price to be sent")
        conditional: dict[str, Any] = {"price": {"value": _num(self.price), "type": self.price_type}}
        if self.trailing_percent is not None:
            conditional["trailing"] = {"enabled": True, "percent": _num(self.trailing_percent)}
        return {"enabled": True, "order_type": self.order_type, "conditional": conditional}


_SIDES = frozenset({"buy", "sell"})
_ORDER_TYPES = frozenset({"market", "limit"})
_MAX_TAKE_PROFIT_STEPS = 8


@dataclass(frozen=True, slots=True)
class SmartTradeParams:
    """What ``POST /v2/smart_trades`` needs; validated here so a bad request never leaves us.

    ``side`` is the position type (``buy`` opens a long). ``skip_enter_step`` makes a Smart
    Sell/Buy: only TP/SL for coins already held, ``price`` then being their entry price.
    ``instant`` makes a simple market/limit trade without targets.
    """

    account_id: int
    pair: str
    side: str
    units: Decimal
    order_type: str = "limit"
    price: Decimal | None = None
    take_profit: tuple[TakeProfitStep, ...] = ()
    stop_loss: StopLoss | None = None
    skip_enter_step: bool = False
    instant: bool = False
    leverage_type: str | None = None
    leverage_value: Decimal | None = None

    def __post_init__(self) -> None:
        if self.side not in _SIDES:
            raise ValueError(f"side must be buy or sell, got {self.side!r}")
        if self.order_type not in _ORDER_TYPES:
            raise ValueError(f"order_type must be market or limit, got {self.order_type!r}")
        if self.units <= 0:
            raise ValueError("units must be positive")
        if self.order_type == "limit" and self.price is None:
            raise ValueError("a limit position needs a price")
        if self.instant and (self.take_profit or self.stop_loss):
            raise ValueError("an instant trade has no take profit or stop loss")
        if self.take_profit:
            if len(self.take_profit) > _MAX_TAKE_PROFIT_STEPS:
                raise ValueError(f"at most {_MAX_TAKE_PROFIT_STEPS} take-profit steps")
            if sum(step.volume for step in self.take_profit) != 100:
                raise ValueError("take-profit volumes must add up to 100 percent")
            if any(step.price is None for step in self.take_profit):
                raise ValueError("every take-profit step needs an absolute price")
        if self.stop_loss is not None and self.stop_loss.price is None:
            raise ValueError("the stop loss needs an absolute trigger price")

    def to_body(self) -> dict[str, Any]:
        """The JSON body exactly as the client sends it (decimals as strings, as 3Commas does)."""
        position: dict[str, Any] = {
            "type": self.side,
            "order_type": self.order_type,
            "units": {"value": _num(self.units)},
        }
        if self.price is not None:
            position["price"] = {"value": _num(self.price)}
        body: dict[str, Any] = {"account_id": self.account_id, "pair": self.pair}
        if self.instant:
            body["instant"] = True
        if self.skip_enter_step:
            body["skip_enter_step"] = True
        if self.leverage_value is not None:
            body["leverage"] = {
                "enabled": True,
                "type": self.leverage_type or "isolated",
                "value": _num(self.leverage_value),
            }
        body["position"] = position
        if not self.instant:
            body["take_profit"] = (
                {"enabled": True, "steps": [step.to_body() for step in self.take_profit]}
                if self.take_profit
                else {"enabled": False}
            )
            body["stop_loss"] = self.stop_loss.to_body() if self.stop_loss else {"enabled": False}
        return body


def _trailing(payload: Mapping[str, Any]) -> Decimal | None:
    trailing = _obj(payload.get("trailing"))
    return _dec(trailing.get("percent")) if _bool(trailing.get("enabled")) else None


def _parse_take_profit(payload: Mapping[str, Any]) -> tuple[TakeProfitStep, ...]:
    if not _bool(payload.get("enabled")):
        return ()
    steps = []
    for raw in payload.get("steps") or ():
        if not isinstance(raw, dict):
            continue
        price = _obj(raw.get("price"))
        steps.append(
            TakeProfitStep(
                price=_dec(price.get("value")),
                volume=_dec(raw.get("volume")) or Decimal(0),
                price_type=_str(price.get("type")) or "bid",
                order_type=_str(raw.get("order_type")) or "limit",
                trailing_percent=_trailing(raw),
            )
        )
    return tuple(steps)


def _parse_stop_loss(payload: Mapping[str, Any]) -> StopLoss | None:
    if not _bool(payload.get("enabled")):
        return None
    conditional = _obj(payload.get("conditional"))
    price = _obj(conditional.get("price"))
    return StopLoss(
        price=_dec(price.get("value")),
        price_type=_str(price.get("type")) or "bid",
        order_type=_str(payload.get("order_type")) or "market",
        trailing_percent=_trailing(conditional),
    )


_TERMINAL_SMART_TRADE_STATUSES = frozenset({"finished", "cancelled", "failed"})


@dataclass(frozen=True, slots=True)
class SmartTrade:
    """A SmartTrade (v2). ``status`` is ``status.type`` (``waiting_targets``, ``failed``, …)."""

    id: int
    account_id: int | None
    pair: str
    status: str
    status_title: str | None
    error_message: str | None
    trade_type: str | None
    side: str | None
    order_type: str | None
    units: Decimal | None
    price: Decimal | None
    position_status: str | None
    take_profit: tuple[TakeProfitStep, ...]
    stop_loss: StopLoss | None
    instant: bool
    skip_enter_step: bool
    leverage_type: str | None
    leverage_value: Decimal | None
    current_price: Decimal | None
    average_enter_price: Decimal | None
    entered_amount: Decimal | None
    closed_amount: Decimal | None
    profit_usd: Decimal | None
    profit_percent: Decimal | None
    finished: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> SmartTrade:
        status = _obj(payload.get("status"))
        position = _obj(payload.get("position"))
        data = _obj(payload.get("data"))
        profit = _obj(payload.get("profit"))
        leverage = _obj(payload.get("leverage"))
        status_type = _str(status.get("type")) or "unknown"
        finished = data.get("finished")
        return cls(
            id=_id(payload, "smart trade"),
            account_id=_int(_obj(payload.get("account")).get("id")) or _int(payload.get("account_id")),
            pair=_str(payload.get("pair")) or "",
            status=status_type,
            status_title=_str(status.get("title")),
            error_message=_str(status.get("error")),
            trade_type=_str(data.get("type")),
            side=_str(position.get("type")),
            order_type=_str(position.get("order_type")),
            units=_dec(_obj(position.get("units")).get("value")),
            price=_dec(_obj(position.get("price")).get("value")),
            position_status=_str(_obj(position.get("status")).get("type")),
            take_profit=_parse_take_profit(_obj(payload.get("take_profit"))),
            stop_loss=_parse_stop_loss(_obj(payload.get("stop_loss"))),
            instant=_bool(payload.get("instant")),
            skip_enter_step=_bool(payload.get("skip_enter_step")),
            leverage_type=_str(leverage.get("type")) if _bool(leverage.get("enabled")) else None,
            leverage_value=_dec(leverage.get("value")) if _bool(leverage.get("enabled")) else None,
            current_price=_dec(_obj(data.get("current_price")).get("last")),
            average_enter_price=_dec(data.get("average_enter_price")),
            entered_amount=_dec(data.get("entered_amount")),
            closed_amount=_dec(data.get("closed_amount")),
            profit_usd=_dec(profit.get("usd")),
            profit_percent=_dec(profit.get("percent")),
            finished=_bool(finished)
            if finished is not None
            else status_type in _TERMINAL_SMART_TRADE_STATUSES,
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
        )

    @property
    def symbol(self) -> str | None:
        """The ccxt symbol; a SmartTrade carries no market type, so a leveraged trade or a
        contract-style pair (``USDT_BTCUSDT``: the base ends in the quote) counts as futures."""
        quote, _, base = self.pair.partition("_")
        futures = self.leverage_value is not None or (bool(quote) and base.endswith(quote))
        try:
            return tc_pair_to_symbol(self.pair, futures=futures)
        except ValueError:
            return None


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
        if not (isinstance(answer, dict) and _bool(answer.get("valid"))):
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
        code = _str(body.get("error")) or f"http_{status}"
        message = _str(body.get("error_description")) or ""
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
