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
from services.monitoring.incidents import Observation
from services.storage.models import OutboxMessage
from services.threecommas.checks import TcState, Thresholds, run_checks
from tests.test_deal_checks import account, deal, state

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


def _rendered(*notices: Notice, locale: str = "en") -> list:
    rows = [
        OutboxMessage(id=i, user_id=1, kind="alert", payload=json.loads(json.dumps(to_payload(n))))
        for i, n in enumerate(notices, 1)
    ]
    i18n = build_i18n()
    with i18n.context(), i18n.use_locale(locale):
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


# -- 3Commas symptoms: what the check found, in the user's language ---------------------------------


def _alerts(observations: list[Observation]) -> list[Notice]:
    """The alert each failing observation becomes, as the poller builds it."""
    return [
        Notice(MAIN, Alert(o.verdict, o.detail, T0), Check(o.check_kind, o.verdict_or_reason, o.subject))
        for o in observations
        if not o.ok
    ]


def _spaced(text: str) -> str:
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def test_3commas_findings_travel_through_the_outbox_and_are_worded_in_the_users_language() -> None:
    """What a 3Commas check found beyond its headline is stored typed (numbers, names, 3Commas'
    own words) and worded at delivery: in Russian for a Russian user, 3Commas' words as they are."""
    locked = account(
        id=8, is_locked=True, lock_reason="Subscription expired", auto_balance_error="Cannot load balances"
    )
    odd = account(id=9, api_keys_state="disabled")
    first = run_checks(TcState([account(usd_amount="1234.5")], [], [], None, {}), None, prices={}, now=T0)
    stuck = deal(status="cancel_pending", deal_has_error=True, error_message="Invalid API key")
    frozen = deal(id=457, actual_usd_profit="20", current_price="50000")
    before = run_checks(state(deals=[frozen]), None, prices={"BTC/USDT": 50000}, now=T0).snapshot
    later = T0 + timedelta(minutes=16)
    observations = [
        *run_checks(state(accounts=[locked, odd]), None, prices={}, now=T0).observations,
        *run_checks(
            TcState([account()], [], [], None, {7: "invalid_api_key"}), first.snapshot, prices={}, now=later
        ).observations,
        *run_checks(state(deals=[stuck]), None, prices={}, now=T0).observations,
        *run_checks(state(deals=[frozen]), before, prices={"BTC/USDT": 52000}, now=later).observations,
    ]
    notices = _alerts(observations)
    assert [n.check.reason for n in notices if n.check] == [
        "account_locked",
        "keys_state_unknown",
        "balances_not_loading",
        "cannot_cancel",
        "stale_upnl",
    ]
    english = [_spaced(m.text) for m in _rendered(*notices)]
    russian = [_spaced(m.text) for m in _rendered(*notices, locale="ru")]
    assert len(english) == len(russian) == 1
    for line in (
        "<i>account locked: Subscription expired; auto-balance error: Cannot load balances</i>",
        "<i>3Commas reports the key state “disabled”</i>",
        "3Commas says: <i>invalid_api_key</i>",
        "Last good balance: 1,234.50 USD, Jan 1, 2026, 12:00 AM UTC.",
        "<i>Asked to cancel it: still cancel_pending.</i>\n3Commas says: <i>Invalid API key</i>",
        "<i>3Commas shows a profit of 20.00 USD; at the live price 52,000 it is 60.00 USD (4.08% apart). "
        "Unchanged for 16 minutes.</i>",
    ):
        assert line in english[0], english[0]
    for line in (
        "<i>аккаунт заблокирован: Subscription expired; ошибка автобалансировки: Cannot load balances</i>",
        "<i>3Commas сообщает состояние ключа «disabled»</i>",
        "3Commas сообщает: <i>invalid_api_key</i>",
        "Последний известный баланс: 1 234,50 USD, 1 янв. 2026 г., 00:00 UTC.",
        "<i>Отмена запрошена, но статус всё ещё cancel_pending.</i>\n"
        "3Commas сообщает: <i>Invalid API key</i>",
        "<i>3Commas показывает прибыль 20,00 USD, а по текущей цене 52 000 она составляет 60,00 USD "
        "(расхождение 4,08%). Без изменений 16 минут.</i>",
    ):
        assert line in russian[0], russian[0]
    assert "asked to" not in russian[0] and "unchanged for" not in russian[0], russian[0]


@pytest.mark.parametrize(("minutes", "words"), [(1, "1 минуту"), (3, "3 минуты"), (21, "21 минуту")])
def test_a_cancel_that_hangs_counts_its_minutes_in_russian(minutes, words) -> None:
    closing, hang = deal(status="cancel_pending"), Thresholds(stuck_after=timedelta(minutes=1))
    first = run_checks(state(deals=[closing]), None, prices={}, now=T0, thresholds=hang)
    at = T0 + timedelta(minutes=minutes)
    later = run_checks(state(deals=[closing]), first.snapshot, prices={}, now=at, thresholds=hang)
    [message] = _rendered(*_alerts(later.observations), locale="ru")
    assert f"Отмена запрошена, но статус всё ещё cancel_pending спустя {words}." in message.text, message.text


def test_an_alert_stored_before_findings_shows_its_english_record_as_it_was() -> None:
    """Outbox rows written before the findings were typed carry only the English detail: shown as
    it was, the headline in the user's language."""
    old = [
        Check("tc_account:7", "account_locked", {"name": "Main", "account_id": 7}),
        Check(
            "deal_error:456",
            "cannot_cancel",
            {"pair": "USDT_BTC", "status": "cancel_pending", "error": "Invalid API key"},
        ),
        Check("stale_upnl:456", "stale_upnl", {"pair": "USDT_BTC", "symbol": "BTC/USDT"}),
    ]
    detail = "deal 456 on USDT_BTC: asked to cancel it, still cancel_pending after 20 min: Invalid API key"
    notices = [Notice(MAIN, Alert(Verdict.UNKNOWN, detail, T0), check) for check in old]
    [message] = _rendered(*notices, locale="ru")
    assert message.text.count(f"<i>{detail}</i>") == 3, message.text
    assert "аккаунт заблокирован" in message.text and "3Commas не может её отменить" in message.text
