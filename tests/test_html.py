"""HTML that cannot break (issue 11.7): user and exchange text shows exactly as written, and long
messages are cut where Telegram allows, on Telegram's own measure (UTF-16 units of visible text).

The local Telegram parses every message as Telegram does (sandbox/telegram_html.py, a port of
TDLib's parser) and refuses broken HTML and texts over 4096 UTF-16 units: a message it accepts
is a message Telegram accepts.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiogram.client.default import DefaultBotProperties
from sqlalchemy import select

from bot.i18n import build_i18n
from bot.notifications import render_batch
from bot.views.html import Html, bold, html, join, pages, plain, split, visible_length
from sandbox.telegram import LocalTelegram, running_local_telegram
from sandbox.telegram_html import parse_html, utf16_length
from services.core.vault import Credentials
from services.core.verdicts import Verdict
from services.monitoring.events import Alert, Notice, Target, to_payload
from services.storage.connections import new_connection
from services.storage.models import Connection, OutboxMessage
from services.storage.users import get_or_create_user
from tests.test_monitoring import Monitor, monitor

USER = 71
ROCKETS = "🚀" * 32  # 32 characters, 64 UTF-16 units: the longest label, twice over on Telegram's measure
MARKUP = "a&b<i> <B"  # what a careless label, asset or account name may hold


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    async with running_local_telegram(rate_limits=False) as server:
        server.add_user(USER)
        yield server


def test_split_cuts_only_where_telegram_html_stays_valid_and_loses_nothing() -> None:
    rng = random.Random(11)
    words = ["🚀", MARKUP, "plain", "ß", "日本", "&amp;"]
    for _ in range(200):
        parts: list[str] = []
        for i in range(rng.randint(1, 300)):
            word = rng.choice(words) * rng.randint(1, 20)
            parts.append(
                rng.choice(
                    [
                        bold(word),
                        html('<a href="https://example.com/{i}">{w}</a>', i=i, w=word),
                        html("<b>{a}\n<i>{b}</i></b>", a=word, b=word),
                        Html("\n\n"),
                        Html("\n"),
                        plain(word + " "),
                    ]
                )
            )
        text = join("", parts)
        limit = rng.choice([40, 500, 4096])
        messages = split(text, limit)
        for message in messages:
            visible = parse_html(message).text  # raises on anything Telegram would refuse
            assert utf16_length(visible) <= limit and visible_length(message) == utf16_length(visible)
        kept = "".join(parse_html(m).text for m in messages)
        assert re.sub(r"\s", "", kept) == re.sub(r"\s", "", parse_html(text).text)


def test_pages_pack_entries_by_visible_length_and_count() -> None:
    entries = [html("<b>{n}</b> {r}", n=n, r=ROCKETS) for n in range(10)]  # 66 or 67 units each
    runs = pages(entries, room=200, most=5)
    assert [len(r) for r in runs] == [2] * 5  # three would be 67 * 3 + 2 * 2 > 200
    assert [len(r) for r in pages(entries, room=10_000, most=4)] == [4, 4, 2]
    assert pages([], room=100, most=3) == [range(0, 0)]


@pytest.mark.attack("alerts gathered past Telegram's UTF-16 limit are refused and never delivered")
async def test_many_alerts_with_astral_labels_become_messages_telegram_accepts(tg: LocalTelegram) -> None:
    """Sixty alerts due together for one user: each message fits 4096 UTF-16 units (a count of
    characters would let about a third more through), is valid HTML and shows labels as typed."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    notices = [
        Notice(
            Target(n, "binance", f"{ROCKETS}{n} {MARKUP}"), Alert(Verdict.UNKNOWN, "🚀" * 150 + MARKUP, since)
        )
        for n in range(60)
    ]
    rows = [
        OutboxMessage(id=i, user_id=USER, kind="alert", payload=to_payload(n)) for i, n in enumerate(notices)
    ]
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale("en"):
        messages = render_batch(rows)
    assert len(messages) > 1 and sorted(i for m in messages for i in m.ids) == list(range(60))
    bot = tg.make_bot(default=DefaultBotProperties(parse_mode="HTML"))
    for message in messages:
        await bot.send_message(USER, message.text, reply_markup=message.markup)
    await bot.session.close()
    assert not tg.errors, tg.transcript(USER)
    shown = tg.bot_messages(USER)
    assert sum(s.text.count(MARKUP) for s in shown) == 120  # in each title and each detail
    assert all(utf16_length(s.text) <= 4096 for s in shown)


@pytest.mark.attack("a balance asset, label or account name with markup breaks a message")
async def test_markup_in_names_assets_and_errors_shows_literally_everywhere(tmp_path) -> None:
    async with monitor(tmp_path, "binance", threecommas=True) as m:
        tg, binance, tc = m.rig.tg, m.exchanges["binance"], m.tc
        assert tc is not None
        tc.set_rate_limit(per_minute=10_000)
        key = binance.add_key(balances={"<B": 3, "a&b<i>": 2, "USDT": 50})
        binance.add_order(key.api_key, "BTC/USDT", "buy", "20000", "0.001")
        await m.rig.say(USER, "/link binance")
        await m.rig.say(USER, MARKUP)
        await m.rig.say(USER, key.api_key)
        linked = await m.rig.say(USER, key.secret)
        assert "linked" in linked.text and MARKUP in linked.text and "<B" in linked.text, tg.transcript(USER)
        assert "a&b<i>" in linked.text.replace(MARKUP, "")  # the asset, not only the label

        _, tc_key = await m.link_threecommas(USER, tc)
        tc.add_account(tc_key, exchange="binance", name=MARKUP, balances_usd=100)
        await m.tick(0)
        page = await m.rig.say(USER, "/status")
        assert page.text.count(MARKUP) == 2, page.text  # the exchange key's label, the 3Commas account

        await m.rig.press(USER, page, "1 Orders")
        listing = await tg.wait_for_bot_message(USER, contains="📋")
        assert MARKUP in listing.text and "BTC/USDT" in listing.text

        binance.set_key_state(key.api_key, "revoked")
        tc.reset_exchange_keys(tc_key)
        await m.run_for(180, step=10)
        alerts = [x.text for x in tg.bot_messages(USER) if x.text.startswith("🔴")]
        assert any(f"Binance · {MARKUP}" in a for a in alerts), tg.transcript(USER)
        assert any(f"«{MARKUP}»" in a for a in alerts), tg.transcript(USER)
        assert not tg.errors, tg.transcript(USER)


@pytest.mark.attack("a /status page over 4096 UTF-16 units, or cut inside a tag")
async def test_status_pages_with_astral_labels_and_details_fit_telegram(tmp_path) -> None:
    """Twenty connections whose labels and exchange errors are emoji: a page of eight would be
    about 5,000 UTF-16 units (under 4096 characters). Pages hold fewer, each is accepted, and
    every connection appears exactly once across them."""
    async with monitor(tmp_path) as m:
        await _seed_failing(m, 20)
        page = await m.rig.say(USER, "/status")
        seen: list[str] = []
        while True:
            seen += re.findall(r"^[🟢🟡🔴⚪] (\d+)\. ", page.text, flags=re.MULTILINE)
            assert utf16_length(page.text) <= 4096
            if not any("Next" in b.text for b in page.buttons):
                break
            edits = page.edits
            await m.rig.press(USER, page, "Next")
            await m.rig.tg.wait_for(lambda e=edits: page.edits > e)
        assert seen == [str(n) for n in range(1, 21)], seen
        assert "page 1 of" not in page.text and re.search(r"page (\d+) of \1", page.text)
        assert not m.rig.tg.errors, m.rig.tg.transcript(USER)


async def _seed_failing(m: Monitor, count: int) -> None:
    """``count`` connections of USER, each failing with an exchange error written in emoji."""
    m.rig.tg.add_user(USER)
    now = m.rig.clock.now()
    async with m.rig.app.sessions.begin() as session:
        await get_or_create_user(session, USER, "en", now)
        for n in range(count):
            c = new_connection(
                m.rig.app.vault,
                user_id=USER,
                exchange="binance",
                label=ROCKETS,
                credentials=Credentials(f"key-{n:04d}-abcdefgh", "secret"),
                now=now,
            )
            c.verdict, c.verdict_detail, c.last_check_at = "unknown", "🚀" * 200, now
            session.add(c)
    async with m.rig.app.sessions() as session:
        assert len((await session.scalars(select(Connection))).all()) == count
