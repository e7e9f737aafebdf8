"""What a 3Commas alert says beyond its reason, as typed facts: the bot words them in the user's
language (``bot/views/threecommas.py``), never this package.

:mod:`services.threecommas.checks` makes one for an exchange account in trouble, balances that do
not load, a profit that stopped updating, and a cancel or close 3Commas cannot carry out. Each is
stored in the observation's ``subject`` as flat fields (:meth:`to_subject`), because the outbox
keeps a subject's scalars only (:mod:`services.monitoring.events`); :func:`finding` reads it back
from an alert's reason and subject. 3Commas' and the exchange's own words (a lock reason, an error,
a pending status) are kept as they are: they are evidence, not our wording.

An alert stored before these fields existed reads back as None: its English ``detail`` is shown as
it was written. The observation's ``detail`` stays the English record for logs and incident rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from services.threecommas.entities import decimal_text

STALE_UPNL = "stale_upnl"
BALANCES_NOT_LOADING = "balances_not_loading"


class AccountSymptom(StrEnum):
    """What can be wrong with a 3Commas exchange account; each value is the reason its alert gives."""

    KEY_INVALID = "key_invalid"  # 3Commas can no longer use the exchange key (Verdict.KEY_INVALID)
    KEY_EXPIRED = "key_expired"  # the same, the key having expired (Verdict.KEY_EXPIRED)
    LOCKED = "account_locked"
    AUTO_BALANCE_ERROR = "auto_balance_error"
    KEY_EXPIRES_SOON = "keys_expire_soon"
    KEY_STATE_UNKNOWN = "keys_state_unknown"


class StaleBasis(StrEnum):
    """How a frozen profit was told apart from a flat market."""

    PROFIT = "profit"  # the profit recomputed at the live price differs from the one 3Commas shows
    PRICE = "price"  # the price 3Commas shows differs from the market's


class StuckAction(StrEnum):
    """A request 3Commas has not carried out; each value is the reason its alert gives."""

    CANCEL = "cannot_cancel"
    CLOSE = "cannot_close"  # close at market price


@dataclass(frozen=True, slots=True)
class AccountTrouble:
    """Everything wrong with one exchange account, worst first: the first is the alert's reason."""

    symptoms: tuple[AccountSymptom, ...]
    lock_reason: str | None = None
    """3Commas' words for the lock, if it gave any."""
    auto_balance_error: str | None = None
    """3Commas' words for the auto-balance error; None when it only flags one."""
    key_state: str | None = None
    """The ``api_keys_state`` 3Commas reported, with :attr:`AccountSymptom.KEY_STATE_UNKNOWN`."""

    def to_subject(self) -> dict[str, Any]:
        return {
            "symptoms": [symptom.value for symptom in self.symptoms],
            "lock_reason": self.lock_reason,
            "auto_balance_error": self.auto_balance_error,
            "reported_key_state": self.key_state,
        }

    @classmethod
    def from_subject(cls, subject: Mapping[str, Any]) -> AccountTrouble:
        return cls(
            tuple(AccountSymptom(symptom) for symptom in subject["symptoms"]),
            _text(subject.get("lock_reason")),
            _text(subject.get("auto_balance_error")),
            _text(subject.get("reported_key_state")),
        )


@dataclass(frozen=True, slots=True)
class BalancesFailing:
    """3Commas cannot load an account's balances (its key is fine), and the last good balance."""

    error: str
    """3Commas' words."""
    last_good_usd: Decimal | None = None
    last_good_at: datetime | None = None

    def to_subject(self) -> dict[str, Any]:
        return {
            "balances_error": self.error,
            "last_good_usd": decimal_text(self.last_good_usd),
            "last_good_at": self.last_good_at.isoformat() if self.last_good_at else None,
        }

    @classmethod
    def from_subject(cls, subject: Mapping[str, Any]) -> BalancesFailing:
        at = subject.get("last_good_at")
        return cls(
            str(subject["balances_error"]),
            _decimal(subject.get("last_good_usd")),
            datetime.fromisoformat(at) if at else None,
        )


@dataclass(frozen=True, slots=True)
class StaleUpnl:
    """3Commas' profit figures have not moved for ``minutes`` while the market did.

    With :attr:`StaleBasis.PROFIT`, ``shown`` and ``live`` are profits in USD (what 3Commas shows,
    what it is at ``live_price``); with :attr:`StaleBasis.PRICE` they are prices (what 3Commas shows,
    the market's). ``gap`` is relative: 0.04 is 4 %.
    """

    basis: StaleBasis
    shown: Decimal
    live: Decimal
    live_price: Decimal
    gap: Decimal
    minutes: int

    def to_subject(self) -> dict[str, Any]:
        return {
            "stale_basis": self.basis.value,
            "stale_shown": decimal_text(self.shown),
            "stale_live": decimal_text(self.live),
            "stale_live_price": decimal_text(self.live_price),
            "stale_gap": decimal_text(self.gap),
            "stale_minutes": self.minutes,
        }

    @classmethod
    def from_subject(cls, subject: Mapping[str, Any]) -> StaleUpnl:
        return cls(
            StaleBasis(subject["stale_basis"]),
            Decimal(str(subject["stale_shown"])),
            Decimal(str(subject["stale_live"])),
            Decimal(str(subject["stale_live_price"])),
            Decimal(str(subject["stale_gap"])),
            int(subject["stale_minutes"]),
        )


@dataclass(frozen=True, slots=True)
class StuckClosing:
    """A cancel or close at market the trader asked for, still pending in 3Commas."""

    action: StuckAction
    status: str
    """The pending status 3Commas shows (``cancel_pending``, ``panic_sell_pending``): its own word."""
    minutes: int
    """Since keysentry first saw it pending."""
    error: str | None = None
    """3Commas' (or the exchange's) words, when the item carries any."""

    def to_subject(self) -> dict[str, Any]:
        return {
            "pending_status": self.status,
            "pending_minutes": self.minutes,
            "pending_error": self.error,
        }

    @classmethod
    def from_subject(cls, reason: str, subject: Mapping[str, Any]) -> StuckClosing:
        return cls(
            StuckAction(reason),
            str(subject["pending_status"]),
            int(subject["pending_minutes"]),
            _text(subject.get("pending_error")),
        )


Finding = AccountTrouble | BalancesFailing | StaleUpnl | StuckClosing


def finding(kind: str, reason: str, subject: Mapping[str, Any]) -> Finding | None:
    """The typed facts of an alert (its check kind, reason and subject); None when it has none: an
    alert of another kind, or one stored before these fields were (show its ``detail`` as it is)."""
    try:
        if kind.startswith("tc_account:") and "symptoms" in subject:
            return AccountTrouble.from_subject(subject)
        if reason == BALANCES_NOT_LOADING and "balances_error" in subject:
            return BalancesFailing.from_subject(subject)
        if reason == STALE_UPNL and "stale_basis" in subject:
            return StaleUpnl.from_subject(subject)
        if reason in StuckAction._value2member_map_ and "pending_status" in subject:
            return StuckClosing.from_subject(reason, subject)
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return None
    return None


def _text(raw: object) -> str | None:
    return None if raw is None or raw == "" else str(raw)


def _decimal(raw: object) -> Decimal | None:
    return None if raw is None or raw == "" else Decimal(str(raw))
