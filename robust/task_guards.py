"""What keeps a careless caller from breaking a stage 3 Task: it runs once, its repr never raises.

Not the lesson (that is pool.py): a Task belongs to the first Pool it is given to, and a second
Pool (or the same task twice in one) is refused as a whole before any task runs
(tests/test_robust.py, "refused before any task runs").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Claimable(Protocol):
    _owner: object | None


# Guards Task._owner while a Pool claims its tasks, so that two pools built at the same moment from
# the same task cannot both claim it. Held once per Pool, never while a task runs.
_claiming = threading.Lock()


def claim(tasks: Sequence[Claimable], mark: object) -> None:
    """Make the pool with this mark the owner of every task, or of none: a task runs once.

    The tasks hold a mark, not the Pool: a task that held its pool, in a pool that holds its
    tasks, would make a reference cycle, and a finished run's tasks would then wait for the cyclic
    garbage collector, which costs about as much per task as the rest of the pool together when it
    comes (test_a_finished_pools_tasks_are_freed_without_the_cyclic_garbage_collector).
    """
    with _claiming:
        for claimed, task in enumerate(tasks):
            if task._owner is not None:
                where = "twice in this Pool" if task._owner is mark else "to another Pool already"
                # Undo this pool's claims so far: the Pool is refused as a whole.
                for earlier in tasks[:claimed]:
                    earlier._owner = None
                raise ValueError(
                    f"task {claimed} ({task!r}) was given {where}; a Task runs at most once, "
                    "so make a new Task for each run"
                )
            task._owner = mark


def describe(fn: Callable[[], Any], finished: bool, err: BaseException | None) -> str:
    """A task's repr, which never raises whatever fn and err are: it is what a failing program
    prints."""
    try:
        name = repr(getattr(fn, "__qualname__", None) or type(fn).__name__)
    except Exception:
        name = "?"
    if not finished:
        return f"<Task {name} not run>"
    if err is None:  # `is None`, not truthiness: an exception may define __bool__
        return f"<Task {name} ok>"
    try:
        return f"<Task {name} failed: {err!r}>"
    except Exception:
        return f"<Task {name} failed: {type(err).__name__}>"
