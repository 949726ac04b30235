"""A deadlock watchdog for Python threads and asyncio tasks, after Go's runtime.

When every thread is parked in a wait that only another thread could end, `Watchdog` prints Go's
`fatal error: all threads are asleep - deadlock!` with each thread's wait and stack, and ends the
process with exit status 2 (or calls your `on_deadlock`):

    with Watchdog():
        run_something_that_might_deadlock()

A class whose methods are a wait says so with a `__deadlock_watch__` class attribute (see
`declared.py`): stage 2's WaitGroup names its wait, and the pools of stages 3 and 4 declare the
waits in which their main thread wakes now and then only to let a Ctrl-C in (and stage 4's
asyncio pool, that its own Ctrl-C handler only interrupts, so it is no way out).

docs/watchdog.md says what counts as asleep, the ways out (signals, timers), the cost and the
limits. The modules: threads.py and loops.py (is this thread asleep?), ways_out.py (signals and
timers), watchdog.py (sampling and the grace period), report.py, frames.py (the raw readings).
"""

from deadlock_watch.declared import WaitDeclaration, declared_wait
from deadlock_watch.frames import current_frames
from deadlock_watch.report import BlockedTask, BlockedThread, DeadlockReport, exit_like_go
from deadlock_watch.watchdog import Watchdog

__all__ = [
    "BlockedTask",
    "BlockedThread",
    "DeadlockReport",
    "WaitDeclaration",
    "Watchdog",
    "current_frames",
    "declared_wait",
    "exit_like_go",
]
