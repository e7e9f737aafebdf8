"""3Commas entities parsed defensively into frozen dataclasses.

3Commas sends most numbers as strings and omits fields freely; amounts become
:class:`~decimal.Decimal` and anything missing or unreadable ``None``, so a new or absent field
never breaks monitoring. Pairs are ``QUOTE_BASE`` there (``USDT_BTC``) and ccxt unified symbols
(``BTC/USDT``) everywhere else: :func:`tc_pair_to_symbol` / :func:`symbol_to_tc_pair` convert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.threecommas.errors import (
    ThreeCommasError,
)

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


def parse_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def parse_str(value: Any) -> str | None:
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
    ("kucoin", "kucoin"),
    ("bitget", "bitget"),
)


@dataclass(frozen=True, slots=True)
class Market:
    """Where a 3Commas account's orders live, in ccxt terms: ``exchange`` is the ccxt id whose
    API holds them (``binanceusdm`` for Binance USDⓈ-M futures), ``market_type`` ccxt's
    ``defaultType`` (spot, margin, swap) and ``sub_type`` linear/inverse for contracts."""

    exchange: str
    market_type: str = "spot"
    sub_type: str | None = None

    @property
    def is_derivative(self) -> bool:
        return self.market_type == "swap"


def market_of(market_code: str | None) -> Market | None:
    """3Commas ``market_code`` → :class:`Market`.

    Codes documented by 3Commas: ``binance``, ``binance_us``, ``binance_futures``,
    ``binance_futures_coin``, ``binance_futures_eea``, ``binance_margin``, ``bybit_spot``, ``okex``
    (docs ``account/1_available_market_sybtypes``, ``market-data/0_supported_markets_list``).
    Bybit's and OKX's contract accounts are read by their words (``perpetual``, ``futures``,
    ``swap``; ``inverse``/``coin`` for coin-margined) as 3Commas spells no list of them.
    """
    code = (market_code or "").lower()
    exchange = next((ccxt_id for prefix, ccxt_id in _EXCHANGE_PREFIXES if code.startswith(prefix)), None)
    if exchange is None:
        return None
    words = set(code.split("_"))
    contract = bool(words & {"futures", "perpetual", "swap", "linear", "inverse"})
    inverse = bool(words & {"coin", "inverse"}) or (
        exchange == "bybit" and "perpetual" in words and "usdt" not in words
    )
    if exchange == "binance":
        if contract:
            return Market(
                "binancecoinm" if inverse else "binanceusdm", "swap", "inverse" if inverse else "linear"
            )
        if "margin" in words:
            return Market("binance", "margin")
        return Market("binance")
    if contract:
        return Market(exchange, "swap", "inverse" if inverse else "linear")
    if "margin" in words:
        return Market(exchange, "margin")
    return Market(exchange)


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
            name=parse_str(payload.get("name")) or "",
            market_code=parse_str(payload.get("market_code")),
            exchange_name=parse_str(payload.get("exchange_name")),
            api_key_invalid=parse_bool(payload.get("api_key_invalid")),
            api_keys_state=parse_str(payload.get("api_keys_state")),
            is_locked=parse_bool(payload.get("is_locked")),
            lock_reason=parse_str(payload.get("lock_reason")),
            auto_balance_error=auto_balance_error,
            smart_trading_supported=parse_bool(payload.get("smart_trading_supported")),
            usd_amount=_dec(payload.get("usd_amount")),
            btc_amount=_dec(payload.get("btc_amount")),
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
        )

    @property
    def exchange_id(self) -> str | None:
        """The exchange (the key's issuer) behind ``market_code`` (``binance_futures`` → ``binance``):
        what a keysentry connection for that key is linked to."""
        code = (self.market_code or "").lower()
        return next((ccxt_id for prefix, ccxt_id in _EXCHANGE_PREFIXES if code.startswith(prefix)), None)

    @property
    def market(self) -> Market | None:
        """Where this account's orders are (``binance_futures`` → ``binanceusdm`` swap)."""
        return market_of(self.market_code)

    @property
    def key_broken(self) -> bool:
        """3Commas can no longer use the exchange key it holds for this account."""
        return self.api_key_invalid or (self.api_keys_state or "").lower() == "expired"


_TERMINAL_DEAL_STATUSES = frozenset(
    {"completed", "cancelled", "failed", "panic_sold", "stop_loss_finished", "liquidated", "settled"}
)
# What the trader asked 3Commas to do while the item waits in this status: "cancel" or "close"
# (at market). Deals: docs dca-bot/deals/6_cancel_deal (``cancel_pending``) and
# 4_close_deal_at_market_price (``panic_sell_pending``); SmartTrades: docs smart-trade/
# 10_cancel_smart_trade (``cancellation_pending``) and 8_close_smart_trade_at_market_price.
_PENDING_DEAL_ACTIONS = {"cancel_pending": "cancel", "panic_sell_pending": "close"}
_PENDING_SMART_TRADE_ACTIONS = {"cancellation_pending": "cancel", "panic_sell_pending": "close"}


def ending(status: str) -> str:
    """How a finished deal or SmartTrade ended, in the three words users tell apart: ``completed``
    (closed by its take profit, stop loss or a manual close), ``cancelled`` or ``failed``."""
    status = status.lower()
    if "cancel" in status:
        return "cancelled"
    if "fail" in status or status == "liquidated":
        return "failed"
    return "completed"


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
        status = parse_str(payload.get("status")) or "unknown"
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
            pair=parse_str(payload.get("pair")) or "",
            status=status,
            localized_status=parse_str(payload.get("localized_status")),
            # A terminal status wins over the flag: a failed deal is done whatever ``finished?`` says.
            finished=status in _TERMINAL_DEAL_STATUSES
            or (parse_bool(finished_flag) if finished_flag is not None else False),
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
            closed_at=_time(payload.get("closed_at")),
            current_price=_dec(payload.get("current_price")),
            take_profit=_dec(payload.get("take_profit")),
            take_profit_type=parse_str(payload.get("take_profit_type")),
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
            deal_has_error=parse_bool(payload.get("deal_has_error")),
            error_message=parse_str(payload.get("error_message")),
            failed_message=parse_str(payload.get("failed_message")),
            strategy=parse_str(payload.get("strategy")),
            market_type=parse_str(payload.get("market_type")),
            bot_name=parse_str(payload.get("bot_name")),
            account_name=parse_str(payload.get("account_name")),
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

    @property
    def pending_action(self) -> str | None:
        """ "cancel" or "close" while 3Commas is still carrying out that request, else None."""
        return None if self.finished else _PENDING_DEAL_ACTIONS.get(self.status)


@dataclass(frozen=True, slots=True)
class Bot:
    """A DCA bot as ``/ver1/bots`` lists it (docs ``dca-bot/4_get_dca_bot``)."""

    id: int
    account_id: int | None
    name: str
    is_enabled: bool
    pairs: tuple[str, ...]
    updated_at: datetime | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Bot:
        return cls(
            id=_id(payload, "bot"),
            account_id=_int(payload.get("account_id")),
            name=parse_str(payload.get("name")) or "",
            is_enabled=parse_bool(payload.get("is_enabled")),
            pairs=tuple(str(p) for p in payload.get("pairs") or () if p),
            updated_at=_time(payload.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class MarketOrder:
    """One order of a deal as ``/deals/{id}/market_orders`` lists it.

    ``order_id`` is 3Commas' internal trade id, not the exchange's order id; attribution has
    to match by symbol, side, price, amount and time. ``status`` is ``status_string`` lower
    case: ``active``, ``filled``, ``finished``, ``cancelled``, ``inactive`` (docs
    ``dca-bot/deals/7_get_trades_of_deal``; ``Inactive`` in its example).
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

    @property
    def is_open(self) -> bool:
        """3Commas shows the order placed and waiting on the exchange."""
        return self.status == "active"

    @property
    def may_still_lock(self) -> bool:
        """For a finished deal: what could still sit on the exchange. Active orders, and
        cancelled ones, since 3Commas marks an order cancelled even when its cancel never reached
        the exchange (the key had broken). Inactive orders were never placed; done ones executed."""
        return self.status in {"active", "cancelled"}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any], deal: Deal) -> MarketOrder:
        return cls(
            deal_id=deal.id,
            pair=deal.pair,
            symbol=deal.symbol,
            order_id=str(payload.get("order_id") or ""),
            side=(parse_str(payload.get("order_type")) or "").lower(),
            deal_order_type=parse_str(payload.get("deal_order_type")),
            status=(parse_str(payload.get("status_string")) or "").lower(),
            price=_dec(payload.get("rate")),
            amount=_dec(payload.get("quantity")),
            amount_remaining=_dec(payload.get("quantity_remaining")),
            average_price=_dec(payload.get("average_price")),
            total=_dec(payload.get("total")),
            cancellable=parse_bool(payload.get("cancellable")),
            created_at=_time(payload.get("created_at")),
            updated_at=_time(payload.get("updated_at")),
        )


def _price_body(price: Decimal | None, price_type: str, needs: str) -> dict[str, Any]:
    """3Commas' price object of a take-profit step or a stop loss; a relative price cannot be sent."""
    if price is None:
        raise ValueError(f"{needs} to be sent")
    return {"value": _num(price), "type": price_type}


def _trailing_body(percent: Decimal | None) -> dict[str, Any]:
    """The ``trailing`` part next to a price object, when the step or stop loss trails."""
    return {} if percent is None else {"trailing": {"enabled": True, "percent": _num(percent)}}


@dataclass(frozen=True, slots=True)
class TakeProfitStep:
    """One take-profit target: ``volume`` is the percent of the position it closes."""

    price: Decimal | None
    volume: Decimal
    price_type: str = "bid"
    order_type: str = "limit"
    trailing_percent: Decimal | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "order_type": self.order_type,
            "price": _price_body(self.price, self.price_type, "a take-profit step needs an absolute price"),
            "volume": _num(self.volume),
            **_trailing_body(self.trailing_percent),
        }


@dataclass(frozen=True, slots=True)
class StopLoss:
    """A conditional stop loss: when ``price_type`` reaches ``price``, close with ``order_type``."""

    price: Decimal | None
    price_type: str = "bid"
    order_type: str = "market"
    trailing_percent: Decimal | None = None

    def to_body(self) -> dict[str, Any]:
        conditional = {
            "price": _price_body(self.price, self.price_type, "a stop loss needs an absolute trigger price"),
            **_trailing_body(self.trailing_percent),
        }
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
    return _dec(trailing.get("percent")) if parse_bool(trailing.get("enabled")) else None


def _parse_take_profit(payload: Mapping[str, Any]) -> tuple[TakeProfitStep, ...]:
    if not parse_bool(payload.get("enabled")):
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
                price_type=parse_str(price.get("type")) or "bid",
                order_type=parse_str(raw.get("order_type")) or "limit",
                trailing_percent=_trailing(raw),
            )
        )
    return tuple(steps)


def _parse_stop_loss(payload: Mapping[str, Any]) -> StopLoss | None:
    if not parse_bool(payload.get("enabled")):
        return None
    conditional = _obj(payload.get("conditional"))
    price = _obj(conditional.get("price"))
    return StopLoss(
        price=_dec(price.get("value")),
        price_type=parse_str(price.get("type")) or "bid",
        order_type=parse_str(payload.get("order_type")) or "market",
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
    market_close_error: str | None
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
        status_type = parse_str(status.get("type")) or "unknown"
        return cls(
            id=_id(payload, "smart trade"),
            account_id=_int(_obj(payload.get("account")).get("id")) or _int(payload.get("account_id")),
            pair=parse_str(payload.get("pair")) or "",
            status=status_type,
            status_title=parse_str(status.get("title")),
            error_message=parse_str(status.get("error")),
            # docs smart-trade/0_smart_trade_entity: market_close.status.error, "if it fails".
            market_close_error=parse_str(_obj(_obj(payload.get("market_close")).get("status")).get("error")),
            trade_type=parse_str(data.get("type")),
            side=parse_str(position.get("type")),
            order_type=parse_str(position.get("order_type")),
            units=_dec(_obj(position.get("units")).get("value")),
            price=_dec(_obj(position.get("price")).get("value")),
            position_status=parse_str(_obj(position.get("status")).get("type")),
            take_profit=_parse_take_profit(_obj(payload.get("take_profit"))),
            stop_loss=_parse_stop_loss(_obj(payload.get("stop_loss"))),
            instant=parse_bool(payload.get("instant")),
            skip_enter_step=parse_bool(payload.get("skip_enter_step")),
            leverage_type=parse_str(leverage.get("type")) if parse_bool(leverage.get("enabled")) else None,
            leverage_value=_dec(leverage.get("value")) if parse_bool(leverage.get("enabled")) else None,
            current_price=_dec(_obj(data.get("current_price")).get("last")),
            average_enter_price=_dec(data.get("average_enter_price")),
            entered_amount=_dec(data.get("entered_amount")),
            closed_amount=_dec(data.get("closed_amount")),
            profit_usd=_dec(profit.get("usd")),
            profit_percent=_dec(profit.get("percent")),
            # Done-ness comes from ``status.type`` alone: the docs' own failed and cancelled examples
            # carry ``data.finished: false`` (docs smart-trade/0_smart_trade_entity, 3_get_smart_trade).
            finished=status_type in _TERMINAL_SMART_TRADE_STATUSES,
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
        )

    @property
    def pending_action(self) -> str | None:
        """ "cancel" or "close" while 3Commas is still carrying out that request, else None."""
        return None if self.finished else _PENDING_SMART_TRADE_ACTIONS.get(self.status)

    @property
    def error_text(self) -> str | None:
        """The trade's own error, else the error of its market close (a failed close)."""
        return self.error_message or self.market_close_error

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


def decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
