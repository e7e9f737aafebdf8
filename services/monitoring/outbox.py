"""Durable delivery: messages are rows first, Telegram calls second.

Grouping is decided here (:func:`enqueue_grouped`): a user's first message goes out at once,
and what follows within the group window is folded into that message, which the sender edits
in place (its buttons re-rendered with it, so they stay valid) instead of sending another one.

An event and the outbox row announcing it commit in one transaction, so a crash can never
lose an alert. Senders in any number of processes claim rows with a lease (compare-and-set);
a sender that dies mid-send leaves a lease that expires, so at most the one message in flight
is repeated. Rows are claimed per user, all due rows at once, which keeps each chat's messages
in order and lets the sender merge a burst into one message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.core.verdicts import clip_detail
from services.storage.models import OutboxMessage, User

DEFAULT_GROUP_WINDOW = timedelta(seconds=30)
MAX_ATTEMPTS = 12
LEADER_WAIT = timedelta(seconds=1)  # shortest wait of a row whose leader is not sent yet


def enqueue(
    session: AsyncSession,
    *,
    user_id: int,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    event_at: datetime | None = None,
    delay: timedelta = timedelta(0),
    dedup_key: str | None = None,
) -> OutboxMessage:
    """Add a message to the caller's transaction; ``delay`` lets a burst gather into one message."""
    row = OutboxMessage(
        user_id=user_id,
        kind=kind,
        payload=payload,
        dedup_key=dedup_key,
        event_at=event_at or now,
        not_before=now + delay,
        attempts=0,
        failed=False,
        error="",
        created_at=now,
    )
    session.add(row)
    return row


async def enqueue_grouped(
    session: AsyncSession,
    messages: Sequence[tuple[int, dict[str, Any]]],
    *,
    kind: str,
    now: datetime,
    window: timedelta = DEFAULT_GROUP_WINDOW,
) -> None:
    """Add ``(user_id, payload)`` messages, grouped on the leading edge, in one round trip each way.

    Every row is due at once, so grouping never delays a word. A user who got no message for
    ``window`` opens one (a *leader*: ``fold_into`` is None; rows of the same batch go with it,
    the sender merges a user's due rows). Rows that follow inside the window name the newest
    leader in ``fold_into``: the sender folds them into that leader's message by editing it.
    While the leader itself waits (a retry after a Telegram error), its followers wait with it,
    so the chat never shows them first. A leader that was given up on opens no window.
    """
    if not messages:
        return
    users = {user_id for user_id, _ in messages}
    opened = await session.execute(
        select(OutboxMessage.user_id, OutboxMessage.id, OutboxMessage.not_before, OutboxMessage.sent_at)
        .where(
            OutboxMessage.user_id.in_(users),
            OutboxMessage.created_at > now - window,
            OutboxMessage.fold_into.is_(None),
            OutboxMessage.failed.is_(False),
        )
        .order_by(OutboxMessage.id)
    )
    leaders = {user_id: (row_id, not_before, sent_at) for user_id, row_id, not_before, sent_at in opened}

    def due(user_id: int) -> datetime:
        leader = leaders.get(user_id)
        return now if leader is None or leader[2] is not None else max(now, leader[1])

    await session.execute(
        insert(OutboxMessage),
        [
            {
                "user_id": user_id,
                "kind": kind,
                "payload": payload,
                "dedup_key": None,
                "event_at": now,
                "not_before": due(user_id),
                "fold_into": leaders[user_id][0] if user_id in leaders else None,
                "attempts": 0,
                "failed": False,
                "error": "",
                "created_at": now,
            }
            for user_id, payload in messages
        ],
    )


async def enqueue_once(sessions: async_sessionmaker[AsyncSession], dedup_key: str, **kwargs: Any) -> bool:
    """Enqueue in a transaction of its own unless a row with this key exists (e.g. one reminder per day)."""
    try:
        async with sessions.begin() as session:
            enqueue(session, dedup_key=dedup_key, **kwargs)
    except IntegrityError:
        return False
    return True


def _due(now: datetime) -> Any:
    return and_(
        OutboxMessage.sent_at.is_(None), OutboxMessage.failed.is_(False), OutboxMessage.not_before <= now
    )


@dataclass(frozen=True)
class OpenMessage:
    """A message already in the user's chat and the claimed rows to fold into it."""

    message_id: int
    shown: list[OutboxMessage]
    """The rows it carries already (rendered again with the new ones)."""
    rows: list[OutboxMessage]


@dataclass(frozen=True)
class ClaimedBatch:
    """All due messages of one user, oldest first."""

    user_id: int
    language: str
    messages: list[OutboxMessage]
    """Rows for a new message."""
    folds: list[OpenMessage] = field(default_factory=list)
    """Rows for messages already sent, oldest message first."""

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.messages] + [m.id for fold in self.folds for m in fold.rows]


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    worker_id: str,
    now: datetime,
    *,
    users: int = 50,
    lease: timedelta = timedelta(seconds=60),
) -> list[ClaimedBatch]:
    """Claim every due row of up to ``users`` users that no live sender holds.

    A user with any row under someone else's live lease is skipped entirely, so one chat
    is only ever fed by one sender at a time and its messages keep their order. Users come
    riskiest first (``priority``, see :func:`rank`), then in row order.
    """
    held = and_(OutboxMessage.claimed_until.is_not(None), OutboxMessage.claimed_until > now)
    busy_users = select(OutboxMessage.user_id).where(OutboxMessage.sent_at.is_(None), held)
    claimable = and_(_due(now), User.blocked.is_(False), OutboxMessage.user_id.not_in(busy_users))
    free = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until <= now)
    until = now + lease
    async with sessions.begin() as session:
        if sessions.kw["bind"].dialect.name == "postgresql":
            # Rows another sender is claiming right now are skipped, so concurrent senders split
            # the users between them instead of queueing on each other's row locks.
            candidates = (
                select(OutboxMessage.user_id)
                .join(User, User.id == OutboxMessage.user_id)
                .where(claimable)
                .order_by(func.coalesce(OutboxMessage.priority, 0).desc(), OutboxMessage.id)
                .limit(users * 4)
                .with_for_update(of=OutboxMessage, skip_locked=True)
            )
            picked = list(dict.fromkeys(await session.scalars(candidates)))[:users]
            if not picked:
                return []
            chosen = OutboxMessage.user_id.in_(picked)
        else:
            # SQLite's driver opens the transaction at the first write, so users picked by a
            # separate SELECT may be taken by another sender before the UPDATE runs (which then
            # claims nothing while other users wait). One statement picks and claims at once.
            ranked = (
                select(OutboxMessage.user_id)
                .join(User, User.id == OutboxMessage.user_id)
                .where(claimable)
                .group_by(OutboxMessage.user_id)
                .order_by(
                    func.max(func.coalesce(OutboxMessage.priority, 0)).desc(), func.min(OutboxMessage.id)
                )
                .limit(users)
            )
            chosen = OutboxMessage.user_id.in_(ranked.scalar_subquery())
        claimed_now = await session.execute(
            update(OutboxMessage)
            .where(_due(now), chosen, free)
            .values(claimed_by=worker_id, claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        if not claimed_now.rowcount:  # type: ignore[attr-defined]
            return []
    async with sessions() as session:
        claimed = (
            await session.execute(
                select(OutboxMessage, User.language)
                .join(User, User.id == OutboxMessage.user_id)
                .where(
                    OutboxMessage.claimed_by == worker_id,
                    OutboxMessage.claimed_until == until,
                    OutboxMessage.sent_at.is_(None),
                )
                .order_by(OutboxMessage.user_id, OutboxMessage.id)
            )
        ).all()
        rows = [row for row, _ in claimed]
        languages = {row.user_id: language for row, language in claimed}
        sent, waiting = await _leaders(session, rows)
    for leader_id, due_at in waiting.items():
        await retry_later(
            sessions,
            [row.id for row in rows if row.fold_into == leader_id],
            max(due_at, now + LEADER_WAIT),
            f"waits for row {leader_id}",
            count=False,
        )
    batches: dict[int, list[OutboxMessage]] = {}
    opened: dict[int, dict[int, OpenMessage]] = {}
    for row in rows:
        if row.fold_into in waiting:
            continue
        batches.setdefault(row.user_id, [])
        if row.fold_into in sent:
            message_id, shown = sent[row.fold_into]
            folds = opened.setdefault(row.user_id, {})
            folds.setdefault(row.fold_into, OpenMessage(message_id, shown, [])).rows.append(row)
        else:
            batches[row.user_id].append(row)
    return [
        ClaimedBatch(uid, languages.get(uid, "en"), msgs, list(opened.get(uid, {}).values()))
        for uid, msgs in batches.items()
    ]


async def _leaders(
    session: AsyncSession, rows: list[OutboxMessage]
) -> tuple[dict[int, tuple[int, list[OutboxMessage]]], dict[int, datetime]]:
    """The leaders claimed rows fold into, when not claimed with them: those sent (leader id →
    its message and the rows that message carries) and those still waiting (leader id → when
    it is due).

    A leader given up on (or sent before messages were remembered) is in neither: rows that
    named it go out as a message of their own.
    """
    claimed = {row.id for row in rows}
    wanted = {row.fold_into for row in rows if row.fold_into is not None and row.fold_into not in claimed}
    if not wanted:
        return {}, {}
    leaders = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(wanted))))
    messages = {(leader.user_id, leader.message_id) for leader in leaders if leader.message_id is not None}
    shown: dict[tuple[int, int | None], list[OutboxMessage]] = {}
    if messages:
        for row in await session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.user_id.in_({user for user, _ in messages}),
                OutboxMessage.message_id.in_({message for _, message in messages}),
                OutboxMessage.sent_at.is_not(None),
            )
            .order_by(OutboxMessage.id)
        ):
            shown.setdefault((row.user_id, row.message_id), []).append(row)
    sent = {
        leader.id: (leader.message_id, shown.get((leader.user_id, leader.message_id), []))
        for leader in leaders
        if leader.message_id is not None
    }
    waiting = {
        leader.id: leader.not_before for leader in leaders if leader.sent_at is None and not leader.failed
    }
    return sent, waiting


async def rank(
    sessions: async_sessionmaker[AsyncSession],
    now: datetime,
    stakes: Callable[[AsyncSession, list[int]], Awaitable[dict[int, int]]],
    *,
    users: int = 5000,
) -> int:
    """Give due, unranked rows the priority ``stakes`` says their user has; returns users ranked.

    The sender calls this when a backlog forms, so the riskiest users are claimed first; rows
    enqueued later are ranked on the next call.
    """
    async with sessions.begin() as session:
        unranked = list(
            await session.scalars(
                select(OutboxMessage.user_id)
                .where(_due(now), OutboxMessage.priority.is_(None))
                .group_by(OutboxMessage.user_id)
                .limit(users)
            )
        )
        if not unranked:
            return 0
        scores = await stakes(session, unranked)
        for score in set(scores.values()):
            await session.execute(
                update(OutboxMessage)
                .where(
                    _due(now),
                    OutboxMessage.priority.is_(None),
                    OutboxMessage.user_id.in_([u for u, s in scores.items() if s == score]),
                )
                .values(priority=score)
                .execution_options(synchronize_session=False)
            )
    return len(unranked)


async def mark_sent(
    sessions: async_sessionmaker[AsyncSession], ids: list[int], now: datetime, message_id: int | None
) -> None:
    """The rows went out in Telegram message ``message_id`` (later rows may be folded into it)."""
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(sent_at=now, message_id=message_id, claimed_by=None, claimed_until=None)
        )


async def unfold(sessions: async_sessionmaker[AsyncSession], ids: list[int]) -> None:
    """Telegram refused to edit the message these rows were to be folded into (the user deleted
    it): hand them back as rows of a message of their own."""
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(fold_into=None, claimed_by=None, claimed_until=None)
        )


async def retry_later(
    sessions: async_sessionmaker[AsyncSession],
    ids: list[int],
    not_before: datetime,
    error: str,
    *,
    count: bool = True,
) -> None:
    """Give the rows back with a later due time; after MAX_ATTEMPTS failures they are parked.

    A rate-limit wait is not a failure (``count=False``): the row only waits its turn.
    """
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(
                attempts=OutboxMessage.attempts + (1 if count else 0),
                not_before=not_before,
                claimed_by=None,
                claimed_until=None,
                error=clip_detail(error),
            )
        )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.attempts >= MAX_ATTEMPTS)
            .values(failed=True)
        )


async def give_up(sessions: async_sessionmaker[AsyncSession], ids: list[int], error: str) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(failed=True, claimed_by=None, claimed_until=None, error=clip_detail(error))
        )


async def release_ids(sessions: async_sessionmaker[AsyncSession], ids: list[int]) -> None:
    """Hand claimed rows back untouched (the sender's budget for this second ran out)."""
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(claimed_by=None, claimed_until=None)
        )


async def release(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Drop this sender's claims (graceful shutdown) so another process sends at once."""
    async with sessions.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.claimed_by == worker_id, OutboxMessage.sent_at.is_(None))
            .values(claimed_by=None, claimed_until=None)
        )


# Sent rows are kept a week: long enough to answer "did I get that alert?", short enough to stay small.
SENT_RETENTION = timedelta(days=7)


async def prune_sent(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """Forget messages delivered more than :data:`SENT_RETENTION` ago (daily job)."""
    async with sessions.begin() as session:
        await session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < now - SENT_RETENTION
            )
        )


async def depth(session: AsyncSession) -> int:
    """Messages waiting to be sent (for metrics and readiness)."""
    result = await session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.failed.is_(False))
    )
    return int(result or 0)
