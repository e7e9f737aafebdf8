"""The services' real hostnames, served by the local fakes over TLS: production's code path in tests.

A local fake reached as ``http://127.0.0.1:PORT`` makes clients take branches production never
takes (ccxt's Binance chooses its error map by hostname, ``get_exceptions_by_url``). Here a test CA
(``trustme``) signs one certificate for every hostname the clients use, a resolver maps each of
those names to ``127.0.0.1`` *and to the port of the fake serving it* (real port 443 cannot be bound
per test), and :class:`services.core.transport.Transport` hands both to keysentry's sessions. URLs,
``Host`` headers and SNI stay ``https://api.binance.com/...``. A name nobody serves fails to resolve,
so no test can reach the internet.

Usage: ``net = ProductionNet(); await net.serve_exchange(server)`` (or ``net.serve_threecommas``),
then build the hub / app with ``transport=net.transport``.
"""

from __future__ import annotations

import functools
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import trustme
from aiohttp.abc import AbstractResolver, ResolveResult

from sandbox.exchanges import LocalExchange
from sandbox.threecommas import LocalThreeCommas
from services.core.transport import Transport

THREECOMMAS_HOSTS = ("api.3commas.io",)
# Exchanges without a local fake whose recorded answers (tests/corpus) are replayed on their hosts.
CORPUS_ONLY = ("kucoin", "bitget", "gate")
# ccxt ids whose hosts a local fake also answers (binanceusdm/binancecoinm share Binance's hosts).
SERVED_BY: dict[str, tuple[str, ...]] = {
    "binance": ("binance", "binanceusdm", "binancecoinm"),
    "bybit": ("bybit",),
    "okx": ("okx",),
}


@functools.cache
def hostnames(exchange_id: str) -> tuple[str, ...]:
    """Every host in ccxt's ``urls['api']`` for ``exchange_id``, ``{hostname}`` filled in as ccxt does."""
    instance = getattr(ccxt, exchange_id)()
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            host = urlsplit(value.replace("{hostname}", instance.hostname or "")).hostname
            if host:
                found.add(host)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(instance.urls["api"])
    return tuple(sorted(found))


@functools.cache
def _ca() -> trustme.CA:
    """One CA per test process: key generation is the slow part."""
    return trustme.CA()


@functools.cache
def _server_context() -> ssl.SSLContext:
    ids = [*(eid for served in SERVED_BY.values() for eid in served), *CORPUS_ONLY]
    names = sorted({host for eid in ids for host in hostnames(eid)} | set(THREECOMMAS_HOSTS))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _ca().issue_cert(*names).configure_cert(context)
    return context


class LocalResolver(AbstractResolver):
    """Real hostname → 127.0.0.1 on the port of the fake serving it; anything else does not resolve."""

    def __init__(self) -> None:
        self.routes: dict[str, int] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        local_port = self.routes.get(host.rstrip(".").lower())
        if local_port is None:
            raise OSError(f"{host} is not served in the test network")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=local_port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


class ProductionNet:
    """Routes real hostnames to local TLS servers; ``transport`` is what keysentry is given."""

    def __init__(self) -> None:
        self.resolver = LocalResolver()
        client = ssl.create_default_context()
        _ca().configure_trust(client)
        self.transport = Transport(resolver=self.resolver, ssl_context=client)

    @property
    def server_context(self) -> ssl.SSLContext:
        return _server_context()

    def route(self, hosts: tuple[str, ...] | list[str], port: int) -> None:
        for host in hosts:
            self.resolver.routes[host] = port

    async def serve_exchange(self, server: LocalExchange) -> LocalExchange:
        """Start ``server`` over TLS and route every host of the ccxt ids it answers for to it."""
        await server.start(ssl_context=self.server_context)
        assert server.port is not None
        for exchange_id in SERVED_BY[server.exchange_id]:
            self.route(hostnames(exchange_id), server.port)
        return server

    async def serve_threecommas(self, server: LocalThreeCommas) -> LocalThreeCommas:
        """Start ``server`` over TLS as ``api.3commas.io``; use ``THREECOMMAS_API_URL``'s default."""
        await server.start(ssl_context=self.server_context)
        assert server.port is not None
        self.route(THREECOMMAS_HOSTS, server.port)
        return server
