"""ccxt (async) used the way a monitor of thousands of keys needs it.

* **One aiohttp session** for every ccxt instance. ccxt takes ``session=`` and then never owns it:
  ``own_session = 'session' not in config`` (ccxt/async_support/base/exchange.py ``__init__``), and
  ``close()`` only drops the reference for a foreign session (same file, ``close``). The hub
  closes the session itself. ccxt's ``__del__`` warns about an unclosed session whenever an
  instance holding one is collected, which for us is every per-connection client; the instances
  therefore come from a subclass that silences it (``_SharedSession``).
* **Cheap per-connection clients.** A ccxt instance costs ~2 ms CPU and 120-230 KiB to build
  (``describe()`` deep-merges the whole API table; measured with ccxt 4.5.90). We build one
  *template* per exchange and give every connection a ``copy.copy`` of it with its own keys: a
  shallow copy shares the big read-only tables (api, urls, exceptions, markets) and costs a few
  microseconds and a few KiB. Per-instance mutable state is reset on the copy: ``options`` is
  copied (it holds per-account facts: Binance's ``hasAlreadyAuthenticatedSuccessfully`` trap,
  Bybit's ``enableUnifiedAccount``, KuCoin's ``uta``; ccxt only ever assigns top-level keys there
  for the exchanges we probe), and the ``last_*`` request/response slots are cleared. Signing
  reads ``self.apiKey``/``self.secret``/``self.password`` of the copy, so keys cannot leak between
  clients (tests prove it with two keys concurrently against a local exchange).
* **Markets once per exchange**, from public endpoints only, shared by reference (ccxt's own
  ``set_markets_from_exchange``). ``load_markets`` calls ``fetch_currencies`` first, and with
  keys set Binance, Bybit, OKX and KuCoin take that from *private* endpoints (binance.py ~3157
  sapi capital/config/getall, bybit.py ~1805 /v5/asset/coin/query-info, okx.py ~2020
  /api/v5/asset/currencies, kucoin.py ~2227 account mode); Binance's ``fetch_markets`` also
  loads margin pairs privately (``fetchMargins``). Markets load on the keyless template only,
  and ``has['fetchCurrencies']`` / Binance ``fetchCurrencies`` + ``fetchMargins`` are switched
  off there as well: no probe needs currency metadata, and it costs requests and memory.
  Binance markets are limited to spot + linear (USDⓈ-M), what the bots trade through 3Commas;
  inverse and options would only cost weight and memory. Bybit and OKX get the same restriction.
* **Our limiter, not ccxt's.** ``enableRateLimit=False``: ccxt's throttle is per instance, so with
  one instance per connection it would limit nothing. Every call first acquires the shared
  per-exchange budget (:mod:`services.exchanges.budget`), reads the used-weight header afterwards and
  reports 429/418/bans so the whole exchange pauses.
* **Timeouts everywhere**: ccxt's ``timeout`` bounds each HTTP request; an outer deadline of
  twice that bounds a whole unified call (some chain a mode lookup before the real request).
* **URL overrides** (``EXCHANGE_URL_OVERRIDES``) replace the scheme and host of every API URL of
  an exchange and keep the path, whatever the shape of ``urls['api']`` (a string, a flat dict,
  or nested dicts such as Gate's).
* **Transport** (:class:`services.core.transport.Transport`): the session's resolver and TLS trust.
  Production uses the defaults; tests send the real hostnames to local TLS servers, so ccxt's
  host-dependent code (Binance's error map by URL) runs as it does in production.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt.async_support as ccxt
from aiohttp_socks import ProxyConnector
from ccxt.base.types import Entry

from services.core.clock import Clock, SystemClock
from services.core.transport import Transport
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.exchanges.budget import GENERIC_PROBE_WEIGHT, PROBE_WEIGHTS, BudgetRegistry, pool_of
from services.exchanges.classifier import classify
from services.exchanges.classifier_tables import TABLE_OF
from services.exchanges.egress import DIRECT, Egress, egress_for

__all__ = ["ExchangeClient", "ExchangeHub", "display_name", "needs_passphrase", "supported_exchanges"]

PREFERRED = ("binance", "bybit", "okx")
# Credentials we can store (services.core.vault.Credentials): apiKey, secret and an optional passphrase.
_STORABLE = frozenset({"apiKey", "secret", "password"})

# Market types loaded per exchange (ccxt option ``fetchMarkets.types``, see the module docstring).
_MARKET_TYPES: dict[str, list[str]] = {
    "binance": ["spot", "linear"],
    "bybit": ["spot", "linear"],
    "okx": ["spot", "swap"],
}
# Weight of one markets load: Binance spot exchangeInfo weight 20 + fapi exchangeInfo weight 1
# (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints); Bybit
# and OKX one request per type; other exchanges usually one or two requests.
_MARKETS_WEIGHT: dict[str, int] = {"binance": 21, "binanceusdm": 1, "binancecoinm": 1, "bybit": 2, "okx": 2}
_DEFAULT_MARKETS_WEIGHT = 2

_AUTH_TRAP = "hasAlreadyAuthenticatedSuccessfully"  # binance.py options ~1407, request() ~12688

# Rate limits that concern one account (UID), not our IP: do not pause every connection for them.
# Binance -1015 order count; Bybit 10006 per-UID limit; OKX limits private endpoints per user ID
# (https://www.okx.com/docs-v5/en/#overview-rate-limits), so 50011 on our signed calls is that
# user's budget (their own bots share it), and 50061 is the sub-account order limit.
_ACCOUNT_SCOPED = frozenset({("binance", "-1015"), ("bybit", "10006"), ("okx", "50011"), ("okx", "50061")})
# IP bans reported in the body: Bybit 10009 "IP has been banned".
_IP_BANS = frozenset({("bybit", "10009")})
# Binance 418 body: "Way too much request weight used; IP banned until 1700000000000."
_BANNED_UNTIL = re.compile(r"banned until (\d{13})")


class _SharedSession:
    """Mixin for every ccxt instance the hub creates.

    * ``__del__``: ccxt warns "requires to release all resources" whenever an instance that still
      references a session is collected; ours never own it, the hub closes it.
    * ``on_rest_response`` is ccxt's per-response hook (called in ``fetch`` before
      ``handle_errors``); we keep the HTTP status, which ccxt does not store anywhere.
    """

    last_http_status: int | None = None

    def __del__(self) -> None:
        pass

    def on_rest_response(self, code: int, *args: Any) -> Any:
        self.last_http_status = code
        return super().on_rest_response(code, *args)  # type: ignore[misc]


@functools.cache
def _shared_class(exchange_id: str) -> type[Any]:
    base = getattr(ccxt, exchange_id)
    return type(base.__name__, (_SharedSession, base), {})


@functools.cache
def _describe(exchange_id: str) -> dict[str, Any]:
    """ccxt's static description, without paying for ``__init__``."""
    cls = getattr(ccxt, exchange_id)
    description: dict[str, Any] = cls.__new__(cls).describe()
    return description


def supported_exchanges() -> list[str]:
    """ccxt exchanges whose private API needs exactly what we store: key, secret, maybe passphrase.

    Aliases (``describe()['alias']``) and exchanges wanting more (uid, wallet keys, 2FA) are left
    out. Binance, Bybit and OKX come first: most users trade there.
    """
    return list(_supported())


@functools.cache
def _supported() -> tuple[str, ...]:
    usable = []
    for exchange_id in ccxt.exchanges:
        try:
            description = _describe(exchange_id)
        except Exception:  # an exchange whose describe() needs a real instance: not offered
            continue
        required = {k for k, v in description.get("requiredCredentials", {}).items() if v}
        if {"apiKey", "secret"} <= required <= _STORABLE and not description.get("alias"):
            usable.append(exchange_id)
    return (*[e for e in PREFERRED if e in usable], *sorted(e for e in usable if e not in PREFERRED))


def needs_passphrase(exchange_id: str) -> bool:
    """ccxt's ``requiredCredentials['password']``: OKX, KuCoin, Bitget… call it a passphrase."""
    return bool(_describe(exchange_id).get("requiredCredentials", {}).get("password"))


def display_name(exchange_id: str) -> str:
    return str(_describe(exchange_id).get("name") or exchange_id)


def rebase_urls(urls: Any, base: str) -> Any:
    """Every URL in ``urls`` (str, dict, nested dicts) moved to ``base``, path and query kept."""
    if isinstance(urls, str):
        parts = urlsplit(urls)
        return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(urls, dict):
        return {key: rebase_urls(value, base) for key, value in urls.items()}
    return urls


_IMPLICIT: dict[tuple[type[Any], str], bool] = {}


def _is_implicit(cls: type[Any], method: str) -> bool:
    """Implicit endpoints (``sapiGetAccountApiRestrictions``…) are ``Entry`` descriptors (ccxt
    abstract/*.py); they send one raw request and need no markets. Unified methods may.

    The whole MRO is searched because ccxt's ``__init__`` re-binds camelCase names as plain
    functions on the instance's class (base/exchange.py, "convert all properties from underscore
    notation"), which hides the descriptor from a plain attribute lookup on our subclass.
    """
    known = _IMPLICIT.get((cls, method))
    if known is None:
        known = _IMPLICIT[(cls, method)] = any(isinstance(k.__dict__.get(method), Entry) for k in cls.__mro__)
    return known


class ExchangeClient:
    """One connection's ccxt instance behind its route's budget, deadline and header bookkeeping.

    ``interactive_for`` is the user whose tap the calls serve: they then draw on that user's fair
    share and may raise :class:`~services.exchanges.budget.OverShare` before sending anything.
    None for background work (scheduled checks).
    """

    __slots__ = ("_budgets", "_ex", "_hub", "defer_after_s", "egress", "exchange_id", "interactive_for")

    def __init__(
        self,
        hub: ExchangeHub,
        exchange_id: str,
        instance: Any,
        egress: Egress,
        interactive_for: int | None = None,
        defer_after_s: float | None = None,
    ) -> None:
        self._hub = hub
        self.exchange_id = exchange_id
        self._ex = instance
        self.egress = egress
        self._budgets = hub.budgets_for(egress)
        self.interactive_for = interactive_for
        self.defer_after_s = defer_after_s

    @property
    def instance(self) -> Any:
        """The underlying ccxt instance (for inspection; calls should go through :meth:`call`)."""
        return self._ex

    async def call(self, method: str, *args: Any, weight: float, **kwargs: Any) -> Any:
        """``instance.<method>(*args, **kwargs)`` after acquiring ``weight`` of the shared budget.

        Raises whatever ccxt raises (or ``TimeoutError`` at the deadline); callers classify.
        """
        ex = self._ex
        hub = self._hub
        if ex.markets is None and not _is_implicit(type(ex), method):
            await hub.markets(self.exchange_id)
            ex.set_markets_from_exchange(hub._template(self.exchange_id))
        pool, per_user = pool_of(TABLE_OF.get(self.exchange_id, self.exchange_id), method, str(ex.apiKey))
        user = self.interactive_for
        if per_user is not None:
            self._budgets.register(pool, per_user)
            weight = 1  # per-user limits count requests
            user = None  # a per-key pool is this user's alone: no one else to be fair to
        await self._budgets.acquire(
            pool or self.exchange_id, weight, user=user, defer_after_s=self.defer_after_s
        )
        options = ex.options
        if _AUTH_TRAP in options:
            # ccxt would turn a later -2015 into DDoSProtection on this instance (binance.py ~12641).
            options[_AUTH_TRAP] = False
        ex.last_response_headers = None
        ex.last_http_status = None
        try:
            async with asyncio.timeout(hub.deadline_s):
                result = await getattr(ex, method)(*args, **kwargs)
        except Exception as exc:
            hub._settle(self.exchange_id, ex, exc, self._budgets)
            raise
        hub._settle(self.exchange_id, ex, None, self._budgets)
        return result


class ExchangeHub:
    """Owns the session, one template instance per exchange and egress route, one market set per
    exchange, and one budget registry per route (each route is another IP: another budget)."""

    def __init__(
        self,
        *,
        url_overrides: dict[str, str] | None = None,
        timeout_ms: int = 10_000,
        budgets: BudgetRegistry | None = None,
        clock: Clock | None = None,
        transport: Transport | None = None,
        egress: Sequence[Egress] = (),
    ) -> None:
        self._overrides = dict(url_overrides or {})
        self.routes: tuple[Egress, ...] = tuple(egress) or (Egress(DIRECT),)
        self._transport = transport or Transport()
        self._timeout_ms = timeout_ms
        self.deadline_s = 2 * timeout_ms / 1000
        self.budgets = budgets or BudgetRegistry()
        """The first route's registry (``direct`` unless configured otherwise)."""
        self._budgets = {self.routes[0].name: self.budgets}
        self._clock = clock or SystemClock()
        self._session: aiohttp.ClientSession | None = None
        self._socks_sessions: dict[str, aiohttp.ClientSession] = {}
        self._templates: dict[tuple[str, str], Any] = {}
        self._public: dict[str, Any] = {}
        self._markets_locks: dict[str, asyncio.Lock] = {}
        self._weight_headers: dict[str, str | None] = {}

    def egress_for(self, user_id: int, whitelist: Iterable[str] = ()) -> Egress:
        """The route this user's calls leave from (:func:`services.exchanges.egress.egress_for`):
        the IP to show them for whitelisting, and what :meth:`client` needs."""
        return egress_for(self.routes, user_id, whitelist)

    def budgets_for(self, egress: Egress) -> BudgetRegistry:
        """The budget registry of one route: its IP's own share of every exchange."""
        registry = self._budgets.get(egress.name)
        if registry is None:
            registry = self._budgets[egress.name] = self.budgets.fresh()
        return registry

    async def client(
        self,
        exchange_id: str,
        credentials: Credentials,
        *,
        egress: Egress | None = None,
        interactive_for: int | None = None,
        defer_after_s: float | None = None,
    ) -> ExchangeClient:
        """A per-connection client: a shallow copy of the exchange's template for ``egress`` (the
        first route when None: single-route deployments) with these keys; ``interactive_for``
        names the user whose tap it serves, ``defer_after_s`` bounds a background call's wait
        for the budget (:class:`ExchangeClient`, :meth:`BudgetRegistry.acquire`)."""
        route = egress or self.routes[0]
        instance = copy.copy(self._template(exchange_id, route))
        instance.options = dict(instance.options)
        instance.apiKey = credentials.api_key
        instance.secret = credentials.secret
        instance.password = credentials.passphrase or ""
        instance.last_response_headers = None
        instance.last_request_headers = instance.last_request_body = instance.last_request_url = None
        return ExchangeClient(self, exchange_id, instance, route, interactive_for, defer_after_s)

    async def markets(self, exchange_id: str) -> dict[str, Any]:
        """The exchange's markets, loaded once from public endpoints and shared by every client."""
        template = self._template(exchange_id)
        if template.markets:
            return template.markets  # type: ignore[no-any-return]
        lock = self._markets_locks.setdefault(exchange_id, asyncio.Lock())
        async with lock:
            if not template.markets:
                await self.budgets.acquire(
                    exchange_id, _MARKETS_WEIGHT.get(exchange_id, _DEFAULT_MARKETS_WEIGHT)
                )
                async with asyncio.timeout(self.deadline_s):
                    await template.load_markets()
        return template.markets  # type: ignore[no-any-return]

    async def public(self, exchange_id: str) -> Any:
        """A keyless ccxt instance with the shared markets, for public calls.

        It bypasses the budget: use it for occasional public data only.
        """
        instance = self._public.get(exchange_id)
        if instance is None:
            await self.markets(exchange_id)
            instance = copy.copy(self._template(exchange_id))
            instance.options = dict(instance.options)
            self._public[exchange_id] = instance
        return instance

    async def close(self) -> None:
        """Close the shared session. ccxt's own ``close()`` would only drop its reference to a
        foreign session and then sleep ``timeout_on_exit`` (250 ms) per instance."""
        for instance in (*self._templates.values(), *self._public.values()):
            instance.session = None
        self._templates.clear()
        self._public.clear()
        for session in self._socks_sessions.values():
            await session.close()
        self._socks_sessions.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stretch_interval(
        self,
        exchange_id: str,
        interval: timedelta,
        connections: int,
        *,
        balances_every: timedelta = timedelta(minutes=30),
    ) -> timedelta:
        """The poller's probe interval for ``exchange_id``, stretched so our budget share covers
        ``connections`` probes (see :meth:`BudgetRegistry.stretch_interval`).

        With several routes each carries its share of the connections (users are spread evenly
        by :func:`egress_for`) against its own budget; the slowest route sets the interval.

        A probe weighs its key check plus, amortised, the balance call made every
        ``balances_every`` (the checker's default): on Binance that is 20 weight, which 2000
        connections refreshing every 30 minutes turn into 1333 weight a minute.
        """
        weights = PROBE_WEIGHTS.get(exchange_id)
        if weights is None:
            weight = GENERIC_PROBE_WEIGHT
        else:
            weight = weights.key_check + weights.balances * min(1.0, interval / balances_every)
        per_route = math.ceil(connections / len(self.routes))
        seconds = max(
            self.budgets_for(route).stretch_interval(exchange_id, per_route, weight, interval.total_seconds())
            for route in self.routes
        )
        return timedelta(seconds=seconds)

    def _template(self, exchange_id: str, egress: Egress | None = None) -> Any:
        """The exchange's template on ``egress`` (the first route, which also loads the markets,
        when None)."""
        route = egress or self.routes[0]
        template = self._templates.get((exchange_id, route.name))
        if template is None:
            if exchange_id not in ccxt.exchanges:
                raise ValueError(f"unknown exchange {exchange_id!r}")
            template = self._templates[exchange_id, route.name] = self._build_template(exchange_id, route)
        return template

    def _session_for(self, route: Egress) -> aiohttp.ClientSession:
        """The shared session; a SOCKS route needs a session of its own (its connector speaks SOCKS)."""
        if route.is_socks:
            assert route.proxy is not None
            session = self._socks_sessions.get(route.name)
            if session is None:
                tls = {"ssl": self._transport.ssl_context} if self._transport.ssl_context else {}
                # python-socks has no socks5h:// scheme: it is socks5:// with names resolved by
                # the proxy (rdns), as ccxt's own socksProxy handling does.
                url, rdns = route.proxy, None
                if url.startswith("socks5h://"):
                    url, rdns = "socks5://" + url.removeprefix("socks5h://"), True
                connector = ProxyConnector.from_url(url, rdns=rdns, **tls)
                session = self._socks_sessions[route.name] = aiohttp.ClientSession(
                    connector=connector, trust_env=False
                )
            return session
        if self._session is None:
            # One pool for all exchanges; per-host cap keeps a burst of probes from opening
            # hundreds of sockets to one API host.
            self._session = self._transport.session(
                connector_options={"limit": 256, "limit_per_host": 64, "ttl_dns_cache": 300}
            )
        return self._session

    def _build_template(self, exchange_id: str, route: Egress) -> Any:
        options: dict[str, Any] = {}
        if exchange_id in _MARKET_TYPES:
            options["fetchMarkets"] = {"types": _MARKET_TYPES[exchange_id]}
        if TABLE_OF.get(exchange_id) == "binance":
            options.update(fetchCurrencies=False, fetchMargins=False)
        template = _shared_class(exchange_id)(
            {
                "session": self._session_for(route),
                "enableRateLimit": False,
                "timeout": self._timeout_ms,
                # The raw body of the last response: we never read it, and on the template it
                # would pin the whole markets payload in memory.
                "enableLastHttpResponse": False,
                "options": options,
            }
        )
        template.has["fetchCurrencies"] = False
        # ccxt's open() creates an SSL context (~10 ms: it loads certifi) and binds the loop on the
        # first request of every instance that has none. Doing it once here lets all copies share it.
        template.open()
        if route.proxy and not route.is_socks:
            # ccxt hands an HTTP(S) proxy to aiohttp per request (``proxy=``), so copies of this
            # template share the one session and still leave through this route.
            if route.proxy.startswith("https://"):
                template.httpsProxy = route.proxy
            else:
                template.httpProxy = route.proxy
        base = self._overrides.get(exchange_id)
        if base:
            template.urls["api"] = rebase_urls(template.urls["api"], base)
        budgets = self.budgets_for(route)
        budgets.register_ccxt_default(exchange_id, float(template.rateLimit))
        self._weight_headers[exchange_id] = budgets.budget(exchange_id).used_weight_header
        return template

    def _settle(
        self, exchange_id: str, instance: Any, exc: BaseException | None, budgets: BudgetRegistry
    ) -> None:
        """After a call: feed the used-weight header to the route's budget; pause the exchange on
        that route on 429/418/bans (another IP's budget is not affected)."""
        headers = instance.last_response_headers
        header = self._weight_headers.get(exchange_id)
        if headers and header:
            used = _header(headers, header)
            if used is not None and used.isdigit():
                budgets.observe_used_weight(exchange_id, float(used))
        if isinstance(exc, ccxt.BaseError):
            self._penalize(exchange_id, instance.last_http_status, headers or {}, exc, budgets)

    def _penalize(
        self,
        exchange_id: str,
        status: int | None,
        headers: dict[str, str],
        exc: BaseException,
        budgets: BudgetRegistry,
    ) -> None:
        classification = classify(exchange_id, exc)
        if classification.verdict is not Verdict.RATE_LIMITED:
            return
        family = TABLE_OF.get(exchange_id, exchange_id)
        code = classification.code
        if (family, code) in _ACCOUNT_SCOPED:
            return
        banned = status == 418 or status == 403 or (family, code) in _IP_BANS
        budgets.penalize(exchange_id, self._retry_after(headers, str(exc)), banned=banned)

    def _retry_after(self, headers: dict[str, str], text: str) -> float | None:
        value = _header(headers, "retry-after")
        if value is not None:
            try:
                return max(float(value), 0.0)
            except ValueError:
                pass  # an HTTP date: fall back to the exchange's default pause
        until = _BANNED_UNTIL.search(text)
        if until:
            return max(int(until.group(1)) / 1000 - self._clock.now().timestamp(), 0.0)
        return None


def _header(headers: dict[str, str], lower_name: str) -> str | None:
    """Case-insensitive lookup: ccxt keeps the server's spelling of header names."""
    for name, value in headers.items():
        if name.lower() == lower_name:
            return value
    return None
