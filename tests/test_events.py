"""Typed events: every kind survives the outbox payload, and each renders as its own message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.i18n import build_i18n
from bot.notifications import render_batch
from services.core.verdicts import Verdict
from services.monitoring.events import (
    Alert,
    Check,
    DealFailed,
    ExpiryReminder,
    FlappingNotice,
    MuteSummary,
    Notice,
    Recovery,
    Reminder,
    Summary,
    Target,
    VerdictChanged,
    from_payload,
    to_payload,
)
from services.storage.models import OutboxMessage

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MAIN = Target(3, "binance", "Main")
DEAL = Check("deal_error:456", "deal_error", {"pair": "USDT_BTC", "deal_id": 456})
EVENTS = [
    Alert(Verdict.KEY_INVALID, "Invalid API-key", T0),
    Alert(Verdict.NETWORK, "timeout", T0, Summary.FLAPPING_SETTLED),
    VerdictChanged(Verdict.NETWORK, Verdict.IP_NOT_ALLOWED, "ip", T0),
    Reminder(Verdict.KEY_INVALID, "", T0, 2),
    Recovery(Verdict.KEY_INVALID, T0, timedelta(minutes=5)),
    Recovery(Verdict.NETWORK, T0, timedelta(hours=2), Summary.FLAPPING_SETTLED),
    FlappingNotice(5, timedelta(hours=1)),
    MuteSummary(Recovery(Verdict.KEY_INVALID, T0, timedelta(hours=3), Summary.WHILE_MUTED)),
    MuteSummary(Alert(Verdict.KEY_EXPIRED, "", T0, Summary.WHILE_MUTED)),
    MuteSummary(FlappingNotice(6, timedelta(hours=1))),
    ExpiryReminder("expires_soon", T0 + timedelta(days=7)),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_kind_round_trips_through_json(event) -> None:
    for notice in (Notice(MAIN, event), Notice(MAIN, event, DEAL)):
        payload = json.loads(json.dumps(to_payload(notice)))
        assert from_payload(payload) == notice


def test_a_deal_failed_event_keeps_its_recreate_row_and_only_scalar_subject_fields() -> None:
    check = Check("deal_failed:9", "deal_failed", {"pair": "USDT_ETH", "recreate": {"body": {}}})
    payload = to_payload(Notice(MAIN, DealFailed("deal_failed", "deal 9 failed", 77), check))
    parsed = from_payload(json.loads(json.dumps(payload)))
    assert parsed.event == DealFailed("deal_failed", "deal 9 failed", 77)
    assert parsed.check == Check("deal_failed:9", "deal_failed", {"pair": "USDT_ETH"})


def test_a_row_written_in_the_old_flat_shape_still_parses() -> None:
    legacy = {
        "type": "alert",
        "connection_id": 1,
        "exchange": "bybit",
        "label": "Sub",
        "verdict": "key_invalid",
        "detail": "",
        "since": T0.isoformat(),
    }
    assert from_payload(legacy) == Notice(Target(1, "bybit", "Sub"), Alert(Verdict.KEY_INVALID, "", T0))


def test_an_unknown_payload_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown outbox payload"):
        from_payload({"type": "gossip", "connection_id": 1})


def _rendered(*notices: Notice) -> list:
    rows = [
        OutboxMessage(id=i, user_id=1, kind="alert", payload=to_payload(n)) for i, n in enumerate(notices, 1)
    ]
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale("en"):
        return render_batch(rows)


def test_each_kind_renders_one_block_covering_its_row() -> None:
    notices = [Notice(MAIN, event) for event in EVENTS]
    [message] = _rendered(*notices)
    assert message.ids == list(range(1, len(notices) + 1))
    assert len(message.text.split("\n\n")) == len(notices)


def test_the_mute_summary_says_the_mute_ended_and_how_it_is_now() -> None:
    [message] = _rendered(Notice(MAIN, EVENTS[7]))
    assert "Mute ended" in message.text and "works again" in message.text and "3 h 0 min" in message.text
    [alert] = _rendered(Notice(MAIN, EVENTS[8]))
    assert "Mute ended" in alert.text and "API key expired" in alert.text
    assert "Update API key" in [b.text.split(" ", 1)[1] for row in alert.markup.inline_keyboard for b in row]


def test_the_flapping_summary_says_where_it_settled() -> None:
    [recovered] = _rendered(Notice(MAIN, EVENTS[5]))
    assert "stopped failing and recovering" in recovered.text and "works again" in recovered.text
    [failing] = _rendered(Notice(MAIN, EVENTS[1]))
    assert "stopped failing and recovering" in failing.text and "looks down" not in failing.text


def test_outage_alerts_of_one_exchange_fold_into_one_notice_with_one_refresh_button() -> None:
    down = [
        Notice(Target(i, "bybit", f"k{i}", version=f"v{i}"), Alert(Verdict.NETWORK, "", T0)) for i in (4, 5)
    ]
    [message] = _rendered(Notice(MAIN, EVENTS[0]), *down)
    assert message.ids == [1, 2, 3]
    assert "Bybit looks down" in message.text and "2 of your connections" in message.text
    buttons = [b.callback_data for row in message.markup.inline_keyboard for b in row]
    assert buttons.count("c:refresh:4:v4") == 1 and "c:refresh:5:v5" not in buttons  # with its token
