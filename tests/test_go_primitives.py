"""What stage 2 borrows from Go: an unbuffered hand-off, a strict WaitGroup, Go's capacities."""

from __future__ import annotations

import queue
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deadlock_watch import declared_wait
from errors_channel.go_primitives import (
    UnbufferedQueue,
    WaitGroup,
    channel,
    drain,
    receive_if_ready,
)
from tests.thread_probes import caller_of_wait, is_parked, parked_frame

# Part of the lesson: `pytest -m lesson` runs these with tests/test_the_lesson.py.
pytestmark = pytest.mark.lesson


def wait_until_parked_or_gone(thread: threading.Thread) -> None:
    """Return once `thread` is parked for good (see thread_probes) or has ended; no timing."""
    while thread.is_alive() and not is_parked(thread):
        thread.join(0.001)


def test_unbuffered_put_returns_only_once_a_receiver_has_taken_the_item() -> None:
    channel_: UnbufferedQueue[int] = UnbufferedQueue()
    returned = threading.Event()

    def send() -> None:
        channel_.put(42)
        returned.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    # A plain queue.Queue(maxsize=1) would let put() return here and the thread end.
    wait_until_parked_or_gone(sender)
    assert sender.is_alive() and not returned.is_set()
    assert channel_.qsize() == 1  # the item waits in the slot, its sender with it

    assert channel_.get_nowait() == 42
    sender.join(10)
    assert returned.is_set() and not sender.is_alive()


def test_unbuffered_senders_are_released_one_by_one_in_order() -> None:
    channel_: UnbufferedQueue[str] = UnbufferedQueue()
    senders = [
        threading.Thread(target=channel_.put, args=(name,), name=name, daemon=True)
        for name in ("first", "second")
    ]
    for sender in senders:
        sender.start()
        # Start the second only once the first holds the slot, so the order is known.
        wait_until_parked_or_gone(sender)
    first, second = senders
    assert first.is_alive() and second.is_alive()
    # One item at a time: the second sender waits for room, not in the slot beside the first.
    assert channel_.qsize() == 1

    # Taking the first item releases its sender only; the second still waits for its own.
    assert channel_.get(timeout=10) == "first"
    first.join(10)
    assert not first.is_alive()
    wait_until_parked_or_gone(second)
    assert second.is_alive()

    assert channel_.get(timeout=10) == "second"
    second.join(10)
    assert not second.is_alive()


@pytest.mark.parametrize("put", [lambda q: q.put(1, block=False), lambda q: q.put(1, timeout=1)])
def test_unbuffered_queue_refuses_a_put_that_would_not_wait(put: object) -> None:
    channel_: UnbufferedQueue[int] = UnbufferedQueue()
    with pytest.raises(NotImplementedError):
        put(channel_)  # type: ignore[operator]
    assert channel_.qsize() == 0


@given(capacity=st.integers(1, 50))
def test_channel_with_capacity_holds_exactly_that_many_items(capacity: int) -> None:
    buffered: queue.Queue[int] = channel(capacity)
    for item in range(capacity):
        buffered.put_nowait(item)
    with pytest.raises(queue.Full):
        buffered.put_nowait(capacity)
    assert drain(buffered) == list(range(capacity))


def test_channel_of_capacity_zero_is_unbuffered_not_unbounded() -> None:
    # queue.Queue(maxsize=0) would take any number of items without waiting.
    assert isinstance(channel(0), UnbufferedQueue)


def test_channel_refuses_a_negative_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        channel(-1)


def test_drain_takes_what_is_waiting_and_never_blocks() -> None:
    empty: queue.Queue[int] = queue.Queue()
    assert drain(empty) == []
    waiting: queue.Queue[int] = channel(3)
    for item in (3, 1, 2):
        waiting.put(item)
    assert drain(waiting) == [3, 1, 2]
    assert waiting.empty()


def test_receive_if_ready_takes_one_item_if_one_waits_and_never_blocks() -> None:
    # Go's `select { case err := <-errors: ... default: }`, as stage 2's main reads its errors.
    empty: queue.Queue[int] = queue.Queue()
    assert receive_if_ready(empty) == []
    waiting: queue.Queue[int] = channel(3)
    for item in (3, 1):
        waiting.put(item)
    assert receive_if_ready(waiting) == [3]
    assert drain(waiting) == [1]


def test_wait_group_wait_sleeps_until_the_last_done() -> None:
    wait_group = WaitGroup()
    wait_group.add(2)
    waiter = threading.Thread(target=wait_group.wait, daemon=True)
    waiter.start()
    wait_until_parked_or_gone(waiter)
    frame = parked_frame(waiter)
    assert frame is not None
    method, owner = caller_of_wait(frame)
    assert (method, owner) == ("wait", wait_group)

    wait_group.done()
    # One done() of two: wait() may wake to look, but must go back to sleep.
    wait_until_parked_or_gone(waiter)
    assert waiter.is_alive()

    wait_group.done()
    waiter.join(10)
    assert not waiter.is_alive()


def test_wait_group_wakes_every_waiter() -> None:
    wait_group = WaitGroup()
    wait_group.add(1)
    waiters = [threading.Thread(target=wait_group.wait, daemon=True) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        wait_until_parked_or_gone(waiter)
        assert waiter.is_alive()

    wait_group.done()
    for waiter in waiters:
        waiter.join(10)
    assert not any(waiter.is_alive() for waiter in waiters)


def test_wait_group_wait_returns_only_at_zero_whatever_woke_it() -> None:
    wait_group = WaitGroup()
    wait_group.add(1)
    waiter = threading.Thread(target=wait_group.wait, daemon=True)
    waiter.start()
    wait_until_parked_or_gone(waiter)

    # Holding the group's lock, bring the count to zero (which wakes the waiter) and back to one
    # before the waiter can look: when it does, it must find work outstanding and sleep again.
    with wait_group._all_done:
        wait_group.done()
        wait_group.add(1)
    wait_until_parked_or_gone(waiter)
    assert waiter.is_alive()

    wait_group.done()
    waiter.join(10)
    assert not waiter.is_alive()


def test_wait_group_with_nothing_added_does_not_wait() -> None:
    WaitGroup().wait()


def test_wait_group_refuses_more_done_calls_than_it_counted() -> None:
    wait_group = WaitGroup()
    wait_group.add(1)
    wait_group.done()
    wait_group.wait()  # returns at once: the count is zero
    with pytest.raises(ValueError, match="more often"):
        wait_group.done()
    # The refused done() changed nothing: the group still counts zero, and counts again.
    wait_group.add(1)
    wait_group.done()
    wait_group.wait()


def test_wait_group_refuses_a_negative_add() -> None:
    wait_group = WaitGroup()
    wait_group.add(1)
    with pytest.raises(ValueError, match=">= 0"):
        wait_group.add(-1)
    wait_group.done()
    wait_group.wait()


def test_the_wait_group_declares_its_wait_to_the_watchdog() -> None:
    # deadlock_watch names a wait "waitgroup wait" from this declaration, and proves the thread
    # asleep from the Condition.wait beneath it: keep both.
    assert declared_wait(WaitGroup).kind == "waitgroup"
    assert isinstance(WaitGroup()._all_done, threading.Condition)
