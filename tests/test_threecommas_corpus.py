"""3Commas' documented and recorded answers (tests/corpus/threecommas) through the real client.

Each case is served exactly as recorded (status, headers, body) and the client must read it the
way the case's ``expect`` says: the error class and verdict of a failure, or the entity fields
that matter (a failed SmartTrade is done although ``data.finished`` is false).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.threecommas.client import ThreeCommasClient
from services.threecommas.entities import Deal, SmartTrade
from services.threecommas.errors import KeyInvalid, RateLimited, ThreeCommasError
from services.threecommas.limiter import KeyLimiter

CORPUS = Path(__file__).parent / "corpus" / "threecommas"
CASES = sorted(CORPUS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text())
    assert case["source"], f"{path.name} names no source"
    return case


@pytest.fixture
async def replay() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A server answering every request with the case put into ``holder['case']``."""
    holder: dict[str, Any] = {}

    async def answer(request: web.Request) -> web.Response:
        response = holder["case"]["response"]
        body = response["body"]
        text = body if isinstance(body, str) else "" if body is None else json.dumps(body)
        headers = {k: v for k, v in response["headers"].items() if k.lower() != "content-type"}
        content_type = response["headers"].get("Content-Type", "application/json").split(";")[0]
        return web.Response(status=response["status"], text=text, headers=headers, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/public/api", holder
    finally:
        await runner.cleanup()


async def call(client: ThreeCommasClient, request: dict[str, str]) -> Any:
    method, path = request["method"], request["path"]
    if path == "/v2/smart_trades":
        return await client.smart_trades(status="all", limit=10)
    if method != "GET" and path.startswith("/v2/smart_trades/"):  # cancel, close_by_market
        return SmartTrade.from_json(await client._request(method, path))
    if path.startswith("/v2/smart_trades/"):
        return await client.smart_trade(int(path.rsplit("/", 1)[1]))
    if path == "/ver1/accounts":
        return await client.accounts()
    if path.endswith("/market_orders"):
        return await client.market_orders_of_deal(Deal.from_json({"id": 1, "pair": "USDT_DOGE"}))
    if path.startswith("/ver1/deals/"):  # show, cancel, panic_sell
        return Deal.from_json(await client._request(method, path))
    if path == "/ver1/accounts/update":
        return await client.update_account_keys(1, "new-api-key", "new-secret")
    if path.endswith("/load_balances"):
        return await client.load_balances(1)
    return await client._request(method, path)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
async def test_corpus_case(path: Path, replay: tuple[str, dict[str, Any]]) -> None:
    url, holder = replay
    case = holder["case"] = load(path)
    expect = case["expect"]
    async with aiohttp.ClientSession() as session:
        client = ThreeCommasClient(session, url, "key", "secret", limiter=KeyLimiter(max_wait_s=0))
        if "error" in expect:
            with pytest.raises(ThreeCommasError) as caught:
                await call(client, case["request"])
            check_error(caught.value, expect)
        else:
            check_answer(await call(client, case["request"]), expect)


def check_error(error: ThreeCommasError, expect: dict[str, Any]) -> None:
    kinds = {type(error).__name__} | {base.__name__ for base in type(error).__mro__}
    assert expect["error"] in kinds, f"{type(error).__name__} is not {expect['error']}"
    if "verdict" in expect:
        assert error.verdict.value == expect["verdict"]
    if "key_problem" in expect:
        assert error.verdict.is_key_problem is expect["key_problem"]
    if "ip_possible" in expect:
        assert isinstance(error, KeyInvalid) and error.ip_possible is expect["ip_possible"]
    if "retry_after" in expect:
        assert isinstance(error, RateLimited) and error.retry_after == pytest.approx(
            expect["retry_after"], abs=1
        )
    if "code" in expect:
        assert error.error == expect["code"]
    if "attributes" in expect:
        assert sorted(error.attributes) == expect["attributes"]


def check_answer(answer: Any, expect: dict[str, Any]) -> None:
    if "smart_trades" in expect:
        assert [{"status": t.status, "finished": t.finished} for t in answer] == expect["smart_trades"]
    if "smart_trade" in expect:
        assert {"status": answer.status, "finished": answer.finished} == expect["smart_trade"]
    if "statuses" in expect:
        assert sorted({o.status.capitalize() for o in answer}) == expect["statuses"]
        assert [o.status for o in answer if o.may_still_lock] == ["active"]  # Inactive was never placed
    if "deal" in expect or "smart_trade_pending" in expect:
        item = {"status": answer.status, "pending_action": answer.pending_action, "error": answer.error_text}
        assert item == expect.get("deal", expect.get("smart_trade_pending"))
    if "key_broken" in expect:
        assert [a.key_broken for a in answer] == expect["key_broken"]
    if "account" in expect:
        assert answer.api_key_invalid is expect["account"]["api_key_invalid"]


def test_every_case_names_its_source() -> None:
    assert len(CASES) >= 15
    for path in CASES:
        assert load(path)["source"].strip()
