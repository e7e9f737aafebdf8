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
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    verdict: Mapped[str] = mapped_column(String(24), default="unknown")
    verdict_detail: Mapped[str] = mapped_column(String(300), default="")
    last_check_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(nullable=True)
    key_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    balances: Mapped[dict[str, Any]] = mapped_column(default=dict)
    balances_at: Mapped[datetime | None] = mapped_column(nullable=True)
    next_poll_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    muted_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="connections")

    __table_args__ = (Index("ix_connections_due", "next_poll_at", "lease_until"),)


class Incident(Base):
    """The alert state of one check on one connection: ok → pending → failing → ok."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    check_kind: Mapped[str] = mapped_column(String(48), default="key")
    state: Mapped[str] = mapped_column(String(16), default="ok")
    verdict: Mapped[str] = mapped_column(String(24), default="ok")
    detail: Mapped[str] = mapped_column(String(300), default="")
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
    error: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_outbox_pending", "sent_at", "failed", "not_before"),)


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
