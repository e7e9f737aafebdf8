"""Redaction by value (issue 11 §6): every credential keysentry holds is masked by its actual value
wherever text leaves the process or is stored, whatever its length or shape, on top of the rules that
mask anything key-shaped."""

from __future__ import annotations

import logging
import random
import re

import pytest
from sqlalchemy import select

from services.core.vault import Credentials, RedactingFilter, Vault, generate_key, redact
from services.core.verdicts import DETAIL_MAX, clip_detail
from services.storage.models import Base
from tests.test_monitoring import monitor

USER = 4242


def test_known_values_are_masked_whatever_their_shape() -> None:
    """An 18-character Bybit key in prose and an OKX passphrase with punctuation are too short or
    too word-like for the shape rules; once the vault has held them, they are masked by value."""
    key, passphrase = "Qx7Lm2Rt9Vb4Nc8Kd1", "Tr4der-pass!"
    text = f"retMsg: api_key {key} not valid (passphrase {passphrase})"
    assert key in redact(text) and passphrase in redact(text)  # the shape rules alone miss both
    vault = Vault([generate_key()])
    vault.open(vault.seal(Credentials(key, "s3cret-" * 6, passphrase)))
    assert key not in redact(text) and passphrase not in redact(text)
    assert redact(text).count("[redacted]") == 2
    # Stored details are redacted before they are cut, so a clipped key never survives as a prefix.
    clipped = clip_detail("x" * (DETAIL_MAX - 5) + " " + key)
    assert key[:4] not in clipped and len(clipped) <= DETAIL_MAX


def test_short_values_are_not_registered() -> None:
    """Values under six characters would mask ordinary words; they tell an attacker nothing."""
    vault = Vault([generate_key()])
    vault.seal(Credentials("abcdef-key-long-enough", "sec", "pw1"))
    assert redact("sec pw1 stay readable") == "sec pw1 stay readable"


@pytest.mark.attack(
    "an exchange error echoing a short key, or an OKX passphrase, leaks into alerts, rows or logs"
)
async def test_no_credential_reaches_alerts_status_rows_or_logs(tmp_path, caplog) -> None:
    """Bybit answers a wrong signature by echoing the signed string, 18-character key included; OKX is
    sent a passphrase it rejects. Neither key, secret nor passphrase may appear in what the user is
    sent, in /status, in any stored row, or in any log line — SQLAlchemy and aiosqlite at DEBUG too."""
    caplog.handler.addFilter(RedactingFilter())  # what bot/logging_setup.py installs on its handler
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "aiosqlite"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with monitor(tmp_path, "bybit", "okx") as m:
        bybit_id, bybit_key = await m.link(USER, "bybit")
        okx_id, okx_key = await m.link(USER, "okx", label="OKX")
        bybit = m.exchanges["bybit"].key(bybit_key)
        okx = m.exchanges["okx"].key(okx_key)
        assert len(bybit_key) == 18 and okx.passphrase
        held = [bybit.api_key, bybit.secret, okx.api_key, okx.secret, okx.passphrase]
        bybit.secret = "Zz" + bybit.secret[2:]  # the stored secret no longer signs: 10004 + origin string
        okx.passphrase = "changed-" + okx.passphrase  # the stored passphrase is now wrong: 50105
        await m.until_failing_seen(bybit_id)
        await m.until_failing_seen(okx_id)
        await m.run_for(120)
        status = await m.rig.say(USER, "/status")
        async with m.rig.app.sessions() as session:
            rows = [
                str(row)
                for table in Base.metadata.sorted_tables
                for row in await session.execute(select(table))
            ]

    sent = [message.html for message in m.messages(USER)] + [status.html]
    assert any("Bybit" in text for text in sent[:-1]), "the wrong signature was alerted"
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name.startswith(("sqlalchemy", "aiosqlite")) for r in caplog.records)
    for value in held:
        assert not [t for t in sent if value in t], "a credential was sent to the user"
        assert not [r for r in rows if value in r], "a credential was stored in clear"
        assert value not in logged, "a credential was logged"


def test_masking_by_value_matches_a_plain_search_for_every_known_value() -> None:
    """Leftmost first and, where known values start at the same place, the longest: whatever
    values share a beginning, contain one another or sit side by side, every one is gone."""
    rng = random.Random(7)
    alphabet = "ab1-!"  # few letters: values collide, nest and share their first six characters
    values = sorted({"".join(rng.choices(alphabet, k=rng.randint(6, 14))) for _ in range(300)})
    vault = Vault([generate_key()])
    for i in range(0, len(values) - 2, 3):
        vault.seal(Credentials(values[i], values[i + 1], values[i + 2]))
    known = values[: len(values) - len(values) % 3]
    reference = re.compile("|".join(re.escape(v) for v in sorted(known, key=len, reverse=True)))
    for _ in range(300):
        text = "".join(
            rng.choice([rng.choice(known), "".join(rng.choices(alphabet + " x", k=5))]) for _ in range(8)
        )
        masked = redact(text)
        assert masked == redact(reference.sub("[redacted]", text))
        assert not any(v in masked for v in known if "[" not in v)
