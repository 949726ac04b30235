"""What stage 2 needs from Go that Python's standard library lacks: a WaitGroup and Go's channels.

Kept apart from `pool.py` so that `diff naive/pool.py errors_channel/pool.py` shows the post's
change and nothing else. Stage 2 and its fixes import this; stage 1 needs neither.

- `WaitGroup` is Go's `sync.WaitGroup`: a counter that `wait()` watches until it reaches zero.
  (When you hold the threads, `Thread.join` on each does the same job.)
- `channel(capacity)` is Go's `make(chan T, capacity)`. For capacity > 0 that is simply
  `queue.Queue(maxsize=capacity)`. Capacity 0, Go's unbuffered channel, is the catch:
  `queue.Queue(maxsize=0)` means *unbounded*, the opposite. `UnbufferedQueue` is the real thing: a
  put returns only once a get has taken its item.
- `drain(items)` is Go's receive loop with `select { case x := <-ch: ... default: }`: take what is
  waiting, never block; `receive_if_ready(items)` is that select once: one item, if one waits.
"""

from __future__ import annotations

import queue
import threading
from typing import ClassVar, TypeVar

Item = TypeVar("Item")


class WaitGroup:
    """Go's sync.WaitGroup: wait() blocks until done() has been called once per add()ed count."""

    # Read by the deadlock watchdog (deadlock_watch), which this stage never imports: a thread in
    # these methods waits on a WaitGroup, and the report says "waitgroup wait".
    __deadlock_watch__: ClassVar[dict[str, str]] = {"kind": "waitgroup"}

    def __init__(self) -> None:
        # Guards _count; wait() sleeps on it until the done() that brings the count to zero.
        self._count = 0
        self._all_done = threading.Condition()

    def add(self, count: int) -> None:
        if count < 0:
            # Go accepts a negative delta; here only done() counts down, so a slip cannot wake
            # wait() while work is still running.
            raise ValueError(f"WaitGroup.add() takes a count >= 0, got {count}")
        with self._all_done:
            self._count += count

    def done(self) -> None:
        with self._all_done:
            if self._count == 0:
                # Go panics here too: a wait() could already have returned on a count that lied.
                raise ValueError("WaitGroup.done() called more often than add() counted")
            self._count -= 1
            if self._count == 0:
                self._all_done.notify_all()

    def wait(self) -> None:
        with self._all_done:
            # A loop, not an if: a waiter must see the count at zero itself, whatever woke it.
            while self._count > 0:
                self._all_done.wait()


class UnbufferedQueue(queue.Queue[Item]):
    """Go's unbuffered channel: put() returns only once a get() has taken that very item."""

    def __init__(self) -> None:
        # One slot, so a second sender waits in the ordinary way (not_full) for the first.
        super().__init__(maxsize=1)
        self._items_put = 0
        self._items_taken = 0
        # Shares the queue's mutex; a sender sleeps on it until a receiver has taken its item.
        self._taken = threading.Condition(self.mutex)

    def _put(self, item: Item) -> None:  # queue.Queue calls this with the mutex held
        super()._put(item)
        self._items_put += 1

    def _get(self) -> Item:  # queue.Queue calls this with the mutex held
        self._items_taken += 1
        # Wake every sender: each checks whether it was its own item that left.
        self._taken.notify_all()
        return super()._get()

    def put(self, item: Item, block: bool = True, timeout: float | None = None) -> None:
        if not block or timeout is not None:
            # Go's non-blocking send needs `select`; the stages never use one.
            raise NotImplementedError("an unbuffered queue here only supports blocking put()")
        with self._taken:
            while self._qsize() >= self.maxsize:
                self.not_full.wait()
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()
            # Items leave in the order they came, so ours is taken once the count reaches it.
            my_turn = self._items_put
            while self._items_taken < my_turn:
                self._taken.wait()


def drain(items: queue.Queue[Item]) -> list[Item]:
    """Everything waiting in `items` right now (call it only once no one puts any more)."""
    drained = []
    while True:
        try:
            drained.append(items.get_nowait())
        except queue.Empty:
            return drained


def receive_if_ready(items: queue.Queue[Item]) -> list[Item]:
    """Go's `select { case x := <-ch: ... default: }`: the next item if one waits; never blocks."""
    try:
        return [items.get_nowait()]
    except queue.Empty:
        return []


def channel(capacity: int) -> queue.Queue[Item]:
    """Go's make(chan T, capacity): holds `capacity` items; capacity 0 is unbuffered."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    if capacity == 0:
        return UnbufferedQueue()
    return queue.Queue(maxsize=capacity)
