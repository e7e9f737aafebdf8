"""The poller's write path: a batch costs a fixed handful of statements, and nothing unchanged is written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import event, select

from services.core.verdicts import Verdict
from services.monitoring.polling import CheckResult, Poller, PollerConfig
from services.storage.models import Connection, Incident, OutboxMessage
from tests.test_leases import _seed


@contextlib.contextmanager
def statements(engine) -> Iterator[list[str]]:
    """The SQL statements (one per round trip; an executemany counts once) run inside the block."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def _round(poller: Poller, engine, verdict: Verdict) -> list[str]:
    batch = await poller.claim()
    with statements(engine) as seen:
        await poller.record([(c, CheckResult(verdict, "Invalid API-key" if verdict else "")) for c in batch])
    return seen


async def test_a_batch_is_one_read_and_one_bulk_write_and_steady_state_touches_no_incident(
    sessions, engine, vault, clock
):
    await _seed(sessions, vault, clock, users=40)
    poller = Poller(sessions, clock, "w", checkers={}, config=PollerConfig(batch_size=40, jitter=0))
    assert await _round(poller, engine, Verdict.OK) == ["SELECT", "UPDATE"]
    async with sessions() as session:
        assert (await session.scalars(select(Incident))).all() == []  # ok and never failed: no row needed
        rows = (await session.scalars(select(Connection))).all()
    assert all(r.lease_owner is None and r.next_poll_at == clock.now() + timedelta(seconds=60) for r in rows)

    clock.advance(60)
    failing = await _round(poller, engine, Verdict.KEY_INVALID)
    assert failing == ["SELECT", "UPDATE", "INSERT"]  # the 40 pending incidents in one INSERT
    clock.advance(10)
    confirmed = await _round(poller, engine, Verdict.KEY_INVALID)
    assert confirmed.count("UPDATE") == 2 and confirmed.count("INSERT") == 1  # connections, incidents, outbox
    async with sessions() as session:
        assert len((await session.scalars(select(OutboxMessage))).all()) == 40
        states = {i.state for i in await session.scalars(select(Incident))}
        assert states == {"failing"}
        before = {i.id: i.updated_at for i in await session.scalars(select(Incident))}

    clock.advance(60)
    still = await _round(poller, engine, Verdict.KEY_INVALID)
    assert still == ["SELECT", "UPDATE"]  # still failing, nothing new to say: the incidents stay as they are
    async with sessions() as session:
        assert {i.id: i.updated_at for i in await session.scalars(select(Incident))} == before
