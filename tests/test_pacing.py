"""Sliding windows and per-chat pacing (bot/pacing.py), on plain clock seconds."""

from __future__ import annotations

from bot.pacing import AnsweredWindow, ChatPacer, EvenRate, SlidingWindow


def test_window_counts_the_last_span_of_actual_events():
    window = SlidingWindow(3, span=1.0)
    for t in (0.0, 0.5, 0.9):
        assert window.room(t) > 0
        window.record(t)
    assert window.room(0.95) == 0
    assert window.next_free(0.95) == 1.0  # the event at 0.0 leaves the window
    assert window.room(1.0) == 1
    assert window.room(1.91) == 3


def test_private_chats_get_one_message_a_second_and_groups_twenty_a_minute():
    pacer = ChatPacer()
    pacer.record(7, 10.0)
    assert pacer.ready_at(7, 10.2) == 11.0
    assert pacer.ready_at(8, 10.2) == 10.2
    for i in range(20):
        pacer.record(-100, 10.0 + i)
    assert pacer.ready_at(-100, 30.0) == 70.0


def test_even_rate_spreads_a_second_budget_over_the_second():
    """At 25/s, 10 may go in any 0.4 s, never the whole 25 at once; sent as soon as allowed, the
    budget is used in full; a fractional share (25 over 3 senders) keeps its rate."""
    rate = EvenRate(25)
    assert rate.room(0.0) == 10
    sent = []
    t = 0.0
    while t < 10.0:
        for _ in range(rate.room(t)):
            rate.record(t)
            sent.append(t)
        t = round(max(rate.next_free(t), t + 0.01), 6)
    assert 249 <= len(sent) <= 251
    assert max(sum(1 for s in sent if a <= s < a + 0.4 - 1e-9) for a in sent) == 10
    share = EvenRate(25)
    share.limit = 25 / 3
    assert share.spread.limit == 3 and abs(share.spread.span - 0.36) < 1e-9


def test_answered_window_counts_a_request_from_leaving_until_a_second_after_its_answer():
    """However late Telegram counts a request, it is between leaving and the answer: a second's
    budget is never spent again before the slow answers of the last one are a second old."""
    window = AnsweredWindow(3)
    for _ in range(3):
        window.left()
    assert window.room(0.0) == 0
    window.answered(0.5)  # a slow answer: it may have been counted at 0.5
    assert window.room(1.2) == 0  # the other two are still in flight
    window.answered(1.3)
    window.answered(1.3)
    assert window.room(1.4) == 0  # all three answered within the last second
    assert window.room(1.5) == 1 and window.room(2.3) == 3
