"""The corpus of real answers (tests/corpus) against the classifier tables and the installed ccxt.

* Every classifier row points at a corpus case whose recorded verdict is the row's verdict.
* Every case names where it comes from (official docs, ccxt source, issue threads).
* The ccxt-drift test: every exchange case is served, as recorded, under the exchange's production
  hostname over TLS, and fetched by the installed ccxt; the exception class must still be the one
  the case records and the classifier must reach the case's verdict. A ccxt upgrade that changes a
  mapping, or a row that no longer matches, fails here loudly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest
from aiohttp import web

from sandbox.corpus import SOURCE_KINDS, Case, all_cases, case
from services.core.verdicts import Verdict
from services.exchanges.classifier import classify
from services.exchanges.classifier_tables import CLASSIFIER_TABLES
from tests.production_net import ProductionNet, hostnames

FILL = {
    "ip": "198.51.100.4",
    "until_ms": 1700000000000,
    "now_ms": 1700000000000,
    "retry_after": 60,
    "limit": 6000,
}
EXCHANGE_CASES = [c for c in all_cases().values() if c.service in CLASSIFIER_TABLES]


def test_every_row_points_at_a_case_with_the_rows_verdict() -> None:
    for table, rules in CLASSIFIER_TABLES.items():
        for rule in rules:
            recorded = case(rule.case)
            assert recorded.service == table, rule
            assert recorded.verdict == rule.verdict, (rule, recorded.verdict)


def test_every_case_names_its_sources() -> None:
    for recorded in all_cases().values():
        assert recorded.sources, recorded.id
        for source in recorded.sources:
            assert source.kind in SOURCE_KINDS, (recorded.id, source)
            if source.kind in ("docs", "issue"):
                assert source.ref.startswith("https://"), (recorded.id, source)
        assert Verdict(recorded.verdict)  # a known verdict


class CorpusServer:
    """Answers every request with the current case, exactly as recorded."""

    def __init__(self) -> None:
        self.current: Case | None = None
        self.seen: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert self.current is not None
        self.seen.append((request.host, request.path))
        headers = {
            k: str(v).replace("$retry_after", str(FILL["retry_after"]))
            for k, v in self.current.headers.items()
        }
        content_type = headers.pop("Content-Type", "application/json")
        return web.Response(
            status=self.current.status,
            text=self.current.render(**FILL),
            content_type=content_type,
            headers=headers,
        )


@pytest.fixture
async def replay(net: ProductionNet) -> AsyncIterator[tuple[CorpusServer, Any]]:
    server = CorpusServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=net.server_context)
    await site.start()
    port = runner.addresses[0][1]
    for service in {c.service for c in EXCHANGE_CASES}:
        net.route(hostnames(service), port)
    session = net.transport.session()
    try:
        yield server, session
    finally:
        await session.close()
        await runner.cleanup()


async def test_every_exchange_case_through_installed_ccxt_on_its_production_host(replay) -> None:
    server, session = replay
    instances: dict[str, Any] = {}
    drift = []
    for recorded in EXCHANGE_CASES:
        exchange = instances.get(recorded.service)
        if exchange is None:
            exchange = instances[recorded.service] = getattr(ccxt, recorded.service)({"session": session})
        server.current = recorded
        try:
            await exchange.fetch(recorded.url, recorded.method, {}, None)
        except ccxt.BaseError as error:
            raised: BaseException = error
        else:
            raise AssertionError(f"{recorded.id}: ccxt raised nothing")
        got = classify(recorded.service, raised)
        if type(raised).__name__ != recorded.ccxt_class or got.verdict != recorded.verdict:
            drift.append(
                (recorded.id, type(raised).__name__, recorded.ccxt_class, str(got.verdict), recorded.verdict)
            )
        assert server.seen[-1] == (recorded.host, recorded.path)  # the real hostname reached the fake
    for exchange in instances.values():
        await exchange.close()
    assert not drift, (
        "ccxt or classifier drifted from the corpus (case, raised, recorded, verdict, recorded):\n"
        + "\n".join(map(str, drift))
    )
    assert len(EXCHANGE_CASES) > 100
