"""How keysentry opens HTTP connections to exchanges and 3Commas: one seam, production by default.

Production uses aiohttp's own DNS resolver and the system's certificate store. Tests hand in a
:class:`Transport` whose resolver sends the services' *real* hostnames (``api.binance.com``,
``www.okx.com``, ``api.3commas.io``…) to local servers and whose TLS context trusts a test CA, so
URLs, ``Host`` headers and SNI stay exactly as in production. That matters because clients branch
on the URL: ccxt's Binance picks its error map by hostname (``get_exceptions_by_url`` in
ccxt/async_support/binance.py), so -2008 is an ``AuthenticationError`` on ``api.binance.com`` and
a plain ``ExchangeError`` on ``127.0.0.1``. ``EXCHANGE_URL_OVERRIDES`` stays for operators
(testnets, proxies); tests use this seam instead.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

__all__ = ["Transport"]


@dataclass(frozen=True)
class Transport:
    """``resolver`` replaces DNS (None: aiohttp's default); ``ssl_context`` replaces the system trust
    store for HTTPS (None: aiohttp's default verification)."""

    resolver: AbstractResolver | None = None
    ssl_context: ssl.SSLContext | None = None

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        """A connector using this transport's resolver and TLS trust; ``kwargs`` go to aiohttp."""
        if self.resolver is not None:
            kwargs["resolver"] = self.resolver
        if self.ssl_context is not None:
            kwargs["ssl"] = self.ssl_context
        return aiohttp.TCPConnector(**kwargs)

    def session(self, *, connector_options: dict[str, Any] | None = None) -> aiohttp.ClientSession:
        """A session over :meth:`connector`. ``trust_env=False`` as ccxt's default
        (``aiohttp_trust_env``): proxies are configured explicitly, never by environment."""
        return aiohttp.ClientSession(connector=self.connector(**(connector_options or {})), trust_env=False)
