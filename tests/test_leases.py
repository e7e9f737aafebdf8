"""Work sharing through the database: leases on connections, claims on the outbox and on the
recovery checklists' background redraws."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from services.core.vault import Credentials
from services.monitoring import outbox
from services.monitoring.polling import Poller, PollerConfig
from services.storage.connections import new_connection
from services.storage.models import Connection, OutboxMessage, RecoveryChecklist
from services.storage.users import get_or_create_user, mark_blocked
from services.threecommas.checklist import claim_due_checklists


async def _seed(sessions, vault, clock, users: int, per_user: int = 1) -> None:
    async with sessions.begin() as session:
        for uid in range(1, users + 1):
            await get_or_create_user(session, uid, "en", clock.now())
            for n in range(per_user):
                session.add(
                    new_connection(
                        vault,
                        user_id=uid,
                        exchange="binance",
                        label=f"k{n}",
                        credentials=Credentials(f"key{uid}-{n}" * 4, "s" * 40),
                        now=clock.now(),
                    )
                )


def _poller(sessions, clock, name: str, batch: int = 50) -> Poller:
    config = PollerConfig(batch_size=batch)
    return Poller(sessions=sessions, clock=clock, worker_id=name, checkers={}, config=config)


async def test_two_workers_claim_disjoint_sets(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=60)
    a, b = _poller(sessions, clock, "a"), _poller(sessions, clock, "b")
    first, second = await asyncio.gather(a.claim(40), b.claim(40))
    ids_a, ids_b = {c.id for c in first}, {c.id for c in second}
    assert not ids_a & ids_b
    assert len(ids_a | ids_b) == 60


async def test_expired_lease_is_taken_over(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=3)
    crashed, survivor = _poller(sessions, clock, "crashed"), _poller(sessions, clock, "survivor")
    assert len(await crashed.claim()) == 3
    assert await survivor.claim() == []
    clock.advance(seconds=crashed.config.lease.total_seconds() + 1)
    assert len(await survivor.claim()) == 3


async def test_release_gives_leases_back_at_once(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=2)
    leaving = _poller(sessions, clock, "leaving")
    await leaving.claim()
    await leaving.release()
    assert len(await _poller(sessions, clock, "other").claim()) == 2


async def test_blocked_users_are_not_polled(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=2)
    async with sessions.begin() as session:
        await mark_blocked(session, 1, True)
    claimed = await _poller(sessions, clock, "w").claim()
    assert [c.user_id for c in claimed] == [2]


async def test_not_due_connections_wait(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=1)
    async with sessions.begin() as session:
        row = (await session.scalars(select(Connection))).one()
        row.next_poll_at = clock.now() + timedelta(seconds=30)
    worker = _poller(sessions, clock, "w")
    assert await worker.claim() == []
    clock.advance(31)
    assert len(await worker.claim()) == 1


async def _enqueue(sessions, clock, user_id: int, n: int) -> None:
    async with sessions.begin() as session:
        for i in range(n):
            outbox.enqueue(session, user_id=user_id, kind="alert", payload={"i": i}, now=clock.now())


async def test_outbox_claims_whole_users_and_keeps_order(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=3)
    for uid in (1, 2, 3):
        await _enqueue(sessions, clock, uid, 3)
    a, b = await asyncio.gather(
        outbox.claim(sessions, "a", clock.now(), users=2), outbox.claim(sessions, "b", clock.now(), users=2)
    )
    users_a, users_b = {x.user_id for x in a}, {x.user_id for x in b}
    assert not users_a & users_b and users_a | users_b == {1, 2, 3}
    for batch in a + b:
        assert [m.payload["i"] for m in batch.messages] == [0, 1, 2]


async def test_user_with_a_live_claim_is_not_fed_to_a_second_sender(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=1)
    await _enqueue(sessions, clock, 1, 1)
    assert len(await outbox.claim(sessions, "a", clock.now())) == 1
    await _enqueue(sessions, clock, 1, 1)  # arrives while "a" is still sending
    assert await outbox.claim(sessions, "b", clock.now()) == []


async def test_crashed_sender_rows_come_back_after_the_lease(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=1)
    await _enqueue(sessions, clock, 1, 2)
    await outbox.claim(sessions, "crashed", clock.now(), lease=timedelta(seconds=60))
    clock.advance(61)
    [batch] = await outbox.claim(sessions, "b", clock.now())
    assert len(batch.messages) == 2
    await outbox.mark_sent(sessions, [m.id for m in batch.messages], clock.now(), None)
    async with sessions() as session:
        assert await outbox.depth(session) == 0


async def test_retry_parks_a_row_after_too_many_failures(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=1)
    await _enqueue(sessions, clock, 1, 1)
    for _ in range(outbox.MAX_ATTEMPTS):
        [batch] = await outbox.claim(sessions, "w", clock.now())
        await outbox.retry_later(sessions, [batch.messages[0].id], clock.now(), "503")
    assert await outbox.claim(sessions, "w", clock.now()) == []
    async with sessions() as session:
        row = (await session.scalars(select(OutboxMessage))).one()
        assert row.failed and row.attempts == outbox.MAX_ATTEMPTS


async def test_dedup_key_enqueues_once(sessions, vault, clock):
    await _seed(sessions, vault, clock, users=1)
    kwargs = {"user_id": 1, "kind": "expiry", "payload": {}, "now": clock.now()}
    assert await outbox.enqueue_once(sessions, "expiry:1:x", **kwargs)
    assert not await outbox.enqueue_once(sessions, "expiry:1:x", **kwargs)


# ----------------------------------------------------------------------------- recovery checklists

EVERY = timedelta(seconds=60)


async def _checklists(sessions, vault, clock, users: int) -> dict[str, int]:
    """One shown checklist per user, plus, for user 1, one done and one never sent."""
    await _seed(sessions, vault, clock, users=users)
    ids: dict[str, int] = {}
    async with sessions.begin() as session:
        for connection in await session.scalars(select(Connection).order_by(Connection.id)):
            for kind in ("shown", "done", "unsent") if connection.user_id == 1 else ("shown",):
                checklist = RecoveryChecklist(
                    user_id=connection.user_id,
                    tc_connection_id=connection.id,
                    account_id=len(ids) + 1,
                    since=clock.now(),
                    created_at=clock.now(),
                    chat_id=None if kind == "unsent" else connection.user_id,
                    message_id=None if kind == "unsent" else len(ids) + 100,
                    done_at=clock.now() if kind == "done" else None,
                )
                session.add(checklist)
                await session.flush()
                ids[f"{kind}{connection.user_id}"] = checklist.id
    return ids


async def test_two_workers_claim_disjoint_checklists_and_only_shown_open_ones(sessions, vault, clock):
    ids = await _checklists(sessions, vault, clock, users=30)
    async with sessions.begin() as session:
        await mark_blocked(session, 30, True)
    shown = {ids[f"shown{uid}"] for uid in range(1, 30)}
    first, second = await asyncio.gather(
        claim_due_checklists(sessions, clock.now(), EVERY, limit=20),
        claim_due_checklists(sessions, clock.now(), EVERY, limit=20),
    )
    ids_a, ids_b = {c.id for c in first}, {c.id for c in second}
    assert not ids_a & ids_b
    assert ids_a | ids_b == shown  # not the done one, not the unsent one, not the blocked user's
    assert {c.user_id for c in first + second} == set(range(1, 30))
    assert await claim_due_checklists(sessions, clock.now(), EVERY) == []
    clock.advance(EVERY.total_seconds() - 1)
    assert await claim_due_checklists(sessions, clock.now(), EVERY) == []
    clock.advance(1)  # one interval after the claim: due again, for one worker
    again = await asyncio.gather(*(claim_due_checklists(sessions, clock.now(), EVERY) for _ in range(3)))
    assert sorted(c.id for batch in again for c in batch) == sorted(shown)


async def test_a_dead_workers_checklists_are_due_again_after_the_interval(sessions, vault, clock):
    ids = await _checklists(sessions, vault, clock, users=2)
    assert len(await claim_due_checklists(sessions, clock.now(), EVERY)) == 2  # then it dies
    clock.advance(30)
    assert await claim_due_checklists(sessions, clock.now(), EVERY) == []
    clock.advance(30)
    taken = await claim_due_checklists(sessions, clock.now(), EVERY)
    assert sorted(c.id for c in taken) == [ids["shown1"], ids["shown2"]]


async def test_checklists_of_users_not_allowed_are_not_claimed(sessions, vault, clock):
    ids = await _checklists(sessions, vault, clock, users=3)
    claimed = await claim_due_checklists(sessions, clock.now(), EVERY, allowed_user_ids={2})
    assert [(c.id, c.user_id, c.language) for c in claimed] == [(ids["shown2"], 2, "en")]
