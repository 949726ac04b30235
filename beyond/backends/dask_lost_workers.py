"""What the Dask backend can lose: a worker (the watch below, and what it means for a task that
was on one), or the client's scheduler (client_gone).

A task that raises is never run again: the pool submits with `retries=0`. But a task whose
*worker* dies (killed, out of memory, the machine gone) is sent by the Dask scheduler to another
worker, up to `distributed.scheduler.allowed-failures` times (3 by default), then failed with
KilledWorker; so it may run more than once, each earlier run cut off with its process. The pool
follows the scheduler's remove-worker events (LostWorkerWatch): a task that was assigned to a lost
worker and then ran again is reported with a RerunWarning and listed in `pool.backend.rerun`; one
the pool's stop kept from running again fails with WorkerLost; one Dask gave up on keeps
KilledWorker as its error. For tasks that must never run twice, set `allowed-failures` to 0.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from distributed.scheduler import KilledWorker


class LosesWorkers(Protocol):
    """What the watch tells of a lost worker: a backend running on a client."""

    @property
    def client(self) -> Any: ...

    def worker_removed(self, worker: str, keys: Iterable[str]) -> None:
        """The client's event loop thread: the scheduler removed `worker`, which held `keys`."""


def runs_at_most(error: BaseException | None, lost: list[str] | None) -> int:
    """How many workers a task was sent to, at most, given its error (None: it returned) and the
    workers lost while it was assigned to them: one per lost worker, plus the one that ran it to
    its outcome. KilledWorker is Dask giving up after the task's worker died allowed-failures + 1
    times (once, with allowed-failures 0): no run after those."""
    if isinstance(error, KilledWorker):
        return max(int(getattr(error, "allowed_failures", 0)) + 1, len(lost or ()))
    return len(lost or ()) + 1


class LostWorkerWatch:
    """The handler of a client's "all" event topic: passes each remove-worker event to every
    backend running on the client, and every event to the handler that was there before (a client
    has one handler per topic).

    Subscribed while pools run on the client, unsubscribed when the last one ends (a client still
    subscribed to "all" as it closes makes the scheduler log a CRITICAL error: it sends that very
    client the event of its own removal). Unsubscribing leaves the handler in the client's table
    (distributed's Client.unsubscribe_topic only tells the scheduler), so a watch found there is
    subscribed again, not taken as live: taking it as live lost every event of the next pool (seen
    here: a killed worker unseen in a run right after another pool's).
    """

    # Guards (un)subscribing on any client, and every watch's fields: the messages it sends go out
    # in the order they are made (the client's event loop runs its callbacks in order).
    _lock = threading.Lock()

    def __init__(self, previous: Callable[[Any], Any] | None) -> None:
        self.previous = previous
        self.backends: set[LosesWorkers] = set()
        self.subscribed = False

    @classmethod
    def on(cls, client: Any, backend: LosesWorkers) -> LostWorkerWatch:
        with cls._lock:
            # distributed keeps the handlers in a private dict; read only to keep the one there.
            handlers: dict[str, Any] = getattr(client, "_event_handlers", {})
            current = handlers.get("all")
            watch = current if isinstance(current, LostWorkerWatch) else LostWorkerWatch(current)
            if not watch.subscribed:
                client.subscribe_topic("all", watch)
                watch.subscribed = True
            watch.backends.add(backend)
            return watch

    def forget(self, backend: LosesWorkers) -> None:
        with LostWorkerWatch._lock:
            self.backends.discard(backend)
            if self.backends or self.previous is not None:
                # Pools still run, or the user subscribed first: stay subscribed.
                return
            self.subscribed = False
            with contextlib.suppress(Exception):  # the client has closed: nothing to undo
                backend.client.unsubscribe_topic("all")

    def __call__(self, event: tuple[float, Any]) -> Any:
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            keys = {*message.get("processing-tasks", ()), *message.get("lost-computed-tasks", ())}
            with LostWorkerWatch._lock:
                backends = list(self.backends)
            for backend in backends:
                backend.worker_removed(str(message.get("worker")), keys)
        if self.previous is not None:
            return self.previous(event)
        return None


def client_gone(client: Any) -> str | None:
    """None while the client is connected to its scheduler; else what happened, for messages.
    A client that lost its connection says "connecting" while it tries to reconnect: the futures
    in flight are lost already then (distributed cancels them), whether it succeeds or not."""
    status = client.status
    if status == "running":
        return None
    if status in ("closing", "closed"):
        return f"was closed (status {status!r})"
    return f"lost its scheduler (status {status!r})"
