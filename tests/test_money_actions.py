"""The money-action row on both backends: one claimer, a lost answer is unknown until reconciled."""

from __future__ import annotations

import asyncio

from services.storage import money_actions
from services.storage.money_actions import IN_FLIGHT_LEASE, ActionState, Unverifiable


async def test_one_claim_wins_and_the_others_see_it_in_flight(sessions, clock):
    now = clock.now()
    claims = await asyncio.gather(
        *(money_actions.claim(sessions, user_id=1, kind="k", target="t", now=now) for _ in range(5))
    )
    assert sum(c.claimed for c in claims) == 1
    assert all(c.action.in_flight for c in claims)


async def test_a_lost_answer_is_unknown_until_the_far_side_says_what_happened(sessions, clock):
    now = clock.now()
    claim = await money_actions.claim(sessions, user_id=1, kind="k", target="t", now=now)
    await money_actions.mark_sent(sessions, claim.action, now)
    # The sender vanished mid-call: past the lease its request counts as possibly carried out.
    later = now + IN_FLIGHT_LEASE * 2
    again = await money_actions.claim(sessions, user_id=1, kind="k", target="t", now=later)
    assert not again.claimed and again.action.state is ActionState.UNKNOWN

    async def down() -> None:
        raise Unverifiable("still down")

    async def nothing() -> None:
        return None

    action = await money_actions.reconcile(sessions, again.action, later, down)  # type: ignore[arg-type]
    assert action.state is ActionState.UNKNOWN
    assert not (await money_actions.claim(sessions, user_id=1, kind="k", target="t", now=later)).claimed
    action = await money_actions.reconcile(sessions, action, later, nothing)  # type: ignore[arg-type]
    assert action.state is ActionState.FAILED  # certainly not carried out: a retry may go
    retry = await money_actions.claim(sessions, user_id=1, kind="k", target="t", now=later)
    assert retry.claimed and retry.action.attempts == 2


async def test_a_done_action_is_never_claimed_again(sessions, clock):
    now = clock.now()
    claim = await money_actions.claim(sessions, user_id=1, kind="k", target="t", now=now)
    async with sessions.begin() as session:
        await money_actions.settle(session, claim.action, ActionState.DONE, now, result={"ref": "x"})
    again = await money_actions.claim(
        sessions, user_id=1, kind="k", target="t", now=now + IN_FLIGHT_LEASE * 9
    )
    assert not again.claimed and again.action.result == {"ref": "x"}
