"""Database tables.

All timestamps are stored as UTC. SQLite keeps no timezone, so :class:`UTCDateTime` attaches
UTC on the way out; code above this module only ever sees timezone-aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from services.core.verdicts import DETAIL_MAX


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# Tables whose rows a button names: SQLite must never hand a deleted row's id to a new one, or an
# old button would act on a different object (migration 0004). PostgreSQL sequences never go back.
NEVER_REUSED_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    language: Mapped[str] = mapped_column(String(8), default="en")
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    poll_interval_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    muted_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]

    connections: Mapped[list[Connection]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Connection(Base):
    """One linked account: an exchange API key or a 3Commas key (``kind``)."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="exchange")
    exchange: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(64), default="")
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    key_hint: Mapped[str] = mapped_column(String(16), default="")
    # Vault.fingerprint of the API key (a keyed hash, never the key): the same key is not linked
    # twice. None on rows linked before migration 0009 until connections.linked_with_key fills it.
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    verdict: Mapped[str] = mapped_column(String(24), default="unknown")
    verdict_detail: Mapped[str] = mapped_column(String(DETAIL_MAX), default="")
    last_check_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(nullable=True)
    key_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    balances: Mapped[dict[str, Any]] = mapped_column(default=dict)
    balances_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # What a checker remembers between polls (3Commas: deal marks and failed deals already seen).
    check_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    next_poll_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    muted_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="connections")

    __table_args__ = (Index("ix_connections_due", "next_poll_at", "lease_until"), NEVER_REUSED_IDS)


class Incident(Base):
    """The alert state of one check on one connection: ok → pending → failing → ok."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    check_kind: Mapped[str] = mapped_column(String(48), default="key")
    state: Mapped[str] = mapped_column(String(16), default="ok")
    verdict: Mapped[str] = mapped_column(String(24), default="ok")
    detail: Mapped[str] = mapped_column(String(DETAIL_MAX), default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    pending_since: Mapped[datetime | None] = mapped_column(nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(nullable=True)
    last_alert_at: Mapped[datetime | None] = mapped_column(nullable=True)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    transitions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    muted_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("connection_id", "check_kind"),)


class OutboxMessage(Base):
    """A message to a user, written in the same transaction as the event that caused it.

    Rows hold data, not text, so the domain stays free of Telegram and each message is
    rendered in the language the user has when it is sent.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32), default="alert")
    # Structured event; the bot renders it in the user's language at send time.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(160), nullable=True, unique=True)
    event_at: Mapped[datetime]
    not_before: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(String(DETAIL_MAX), default="")
    created_at: Mapped[datetime]
    # What the user has at stake (services/monitoring/stakes.py), set when a backlog forms so the
    # riskiest users are told first; None until ranked (sent in row order meanwhile).
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The Telegram message that carried this row once sent, so later rows can be folded into it.
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The row that opened this user's group window (services/monitoring/outbox.py enqueue_grouped):
    # this row is folded into that row's message by editing it, not sent as a message of its own.
    fold_into: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_outbox_pending", "sent_at", "failed", "not_before"),)


class OutboxSender(Base):
    """One live outbox sender (a worker process): the send rate is split between the live ones,
    and a 429 pause written here holds for all of them (services/monitoring/send_fleet.py)."""

    __tablename__ = "outbox_senders"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime]
    paused_until: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEntry(Base):
    """What keysentry did on a user's behalf (cancel an order, recreate a deal, remove a key)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    connection_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(48))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class ChatNotice(Base):
    """Group and channel chats already told that keysentry works in private chats only."""

    __tablename__ = "chat_notices"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime]


class ConversationState(Base):
    """aiogram FSM state kept in the database so any process can continue a wizard."""

    __tablename__ = "conversation_states"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class OrderList(Base):
    """One /orders listing of a connection: the balances it was computed against and its caveats.

    Its id is the list version carried in page buttons, so an old message can still be paged
    (or be told plainly that it expired) instead of silently showing another list.
    """

    __tablename__ = "order_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    balances: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    listed_at: Mapped[datetime]

    __table_args__ = (NEVER_REUSED_IDS,)


class ListedOrder(Base):
    """One open order as /orders showed it, so a button carries only this row's short id.

    Order ids and symbols never travel in callback data; a tap looks the row up, checks the
    user owns it, and re-verifies everything against the exchange and 3Commas before acting.
    Numbers are kept as decimal text so nothing is rounded between listing and cancelling.
    """

    __tablename__ = "listed_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    list_version: Mapped[int] = mapped_column(ForeignKey("order_lists.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    exchange_order_id: Mapped[str] = mapped_column(String(80))
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(4))
    price: Mapped[str] = mapped_column(String(48))
    amount: Mapped[str] = mapped_column(String(48))
    filled: Mapped[str] = mapped_column(String(48))
    order_created_at: Mapped[datetime]
    attribution: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))
    deal_ref: Mapped[str | None] = mapped_column(String(48), nullable=True)
    # How the named deal ended (completed, cancelled, failed) when it is finished: an orphan says which.
    deal_ended: Mapped[str | None] = mapped_column(String(16), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(24), nullable=True)
    listed_at: Mapped[datetime]

    __table_args__ = (Index("ix_listed_orders_list", "list_version", "position"), NEVER_REUSED_IDS)


class ThreeCommasAccountLink(Base):
    """Which keysentry exchange connection a 3Commas exchange account trades on (None: skipped)."""

    __tablename__ = "threecommas_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    tc_connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(BigInteger)
    account_name: Mapped[str] = mapped_column(String(128), default="")
    market_code: Mapped[str] = mapped_column(String(48), default="")
    exchange_connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL"), nullable=True, index=True
    )
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("tc_connection_id", "account_id"), NEVER_REUSED_IDS)


class FailedDeal(Base):
    """A failed 3Commas deal or SmartTrade as it was when it failed, for the Recreate button.

    ``params`` holds exactly what a recreate will send (SmartTrade fields, or bot and pair), so
    the confirmation shows the same numbers that go to 3Commas even if the original changes.
    """

    __tablename__ = "failed_deals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    tc_connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    tc_id: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(String(DETAIL_MAX), default="")
    created_at: Mapped[datetime]
    recreated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    recreated_ref: Mapped[str | None] = mapped_column(String(48), nullable=True)

    __table_args__ = (UniqueConstraint("tc_connection_id", "kind", "tc_id"), NEVER_REUSED_IDS)


class MoneyAction(Base):
    """One action that moves money (cancel an order, recreate a deal, update a key in 3Commas).

    ``target`` names what it acts on, so one target has one row whatever the button, listing or
    process: ``state`` says whether a request is in flight, done, failed (a retry may be sent) or
    unknown (sent without an answer: the far side must be asked before anything is sent again).
    See :mod:`services.storage.money_actions`.
    """

    __tablename__ = "money_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(160))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(String(300), default="")
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("kind", "target"), NEVER_REUSED_IDS)


class RecoveryChecklist(Base):
    """What is left to do after one 3Commas account's key incident, as one self-editing message.

    ``since`` is when the incident began: deals and SmartTrades that failed after it are what
    "Recreate all" offers. ``old_key_deleted`` is the one step keysentry cannot see, ticked by
    the user. ``done_at`` is set once, when the message first says everything is done.

    Between taps one worker of several redraws the message per interval: it claims the row by
    moving ``refresh_due_at`` (NULL: due now) one interval ahead; ``shown_digest`` is the digest of
    the text last put on screen, so a redraw that changes nothing is not sent.
    """

    __tablename__ = "recovery_checklists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    tc_connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[datetime]
    chat_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    old_key_deleted: Mapped[bool] = mapped_column(default=False)
    done_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    refresh_due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    shown_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_recovery_checklists_account", "tc_connection_id", "account_id"),
        NEVER_REUSED_IDS,
    )


class GuardSignal(Base):
    """One key check that turned to a verdict an IP block masquerades as, kept for the guard's
    window (minutes) so every worker counts the same wave (services/monitoring/guard.py).

    ``passed_recently``: the key had passed shortly before (evidence the key was fine);
    ``proof``: the answer itself says our IP is blocked (a 3Commas 418)."""

    __tablename__ = "guard_signals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(32))
    egress: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(32))
    connection_id: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime]
    passed_recently: Mapped[bool] = mapped_column(default=False)
    proof: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_guard_signals_scope", "service", "egress", "seen_at"),)


class GuardWave(Base):
    """A suspected block of our ``egress`` route by ``service``, shown as ``verdict``: while it is
    on, that verdict is held for every user behind the route, whichever worker checks them.

    ``announced_at``: the one worker that told the operator; ``cleared_until``: the operator's
    canary key worked, so waves on this route are not started again until then."""

    __tablename__ = "guard_waves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(32))
    egress: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    keys: Mapped[int] = mapped_column(Integer, default=0)
    announced_at: Mapped[datetime | None] = mapped_column(nullable=True)
    cleared_until: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (UniqueConstraint("service", "egress", "verdict"),)
