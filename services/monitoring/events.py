"""What keysentry tells a user, as typed data: one frozen dataclass per message kind.

The monitoring pipeline produces these, the outbox stores them, the bot renders them (one
``match`` in ``bot/notifications.py``). They are serialised to and parsed from the outbox
payload here and nowhere else, so a field added to an event cannot be silently dropped on the
way to the user (the mute summary once was).

A :class:`Notice` is the envelope of one outbox row: which connection it is about
(:class:`Target`), which further check behind that connection if not the key itself
(:class:`Check`, e.g. a 3Commas account or deal), and the event. :class:`OutageNotice` is never
stored: it is folded at delivery time from a user's outage alerts (``pipeline.fold_outages``).

The payload is flat JSON (``type`` plus the event's fields next to the target's), the shape the
outbox has always held, so rows written before a deploy still parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.core.verdicts import Verdict


class Summary(StrEnum):
    """Marks an Alert/Recovery that summarises a period instead of reporting a live transition."""

    FLAPPING_SETTLED = "flapping_settled"
    WHILE_MUTED = "while_muted"


# -- what the incident machine decides ------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    verdict: Verdict
    detail: str
    since: datetime  # first failed probe
    summary: Summary | None = None


@dataclass(frozen=True)
class Recovery:
    verdict: Verdict  # what was failing
    since: datetime
    duration: timedelta
    summary: Summary | None = None


@dataclass(frozen=True)
class Reminder:
    verdict: Verdict  # the current verdict, which may differ from the alerted one
    detail: str
    since: datetime
    number: int  # 1-based


@dataclass(frozen=True)
class FlappingNotice:
    transitions: int  # ok↔failing transitions seen within ``window``
    window: timedelta


@dataclass(frozen=True)
class VerdictChanged:
    previous: Verdict
    verdict: Verdict  # always a key problem
    detail: str
    since: datetime  # the incident's first failed probe, unchanged


IncidentEvent = Alert | Recovery | Reminder | FlappingNotice | VerdictChanged


# -- further message kinds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MuteSummary:
    """The mute ended and the user's picture changed meanwhile: ``change`` says how it is now."""

    change: Alert | Recovery | FlappingNotice


@dataclass(frozen=True)
class DealFailed:
    """A one-off happening behind a 3Commas key (a deal or SmartTrade failed or was cancelled).

    ``failed_deal_id`` is the stored recreate plan the message's button names, if one could be made.
    """

    reason: str
    detail: str
    failed_deal_id: int | None = None
    failed_deal_version: str = ""


@dataclass(frozen=True)
class ExpiryReminder:
    """A key expires (or loses a permission by exchange policy) on ``due``."""

    warning: str
    due: datetime


Event = IncidentEvent | MuteSummary | DealFailed | ExpiryReminder


@dataclass(frozen=True)
class Target:
    """The connection a notice is about, as the user named it; ``version`` is its token
    (:func:`services.storage.button_tokens.connection_token`) for the message's buttons."""

    connection_id: int
    exchange: str
    label: str
    key_hint: str = ""  # names the connection when it has no label (rows before it was added: "")
    version: str = ""


@dataclass(frozen=True)
class Check:
    """A check behind a connection other than its key: ``kind`` as ``Incident.check_kind``
    (e.g. ``deal_error:456``), ``reason`` the precise cause, ``subject`` scalar facts to show."""

    kind: str
    reason: str
    subject: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    """One outbox row: an event about a connection, or about one check behind it."""

    target: Target
    event: Event
    check: Check | None = None


@dataclass(frozen=True)
class OutageNotice:
    """Several of one user's connections failing on one exchange at once: the exchange looks down."""

    exchange: str
    connection_ids: tuple[int, ...]
    versions: tuple[str, ...]
    """Each connection's version token, for the Refresh button (see :class:`Target`)."""


# -- outbox payload ------------------------------------------------------------------------------------


def to_payload(notice: Notice) -> dict[str, Any]:
    """The outbox row's JSON for ``notice``; :func:`from_payload` reads it back."""
    target = notice.target
    payload: dict[str, Any] = {
        "connection_id": target.connection_id,
        "exchange": target.exchange,
        "label": target.label,
        "key_hint": target.key_hint,
        "version": target.version,
        **_event_payload(notice.event),
    }
    if notice.check is not None:
        payload |= {
            "check": notice.check.kind,
            "reason": notice.check.reason,
            "subject": _scalars(notice.check.subject),
        }
    return payload


def from_payload(payload: Mapping[str, Any]) -> Notice:
    target = Target(
        int(payload.get("connection_id") or 0),
        payload.get("exchange", ""),
        payload.get("label", ""),
        payload.get("key_hint", ""),
        str(payload.get("version", "")),
    )
    check = None
    if payload.get("check"):
        check = Check(payload["check"], str(payload.get("reason", "")), dict(payload.get("subject") or {}))
    return Notice(target, _parse_event(payload), check)


def _event_payload(event: Event) -> dict[str, Any]:
    match event:
        case Alert(verdict, detail, since, summary):
            return _problem_payload("alert", verdict, detail, since) | (
                {"summary": summary.value} if summary else {}
            )
        case VerdictChanged(previous, verdict, detail, since):
            return _problem_payload("verdict_changed", verdict, detail, since) | {"previous": previous.value}
        case Reminder(verdict, detail, since, number):
            return _problem_payload("reminder", verdict, detail, since) | {"number": number}
        case Recovery(verdict, since, duration, summary):
            return {
                "type": "recovery",
                "verdict": verdict.value,
                "since": since.isoformat(),
                "duration_s": duration.total_seconds(),
            } | ({"summary": summary.value} if summary else {})
        case FlappingNotice(transitions, window):
            return {"type": "flapping", "transitions": transitions, "window_s": window.total_seconds()}
        case MuteSummary(change):
            return {"type": "mute_summary", "change": _event_payload(change)}
        case DealFailed(reason, detail, failed_deal_id, failed_deal_version):
            return {
                "type": "event",
                "reason": reason,
                "detail": detail,
                "failed_deal_id": failed_deal_id,
                "failed_deal_version": failed_deal_version,
            }
        case ExpiryReminder(warning, due):
            return {"type": "expiry", "warning": warning, "due": due.isoformat()}
    raise TypeError(f"not an event: {event!r}")


def _problem_payload(kind: str, verdict: Verdict, detail: str, since: datetime) -> dict[str, Any]:
    """The fields an alert, a verdict change and a reminder share: the problem and since when."""
    return {"type": kind, "verdict": verdict.value, "detail": detail, "since": since.isoformat()}


def _parse_event(p: Mapping[str, Any]) -> Event:
    kind = p.get("type")
    summary = Summary(p["summary"]) if p.get("summary") else None
    if kind == "alert":
        return Alert(_verdict(p), p.get("detail", ""), _time(p["since"]), summary)
    if kind == "verdict_changed":
        return VerdictChanged(Verdict(p["previous"]), _verdict(p), p.get("detail", ""), _time(p["since"]))
    if kind == "reminder":
        return Reminder(_verdict(p), p.get("detail", ""), _time(p["since"]), int(p.get("number", 1)))
    if kind == "recovery":
        return Recovery(
            _verdict(p), _time(p["since"]), timedelta(seconds=float(p.get("duration_s", 0))), summary
        )
    if kind == "flapping":
        return FlappingNotice(int(p.get("transitions", 0)), timedelta(seconds=float(p.get("window_s", 3600))))
    if kind == "mute_summary":
        change = _parse_event(p["change"])
        if not isinstance(change, Alert | Recovery | FlappingNotice):
            raise ValueError(f"a mute summary cannot report {change!r}")
        return MuteSummary(change)
    if kind == "event":
        deal = p.get("failed_deal_id")
        return DealFailed(
            str(p.get("reason", "")),
            str(p.get("detail", "")),
            None if deal is None else int(deal),
            str(p.get("failed_deal_version", "")),
        )
    if kind == "expiry":
        return ExpiryReminder(str(p.get("warning", "")), _time(p["due"]))
    raise ValueError(f"unknown outbox payload type {kind!r}")


def _verdict(p: Mapping[str, Any]) -> Verdict:
    value = p.get("verdict", "unknown")
    return Verdict(value) if value in Verdict._value2member_map_ else Verdict.UNKNOWN


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _scalars(subject: Mapping[str, Any]) -> dict[str, Any]:
    """Keep outbox rows small: scalar fields and flat lists of them only (recreate plans live in
    their own table; an account's symptom codes are such a list)."""
    return {k: v for k, v in subject.items() if _scalar(v) or (isinstance(v, list) and all(map(_scalar, v)))}


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
