"""At most one task per key in this process: callers that come while it runs share its result.

Taps repeat: a user who sees no answer yet taps again, and a slow exchange makes that likely.
Work that costs exchange weight (a key refresh, an orders listing) must then run once, not once
per tap. A task (not the first caller's coroutine) does the work, so a caller that goes away
does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The running task of each key; it is forgotten the moment it finishes."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def running(self, key: K) -> asyncio.Task[V] | None:
        return self._running.get(key)

    def start(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> tuple[asyncio.Task[V], bool]:
        """The task of ``key``: the running one (``True``: joined) or a new one running ``work()``."""
        task = self._running.get(key)
        if task is not None:
            return task, True
        task = self._running[key] = asyncio.create_task(work())
        task.add_done_callback(lambda _: self._running.pop(key, None))
        return task, False
