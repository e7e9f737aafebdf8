"""Version tokens alone (services/storage/button_tokens.py): pure functions, no database."""

from __future__ import annotations

import re
from types import SimpleNamespace

from bot.callbacks import ChecklistAction, ChecklistCb, OrdersCb, TcRepairCb
from services.storage.button_tokens import (
    TOKEN_PATTERN,
    connection_token,
    failed_deal_token,
    same_version,
    version_token,
)
from services.storage.models import FailedDeal


def _connection(**changes: object) -> SimpleNamespace:
    fields = {"id": 7, "exchange": "binance", "label": "Main", "credentials": b"sealed-1"} | changes
    return SimpleNamespace(**fields)


def _deal(params: dict[str, object]) -> FailedDeal:
    return FailedDeal(id=3, tc_connection_id=2, kind="smart_trade", tc_id=99, params=params)


def test_a_token_is_short_url_safe_and_stable() -> None:
    token = version_token("x", 1, "a")
    assert token == version_token("x", 1, "a") and len(token) == 8
    assert re.fullmatch(TOKEN_PATTERN, token)
    assert version_token(1) != version_token("1")  # values keep their type


def test_any_change_of_what_a_connection_button_shows_is_a_new_version() -> None:
    base = connection_token(_connection())
    for change in ({"credentials": b"sealed-2"}, {"label": "Other"}, {"exchange": "bybit"}, {"id": 8}):
        assert connection_token(_connection(**change)) != base, change
    assert connection_token(_connection()) == base


def test_a_failed_deal_hashes_its_parameters_not_their_order() -> None:
    first = _deal({"pair": "USDT_BTC", "units": "0.01", "tp": [{"price": "1", "volume": 100}]})
    same = _deal({"tp": [{"volume": 100, "price": "1"}], "units": "0.01", "pair": "USDT_BTC"})
    other = _deal({"pair": "USDT_BTC", "units": "5", "tp": [{"price": "1", "volume": 100}]})
    assert failed_deal_token(first) == failed_deal_token(same) != failed_deal_token(other)


def test_same_version_refuses_a_gone_object_and_any_other_token() -> None:
    token = version_token("x")
    assert same_version(token, token)
    assert not same_version(token, None) and not same_version(token, version_token("y"))


def test_the_longest_buttons_with_a_token_stay_within_telegrams_64_bytes() -> None:
    top, token = 2**31 - 1, version_token("x")
    longest = [
        TcRepairCb(action="check", cid=top, acc=2**63 - 1, v=token),
        OrdersCb(action="ally", id=top, page=999, v=token),
        ChecklistCb(action=ChecklistAction.CANCEL, id=top, list=top, v=token),
    ]
    assert all(len(data.pack().encode()) <= 64 for data in longest)
