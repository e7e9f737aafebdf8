"""Order listings merged per user and connection: one in flight, and a cooldown after each.

Why it exists: a listing is the most expensive thing a tap can start (on Binance weight 80 for
every open order plus 20 for the balance; with 3Commas mapped up to 44 more 3Commas requests),
and nothing merged taps: 40 taps on Orders / Refresh ran 40 listings and used 2,981 of the
process's 3,000 Binance weight while another user's scheduled check waited.

* **One in flight.** A tap that comes while a listing of the same connection runs for the same
  user joins it (:class:`~services.core.single_flight.SingleFlight`, kept in the process's
  orders :class:`~services.orders.listing.Deps`) and nothing more is sent.
  The map of running listings lives in the process, which is enough: only the process that talks
  to Telegram lists orders (``serve``, or the all-in-one ``python -m bot``; workers never take
  updates), and there is one of it — Telegram hands updates to one getUpdates poller or to one
  webhook (docs/deployment.md).
* **Cooldown.** A tap within :data:`COOLDOWN` of the last listing is answered from that listing,
  with the seconds until a new one may run. "The last listing" is the stored list and its
  ``listed_at``, so the cooldown is database-backed by construction: it survives a restart, and
  were Telegram ever served by several processes they could at most run one listing each at the
  same moment before the cooldown holds them all.
* Every listing a tap starts goes through here: /orders, Orders, Refresh and the recovery
  checklist, which redraws (and lists) on each of its taps.
* What still gets through draws on the user's share of the exchange budget
  (:mod:`services.exchanges.budget`): this gate keeps taps from costing weight at all; the budget
  keeps even a determined user from delaying anyone else's checks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from services.orders.listing import Deps, Listing, ListingResult, list_orders, newest_listing

COOLDOWN = timedelta(seconds=15)
"""After a listing, taps are answered from it for this long; a fresh one may run after."""


class Turn(StrEnum):
    """What a tap got: a listing of its own, a share of a running one, or a recent one."""

    STARTED = "started"
    JOINED = "joined"
    RECENT = "recent"


@dataclass(frozen=True)
class Ticket:
    """A tap's place in line. ``wait_s``: for a recent listing, seconds until a new one may run."""

    turn: Turn
    running: asyncio.Task[ListingResult] | None = None
    recent: Listing | None = None
    wait_s: float = 0.0

    async def result(self) -> ListingResult:
        """The listing this tap is answered with (awaiting a running one does not cancel it)."""
        if self.running is None:
            assert self.recent is not None
            return self.recent
        return await asyncio.shield(self.running)


async def listing_ticket(
    deps: Deps, user_id: int, connection_id: int, *, cooldown: timedelta = COOLDOWN
) -> Ticket:
    """Join the running listing, take the recent one, or start one. Returns at once: the listing
    itself runs as a task (in ``deps.listings``) behind :meth:`Ticket.result`."""
    key = (user_id, connection_id)
    running = deps.listings.running(key)
    if running is not None:
        return Ticket(Turn.JOINED, running)
    now = deps.clock.now()
    recent = await newest_listing(deps.sessions, user_id, connection_id, now - cooldown)
    if recent is not None:
        wait = cooldown - (now - recent.listed_at)
        return Ticket(Turn.RECENT, recent=recent, wait_s=max(wait.total_seconds(), 0.0))
    task, joined = deps.listings.start(key, lambda: list_orders(deps, user_id, connection_id))
    return Ticket(Turn.JOINED if joined else Turn.STARTED, task)
