"""Telegram's flood limits as the sender counts them: sliding windows over actual send times.

Telegram allows a bot about 30 messages a second in all, about one a second per private chat and
20 a minute per group (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this).
A fixed window that restarts every second lets up to twice the rate through in one second when
one window's sends bunch at its end and the next one's at its start; a log of the moments
messages actually went out cannot. Times are plain seconds on the application clock, so tests
drive them with a fake clock.
"""

from __future__ import annotations

from collections import deque

GROUP_PER_MINUTE = 20
PRIVATE_GAP_S = 1.0


class SlidingWindow:
    """At most ``limit`` events in any ``span`` seconds, counted at the moments they happened."""

    def __init__(self, limit: float, span: float = 1.0) -> None:
        self.limit = limit
        self.span = span
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        # A microsecond of tolerance: clock timestamps are floats, and an event exactly one span
        # ago must have left the window (a fake clock advanced in tenths lands just short of it).
        while self._times and self._times[0] <= now - self.span + 1e-6:
            self._times.popleft()

    def room(self, now: float) -> int:
        """Events that may happen now without breaking the limit."""
        self._prune(now)
        return max(int(self.limit) - len(self._times), 0)

    def record(self, now: float) -> None:
        self._times.append(now)

    def next_free(self, now: float) -> float:
        """The moment one more event fits (``now`` if it fits now)."""
        if self.room(now) > 0:
            return now
        if int(self.limit) < 1:
            return now + self.span
        return self._times[len(self._times) - int(self.limit)] + self.span


SPREAD_S = 0.4


class EvenRate:
    """``limit`` events a second over a sliding second, and spread within it: at most the share of
    ``SPREAD_S`` (at least one) in any such span.

    Telegram counts a request when it arrives, the sender when it leaves; a second's budget sent
    at once arrives spread by the load on both ends, and its stragglers meet the next second's
    first requests in Telegram's window (bench/mass_revocation.py: 30 in one second, 429s, at a
    configured 25). Sent evenly, a window can only overfill by the jitter of a few requests.
    """

    def __init__(self, limit: float) -> None:
        self.second = SlidingWindow(limit)
        self.spread = SlidingWindow(1, SPREAD_S)
        self.limit = limit

    @property
    def limit(self) -> float:
        return self.second.limit

    @limit.setter
    def limit(self, limit: float) -> None:
        self.second.limit = limit
        burst = max(1, round(limit * SPREAD_S))
        self.spread.limit = burst
        self.spread.span = burst / limit if limit > 0 else SPREAD_S

    def room(self, now: float) -> int:
        return min(self.second.room(now), self.spread.room(now))

    def record(self, now: float) -> None:
        self.second.record(now)
        self.spread.record(now)

    def next_free(self, now: float) -> float:
        return max(self.second.next_free(now), self.spread.next_free(now))


TELEGRAM_PER_SECOND = 30


class AnsweredWindow:
    """At most ``limit`` requests in flight or answered within the last ``span`` seconds.

    Telegram counts a request when it arrives, which is somewhere between the moment it left and
    the moment its answer came back. Any ``span`` of Telegram's count therefore holds only
    requests that, at the moment the last of them left, were in flight or answered less than
    ``span`` before: this window, so it cannot overfill Telegram's however late requests arrive
    (a loaded machine, a slow network). Kept at Telegram's own limit, it binds only when the
    round trip stretches; the configured rate (:class:`EvenRate`) binds otherwise.
    """

    def __init__(self, limit: float, span: float = 1.0) -> None:
        self.limit = limit
        self.span = span
        self.in_flight = 0
        self._answered = SlidingWindow(limit, span)

    def room(self, now: float) -> int:
        self._answered.limit = self.limit
        return max(self._answered.room(now) - self.in_flight, 0)

    def left(self) -> None:
        self.in_flight += 1

    def answered(self, now: float) -> None:
        self.in_flight -= 1
        self._answered.record(now)


class ChatPacer:
    """Per chat: one message a second to a private chat, 20 a minute to a group.

    Chat ids of groups are negative in the Bot API; users' private chats have their positive id.
    """

    def __init__(self) -> None:
        self._last: dict[int, float] = {}
        self._groups: dict[int, SlidingWindow] = {}

    def ready_at(self, chat_id: int, now: float) -> float:
        if chat_id < 0:
            window = self._groups.get(chat_id)
            return window.next_free(now) if window is not None else now
        last = self._last.get(chat_id)
        return now if last is None else max(now, last + PRIVATE_GAP_S)

    def record(self, chat_id: int, now: float) -> None:
        if chat_id < 0:
            self._groups.setdefault(chat_id, SlidingWindow(GROUP_PER_MINUTE, 60.0)).record(now)
            return
        self._last[chat_id] = now
        if len(self._last) > 10_000:  # forget chats that are long past their gap
            self._last = {chat: at for chat, at in self._last.items() if at > now - PRIVATE_GAP_S}
