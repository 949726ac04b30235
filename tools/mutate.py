"""Mutation run: break the pools and the watchdog one named bug at a time; the tests must notice.

`python -m tools.mutate` (or `make mutate`). Each entry of MUTANTS below is one deliberate bug: a
file, an exact snippet of its source, what replaces it, a name that says what the bug is, and the
test files that should catch it. For each mutant the run edits a scratch copy of the repository
(never the working tree), runs those test files there with `pytest -x`, a timeout per test (30 s;
no test of this suite needs more, and a hang is caught in about that time) and one for the whole
run, and calls the mutant killed if any test fails or the run times out (a pool that hangs is
caught that way, and the progress line says so), survived if every test passes. pytest then exits
at once (tools/pytest_exit_at_once.py) rather than wait for the threads a deadlocked mutant left.

Why a table and not mutmut or cosmic-ray: mutmut 3.8 makes 1846 mutants of these four files, and
most of the behaviour under test runs in subprocesses (Ctrl-C, deadlocks, the watchdog's reports),
which mutmut cannot map to tests; at 10-30 s per mutant that is hours, not minutes. Here each
mutant is a bug somebody could write, and the table doubles as the list of bugs the suite is known
to catch.

A table goes stale when the code changes: every snippet must occur exactly once in its file, or
the run refuses to start and names the stale entries (tests/test_mutate.py checks this in
`make test`). A mutant the suite is known not to catch says why in `survives`: "Equivalent:" when
no behaviour changes, else why no test of behaviour can catch it. It still counts as survived,
but does not fail the run; docs/development.md lists them.

The last line is `mutants: K killed, S survived`. Exit status 0 if only mutants with a reason
survived, 1 if another did, 2 for a stale table or bad arguments.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from demo_args import DemoArgumentParser

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: each (original, replacement) edit is applied to `path`."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    # Why the suite cannot catch it ("Equivalent: ..." if no behaviour changes); empty if it must.
    survives: str = ""
    # Edits of other files that belong to the same bug: (path, original, replacement).
    elsewhere: tuple[tuple[str, str, str], ...] = ()

    def every_edit(self) -> list[tuple[str, str, str]]:
        """(path, original, replacement) for each edit, in every file the bug touches."""
        return [(self.path, *edit) for edit in self.edits] + list(self.elsewhere)


def _mutant(
    name: str,
    path: str,
    original: str,
    replacement: str,
    tests: Sequence[str],
    survives: str = "",
) -> Mutant:
    return Mutant(name, path, ((original, replacement),), tuple(tests), survives)


ROBUST = "robust/pool.py"
ROBUST_WAIT = "robust/ctrl_c_safe_wait.py"
ROBUST_GUARDS = "robust/task_guards.py"
EC_POOL = "errors_channel/pool.py"
EC_FIXES = "errors_channel/fixes.py"
GO_PRIMITIVES = "errors_channel/go_primitives.py"
NAIVE = "naive/pool.py"
WD_FRAMES = "deadlock_watch/frames.py"
WD_THREADS = "deadlock_watch/threads.py"
WD_LOOPS = "deadlock_watch/loops.py"
WD_WAYS_OUT = "deadlock_watch/ways_out.py"
WATCHDOG = "deadlock_watch/watchdog.py"
WD_PLUGIN = "deadlock_watch/pytest_plugin.py"
WD_WHOSE = "deadlock_watch/whose_threads.py"
BEYOND = "beyond/pool.py"
TASK = "beyond/task.py"
SCHEDULER = "beyond/scheduler.py"
WAITING = "beyond/waiting.py"
CANCELLATION = "beyond/cancellation.py"
WORKER_THREADS = "beyond/backends/worker_threads.py"
PROTOCOL = "beyond/backends/protocol.py"
BEYOND_ASYNCIO = "beyond/backends/event_loop.py"
ASYNCIO_WORKERS = "beyond/backends/event_loop_workers.py"
PROCESSES = "beyond/backends/child_processes.py"
PROCESS_CHILD = "beyond/backends/child_process_loop.py"
PROCESS_FRAMES = "beyond/backends/child_process_frames.py"
PROCESS_HANDLE = "beyond/backends/child_process_handle.py"
PROCESS_GROUP = "beyond/backends/child_process_group.py"
PROCESS_DISPATCHER = "beyond/backends/child_process_dispatcher.py"
DASK = "beyond/backends/dask_cluster.py"
DASK_LOST = "beyond/backends/dask_lost_workers.py"
START_METHOD = "plots/start_method.py"
CONTENDERS = "plots/contenders.py"

# Test files, most likely killer first: -x stops at the first failure.
T_ROBUST = ("tests/test_robust.py", "tests/test_robust_interrupts.py", "tests/test_the_lesson.py")
T_ROBUST_INTERRUPTS = ("tests/test_robust_interrupts.py", "tests/test_robust.py")
T_ROBUST_START = ("tests/test_robust_interrupts.py", "tests/test_thread_limits.py")
T_EC = ("tests/test_errors_channel.py", "tests/test_the_lesson.py")
T_EC_START = ("tests/test_thread_limits.py", "tests/test_errors_channel.py")
T_GO = ("tests/test_go_primitives.py", "tests/test_errors_channel.py")
T_NAIVE = ("tests/test_naive.py", "tests/test_the_lesson.py")
T_NAIVE_START = ("tests/test_thread_limits.py", "tests/test_naive.py")
T_WATCHDOG = (
    "tests/test_watchdog.py",
    "tests/test_watchdog_signals.py",
    "tests/test_watchdog_asyncio.py",
)
T_WATCHDOG_SIGNALS = (
    "tests/test_watchdog_signals.py",
    "tests/test_watchdog.py",
    "tests/test_watchdog_asyncio.py",
)
T_WATCHDOG_ASYNCIO = (
    "tests/test_watchdog_asyncio.py",
    "tests/test_watchdog.py",
    "tests/test_watchdog_signals.py",
)
T_WATCHDOG_POOLS = ("tests/test_watchdog_pools.py",)
T_PLUGIN = ("tests/test_pytest_deadlock.py",)
T_BEYOND = (
    "tests/test_beyond.py",
    "tests/test_beyond_streaming.py",
    "tests/test_beyond_interrupts.py",
    "tests/test_beyond_demo.py",
)
T_BEYOND_INTERRUPTS = (
    "tests/test_beyond_interrupts.py",
    "tests/test_beyond.py",
    "tests/test_beyond_demo.py",
)
T_PROCESSES = ("tests/test_beyond_processes.py",)
T_PIPELINED = ("tests/test_processes_pipelined.py", "tests/test_beyond_processes.py")
T_DASK = ("tests/test_beyond_dask.py",)
T_CONTENDERS = ("tests/test_contenders.py",)

T_BEYOND_ASYNCIO_INTERRUPTS = (
    "tests/test_beyond_asyncio_interrupts.py",
    "tests/test_beyond_asyncio.py",
)

MUTANTS: tuple[Mutant, ...] = (
    # --- robust/pool.py ---
    _mutant(
        "robust-ctrl-c-does-not-wait-for-running-workers",
        ROBUST,
        "            pending.clear()\n            stop = workers.wait_until_none_running(raised)\n",
        "            pending.clear()\n            stop = raised\n",
        T_ROBUST_INTERRUPTS,
    ),
    _mutant(
        "robust-main-sleeps-until-a-worker-ends-whatever-signal-came",
        ROBUST_WAIT,
        "wakeups.get(timeout=SIGNAL_CHECK_SECONDS)",
        "wakeups.get()",
        T_ROBUST_INTERRUPTS,
    ),
    _mutant(
        "robust-starts-concurrency-threads-however-few-tasks",
        ROBUST,
        "for number in range(1, min(self.concurrency, len(self.tasks)) + 1)",
        "for number in range(1, self.concurrency + 1)",
        T_ROBUST,
    ),
    _mutant(
        "robust-reraises-the-last-panic-not-the-first",
        ROBUST,
        "            raise panics[0]",
        "            raise panics[-1]",
        T_ROBUST,
    ),
    _mutant(
        "robust-a-panic-does-not-stop-new-tasks",
        ROBUST,
        "                pending.clear()\n                panics.append(panic)",
        "                panics.append(panic)",
        T_ROBUST,
    ),
    _mutant(
        "robust-a-panic-is-swallowed",
        ROBUST,
        "        if panics:\n            raise panics[0]",
        "        if False:\n            raise panics[0]",
        T_ROBUST,
    ),
    _mutant(
        "robust-a-tasks-error-is-dropped",
        ROBUST,
        "            self.err = error  # Go",
        "            pass  # Go",
        T_ROBUST,
    ),
    _mutant(
        "robust-run-returns-before-the-last-worker-ends",
        ROBUST,
        "workers.wait_until_ended(started)",
        "workers.wait_until_ended(started - 1)",
        T_ROBUST,
    ),
    _mutant(
        "robust-ended-workers-are-not-joined",
        ROBUST,
        "        workers.join_ended()\n        if panics:",
        "        if panics:",
        T_ROBUST,
    ),
    _mutant(
        "robust-a-task-can-be-claimed-by-two-pools",
        ROBUST_GUARDS,
        "            if task._owner is not None:",
        "            if False:",
        T_ROBUST,
    ),
    _mutant(
        "robust-tasks-hold-their-pool",
        ROBUST,
        "        claim(self.tasks, self._mark)",
        "        claim(self.tasks, self)",
        T_ROBUST,
    ),
    _mutant(
        "robust-a-ctrl-c-inside-thread-start-is-taken-for-a-refused-thread",
        ROBUST_WAIT,
        "    if isinstance(error, RuntimeError):\n        context = error.__context__",
        "    if False:\n        context = error.__context__",
        T_ROBUST_INTERRUPTS,
    ),
    _mutant(
        "robust-a-refused-thread-miscounts-the-started-ones",
        ROBUST_WAIT,
        'f"could start only {started} of',
        'f"could start only {started + 1} of',
        T_ROBUST_START,
    ),
    _mutant(
        "robust-a-refused-thread-leaves-the-started-ones-running",
        ROBUST,
        "            pending.clear()\n            stop = workers.wait_until_none_running(raised)\n"
        "            workers.join_ended()\n",
        "            stop = raised\n",
        T_ROBUST_START,
    ),
    _mutant(
        "robust-after-a-refused-thread-the-first-ctrl-c-ends-the-wait",
        ROBUST_WAIT,
        "ctrl_c_seen = isinstance(ctrl_c_behind(stopped_by), KeyboardInterrupt)",
        "ctrl_c_seen = True",
        ("tests/test_thread_limits.py",),
    ),
    _mutant(
        "robust-a-second-ctrl-c-never-ends-the-wait-after-a-stop",
        ROBUST_WAIT,
        "                if ctrl_c_seen:\n                    raise",
        "                if False:\n                    raise",
        T_ROBUST_INTERRUPTS,
    ),
    _mutant(
        "robust-a-workers-end-is-not-a-change-for-the-watchdog",
        ROBUST_WAIT,
        "            self._ended.append(threading.current_thread())\n"
        "            self._changes += 1\n",
        "            self._ended.append(threading.current_thread())\n",
        T_WATCHDOG_POOLS,
    ),
    _mutant(
        "robust-main-never-tells-the-watchdog-it-looked",
        ROBUST_WAIT,
        "                self._looked_at = seen\n",
        "\n",
        T_WATCHDOG_POOLS,
    ),
    # --- errors_channel/pool.py (stage 2 must keep the post's bug, and only that bug) ---
    _mutant("ec-done-never-called", EC_POOL, "    wait_group.done()", "    pass", T_EC),
    _mutant(
        "ec-wait-group-counts-one-worker-fewer",
        EC_POOL,
        "wait_group.add(worker_count)",
        "wait_group.add(worker_count - 1)",
        T_EC,
    ),
    _mutant(
        "ec-errors-queue-one-bigger",
        EC_POOL,
        "channel(error_capacity)",
        "channel(error_capacity + 1)",
        T_EC,
    ),
    _mutant(
        "ec-results-queue-sized-like-errors",
        EC_POOL,
        "channel(results_capacity)",
        "channel(error_capacity)",
        T_EC,
    ),
    _mutant(
        "ec-main-reads-every-error-not-one",
        EC_POOL,
        "first_error = receive_if_ready(errors)",
        "first_error = drain(errors)",
        T_EC,
    ),
    _mutant(
        "ec-loses-a-result",
        EC_POOL,
        "collected = drain(results)",
        "collected = drain(results)[1:]",
        T_EC,
    ),
    _mutant(
        "ec-workers-not-joined",
        EC_POOL,
        "    for thread in workers:\n        thread.join()\n    return Outcome",
        "    for thread in workers:\n        pass\n    return Outcome",
        T_EC,
    ),
    _mutant("ec-no-wait-group-wait", EC_POOL, "    wait_group.wait()", "    pass", T_EC),
    _mutant("ec-even-jobs-fail", EC_POOL, "if job % 2 == 1:", "if job % 2 == 0:", T_EC),
    _mutant(
        "ec-one-end-marker-short",
        EC_POOL,
        "    for _ in workers:\n        jobs.put(NO_MORE_JOBS)",
        "    for _ in workers[1:]:\n        jobs.put(NO_MORE_JOBS)",
        T_EC,
    ),
    _mutant(
        "ec-refused-thread-one-end-marker-short",
        EC_POOL,
        "for _ in range(started):",
        "for _ in range(started - 1):",
        T_EC_START,
    ),
    _mutant(
        "ec-refused-thread-started-ones-not-joined",
        EC_POOL,
        "                running.join()",
        "                pass",
        T_EC_START,
    ),
    _mutant(
        "ec-refused-thread-raw-error",
        EC_POOL,
        "raise ThreadStartFailed(message) from error",
        "raise",
        T_EC_START,
    ),
    _mutant(
        "ec-refused-thread-miscounts",
        EC_POOL,
        "could start only {started} of",
        "could start only {started + 1} of",
        T_EC_START,
    ),
    # --- errors_channel/fixes.py ---
    _mutant(
        "fix-room-too-small",
        EC_FIXES,
        "room = max(job_count, 1)",
        "room = max(job_count // 2 + 1, 1)",
        T_EC,
    ),
    _mutant(
        "fix-room-workers-not-joined",
        EC_FIXES,
        "    for thread in workers:\n        thread.join()\n    return Outcome(results=drain",
        "    for thread in workers:\n        pass\n    return Outcome(results=drain",
        T_EC,
    ),
    _mutant(
        "fix-room-drains-before-the-wait",
        EC_FIXES,
        "    wait_group.wait()\n    for thread in workers:\n        thread.join()\n"
        "    return Outcome(results=drain",
        "    for thread in workers:\n        pass\n    return Outcome(results=drain",
        T_EC,
    ),
    _mutant("fix-drain-no-end-marker", EC_FIXES, "        items.put(None)", "        pass", T_EC),
    _mutant(
        "fix-drain-collector-not-joined", EC_FIXES, "        collector.join()", "        pass", T_EC
    ),
    _mutant(
        "fix-drain-errors-collected-as-results",
        EC_FIXES,
        "args=(errors, outcome.errors)",
        "args=(errors, outcome.results)",
        T_EC,
    ),
    _mutant(
        "fix-drain-collectors-stopped-before-the-wait",
        EC_FIXES,
        "    wait_group.wait()\n    for thread in workers:\n        thread.join()\n"
        "    stop(running)",
        "    stop(running)\n    wait_group.wait()\n"
        "    for thread in workers:\n        thread.join()",
        T_EC,
    ),
    _mutant(
        "fix-drain-workers-not-joined",
        EC_FIXES,
        "    for thread in workers:\n        thread.join()\n    stop(running)",
        "    for thread in workers:\n        pass\n    stop(running)",
        T_EC,
    ),
    _mutant(
        "fix-refused-thread-leaves-collectors-running",
        EC_FIXES,
        "        stop(running)\n        if isinstance",
        "        pass\n        if isinstance",
        T_EC_START,
    ),
    _mutant(
        "fix-refused-thread-raw-error",
        EC_FIXES,
        "raise ThreadStartFailed(message) from error",
        "raise",
        T_EC_START,
    ),
    # --- errors_channel/go_primitives.py ---
    _mutant(
        "go-unbuffered-put-returns-before-its-item-is-taken",
        GO_PRIMITIVES,
        "my_turn = self._items_put\n",
        "my_turn = self._items_put - 1\n",
        T_GO,
    ),
    _mutant(
        "go-unbuffered-has-two-slots",
        GO_PRIMITIVES,
        "super().__init__(maxsize=1)",
        "super().__init__(maxsize=2)",
        T_GO,
    ),
    _mutant(
        "go-unbuffered-take-wakes-one-sender",
        GO_PRIMITIVES,
        "self._taken.notify_all()",
        "self._taken.notify()",
        T_GO,
        survives=(
            "Equivalent: the queue has one slot and a sender puts only into an empty queue, so "
            "at most one sender ever waits for its item to be taken; notify() and notify_all() "
            "wake the same thread."
        ),
    ),
    _mutant(
        "go-unbuffered-take-wakes-no-sender",
        GO_PRIMITIVES,
        "self._taken.notify_all()",
        "pass",
        T_GO,
    ),
    _mutant(
        "go-unbuffered-sender-checks-its-turn-once",
        GO_PRIMITIVES,
        "while self._items_taken < my_turn:",
        "if self._items_taken < my_turn:",
        T_GO,
        survives=(
            "Equivalent: while a sender waits, its item fills the one slot, so the next get() "
            "takes that item, and that get() is the only notify; Condition.wait() has no "
            "spurious wake-ups."
        ),
    ),
    _mutant(
        "go-unbuffered-channel-is-unbounded",
        GO_PRIMITIVES,
        "return UnbufferedQueue()",
        "return queue.Queue()",
        T_GO,
    ),
    _mutant(
        "go-wait-group-done-goes-negative",
        GO_PRIMITIVES,
        "if self._count == 0:\n                # Go",
        "if self._count < 0:\n                # Go",
        T_GO,
    ),
    _mutant(
        "go-wait-group-wakes-one-waiter",
        GO_PRIMITIVES,
        "self._all_done.notify_all()",
        "self._all_done.notify()",
        T_GO,
    ),
    _mutant(
        "go-wait-group-never-wakes",
        GO_PRIMITIVES,
        "            if self._count == 0:\n                self._all_done.notify_all()",
        "            if self._count == 0:\n                pass",
        T_GO,
    ),
    _mutant(
        "go-wait-group-waiter-checks-once",
        GO_PRIMITIVES,
        "while self._count > 0:",
        "if self._count > 0:",
        T_GO,
    ),
    _mutant(
        "go-wait-group-add-goes-negative",
        GO_PRIMITIVES,
        "if count < 0:",
        "if count < -1:",
        T_GO,
    ),
    _mutant(
        "go-receive-if-ready-takes-nothing",
        GO_PRIMITIVES,
        "        return [items.get_nowait()]",
        "        return []",
        T_GO,
    ),
    _mutant(
        "go-drain-stops-after-one",
        GO_PRIMITIVES,
        "drained.append(items.get_nowait())",
        "drained.append(items.get_nowait())\n            break",
        T_GO,
    ),
    # --- naive/pool.py ---
    _mutant(
        "naive-workers-not-joined",
        NAIVE,
        "    for thread in workers:\n        thread.join()\n    return collected",
        "    for thread in workers:\n        pass\n    return collected",
        T_NAIVE,
    ),
    _mutant(
        "naive-one-result-short",
        NAIVE,
        "for _ in range(job_count)]",
        "for _ in range(job_count - 1)]",
        T_NAIVE,
    ),
    _mutant(
        "naive-refused-thread-one-end-marker-short",
        NAIVE,
        "for _ in range(started):",
        "for _ in range(started - 1):",
        T_NAIVE_START,
    ),
    _mutant(
        "naive-refused-thread-started-ones-not-joined",
        NAIVE,
        "                running.join()",
        "                pass",
        T_NAIVE_START,
    ),
    # --- deadlock_watch/ ---
    _mutant(
        "watchdog-looks-at-threads-with-the-collector-on",
        WD_FRAMES,
        "            gc.disable()\n            return sys._current_frames()",
        "            return sys._current_frames()",
        T_WATCHDOG,
        survives=(
            "Equivalent on Python 3.12 and later, which fixed gh-106883. On 3.11 "
            "test_looking_at_the_threads_never_deadlocks_with_the_garbage_collector kills it."
        ),
    ),
    _mutant(
        "watchdog-timed-condition-wait-counts-as-asleep",
        WD_THREADS,
        'if local.get("timeout") is None and waiter is not None and waiter in waiters:',
        "if waiter is not None and waiter in waiters:",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-notified-waiter-counts-as-asleep",
        WD_THREADS,
        'if local.get("timeout") is None and waiter is not None and waiter in waiters:',
        'if local.get("timeout") is None and waiter is not None:',
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-grace-period-ignored",
        WATCHDOG,
        "return now - self._since >= self._grace",
        "return True",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-timed-join-counts-as-asleep",
        WD_THREADS,
        'untimed = local.get("block") is True and local.get("timeout") == -1',
        'untimed = local.get("block") is True',
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-waiter-identity-check-removed",
        WD_THREADS,
        "return same_place and self.token is other.token and self.progress == other.progress",
        "return same_place and self.progress == other.progress",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-context-switch-check-removed",
        WATCHDOG,
        "if self._count_switches is not None:",
        "if False:",
        T_WATCHDOG,
    ),
    Mutant(
        "watchdog-every-has-it-moved-guard-removed",
        WD_THREADS,
        (
            (
                "return same_place and self.token is other.token"
                " and self.progress == other.progress",
                "return same_place and self.progress == other.progress",
            ),
        ),
        T_WATCHDOG,
        elsewhere=((WATCHDOG, "if self._count_switches is not None:", "if False:"),),
    ),
    _mutant(
        "watchdog-unreadable-switch-count-accepted",
        WATCHDOG,
        "if switches != self._switches or unreadable:",
        "if switches != self._switches:",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-signal-handlers-ignored",
        WD_WAYS_OUT,
        "ignored(signum, handler):\n            return True",
        "ignored(signum, handler):\n            continue",
        T_WATCHDOG_SIGNALS,
    ),
    _mutant(
        "watchdog-asyncios-sigint-handler-counts-as-a-way-out",
        WD_WAYS_OUT,
        "if not _is_asyncio_sigint(handler) and not ignored(signum, handler):",
        "if not ignored(signum, handler):",
        T_WATCHDOG_ASYNCIO,
    ),
    _mutant(
        "watchdog-declared-ctrl-c-handler-counts-as-a-way-out",
        WD_WAYS_OUT,
        "        if signum == signal.SIGINT and _declared_to_only_interrupt(handler):\n"
        "            continue\n",
        "",
        (*T_WATCHDOG_POOLS, "tests/test_watchdog_signals.py"),
    ),
    _mutant(
        "watchdog-any-method-of-a-declaring-class-is-no-way-out",
        WD_WAYS_OUT,
        'getattr(handler, "__func__", None), "__name__", None) == declared.interrupts',
        'getattr(handler, "__func__", None), "__name__", None) is not None',
        T_WATCHDOG_SIGNALS,
    ),
    _mutant(
        "watchdog-declared-handler-is-no-way-out-for-any-signal",
        WD_WAYS_OUT,
        "if signum == signal.SIGINT and _declared_to_only_interrupt(handler):",
        "if _declared_to_only_interrupt(handler):",
        T_WATCHDOG_SIGNALS,
    ),
    _mutant(
        "watchdog-bare-lock-acquire-not-read",
        WATCHDOG,
        "if counts_switches and (lock := lock_acquire(frame)) is not None:",
        "if False:",
        (*T_WATCHDOG_POOLS, "tests/test_watchdog.py"),
    ),
    _mutant(
        "watchdog-timed-lock-acquire-counts-as-asleep",
        WD_THREADS,
        'if not arguments.get("blocking", True) or arguments.get("timeout", -1) != -1:',
        'if not arguments.get("blocking", True):',
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-rlock-acquire-counts-as-asleep",
        WD_THREADS,
        "if type(lock) is not _LOCK_TYPE or not lock.locked():",
        'if not hasattr(lock, "acquire"):',
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-armed-timer-ignored",
        WD_WAYS_OUT,
        "    if timer_armed:\n",
        "    if False:\n",
        T_WATCHDOG_SIGNALS,
    ),
    _mutant(
        "watchdog-timer-for-an-ignored-sigalrm-counts",
        WD_WAYS_OUT,
        "if alarm is not signal.SIG_IGN and not ignored(signal.SIGALRM, alarm):",
        "if not ignored(signal.SIGALRM, alarm):",
        T_WATCHDOG_SIGNALS,
    ),
    _mutant(
        "watchdog-simple-queue-item-waiting-ignored",
        WD_THREADS,
        "if not isinstance(simple_queue, queue.SimpleQueue) or not queue.SimpleQueue.empty("
        "simple_queue):",
        "if not isinstance(simple_queue, queue.SimpleQueue):",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-simple-queue-timeout-ignored",
        WD_THREADS,
        'if not arguments.get("block", True) or arguments.get("timeout") is not None:',
        'if not arguments.get("block", True):',
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-nonblocking-simple-queue-get-counts-as-asleep",
        WD_THREADS,
        'if not arguments.get("block", True) or arguments.get("timeout") is not None:',
        'if arguments.get("timeout") is not None:',
        T_WATCHDOG,
        survives=(
            "Equivalent: get(block=False) tries the lock without releasing the GIL "
            "(Modules/_queuemodule.c), so the watchdog, which samples with the GIL, never sees "
            "a thread waiting inside it; one seen at that call has returned and runs on, and "
            "the grace period and the context-switch count (SimpleQueue waits are read only "
            "where it exists) rule it out."
        ),
    ),
    _mutant(
        "watchdog-simple-queue-get-never-recognised",
        WATCHDOG,
        "if counts_switches and (simple_queue := simple_queue_get(frame)) is not None:",
        "if False and (simple_queue := simple_queue_get(frame)) is not None:",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-loop-ready-callbacks-ignored",
        WD_LOOPS,
        "        if loop._ready:\n            return None",
        "        if False:\n            return None",
        T_WATCHDOG_ASYNCIO,
    ),
    _mutant(
        "watchdog-loop-registered-files-ignored",
        WD_LOOPS,
        "if registered != {loop._ssock.fileno()}:",
        "if False:",
        T_WATCHDOG_ASYNCIO,
    ),
    _mutant(
        "watchdog-loop-select-timeout-ignored",
        WD_LOOPS,
        'if run_once.f_locals.get("timeout") is not None:',
        "if False:",
        T_WATCHDOG_ASYNCIO,
    ),
    _mutant(
        "watchdog-idle-loop-never-recognised",
        WATCHDOG,
        "    if code in SELECT_CALLS:\n        return idle_loop(frame)",
        "    if False:\n        return idle_loop(frame)",
        T_WATCHDOG_ASYNCIO,
    ),
    _mutant(
        "watchdog-select-call-position-unchecked",
        WD_LOOPS,
        "if select.f_lasti not in SELECT_CALLS[select.f_code]:",
        "if False:",
        T_WATCHDOG_ASYNCIO,
        survives=(
            "Equivalent: inside selectors' select() but outside its system call, a loop runs "
            "dict look-ups and list appends that cannot block, so it never stays at one "
            "instruction for the grace period, and the same-wait check (code, instruction, "
            "object) sees it move."
        ),
    ),
    _mutant(
        "watchdog-other-watchdogs-count-as-awake",
        WATCHDOG,
        "                if _is_watchdog(frame):\n                    continue\n",
        "",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-reports-without-a-second-look",
        WATCHDOG,
        "        if not same_waits(asleep, expected):\n            return None",
        "        if False:\n            return None",
        T_WATCHDOG,
        survives=(
            "Not equivalent, not killable by a test: a report is built only after every thread "
            "has slept in the same waits for the grace period, when nothing inside the process "
            "can wake any of them (signal handlers and timers are ruled out first), so a fresh "
            "sample with every thread asleep again is a deadlock whichever waits they are in. "
            "The second look matters only for waits that stillness alone proves (a SimpleQueue "
            "getter just handed an item, 3.13's exit wait in C) and a thread that wakes in the "
            "microseconds before the report. The first run's kill "
            "(test_two_watchdogs_do_not_hide_a_deadlock_from_each_other, at a load average near"
            " 30) did not repeat."
        ),
    ),
    _mutant(
        "watchdog-exit-lock-not-checked",
        WD_THREADS,
        '        if lock is not None and lock.locked():\n            return Wait("exit"',
        '        if lock is not None:\n            return Wait("exit"',
        T_WATCHDOG,
        survives=(
            "Not equivalent, not killable by a test: acquire() takes a free lock without "
            "releasing the GIL (Modules/_threadmodule.c tries without blocking first), so the "
            "watchdog, which samples with the GIL, sees main at that acquire() with the lock "
            "free only while main wakes from it, and main moves on well within the grace "
            "period. The mutant reports falsely only if main then gets no CPU for the whole "
            "grace period; the first run, at a load average near 30, may have seen that once "
            "(test_threads_taking_turns_at_simple_queue_gets_are_never_reported failed); it did"
            " not repeat."
        ),
    ),
    _mutant(
        "watchdog-awake-hint-never-rechecked",
        WATCHDOG,
        "if hint in frames and classify(frames[hint], self._counts_switches) is None:",
        "if hint in frames:",
        T_WATCHDOG,
    ),
    _mutant(
        "watchdog-timed-join-in-c-counts-as-asleep",
        WD_THREADS,
        'if local.get("timeout") is None and handle is not None and not handle.is_done():',
        "if handle is not None and not handle.is_done():",
        T_WATCHDOG,
        survives=(
            "Equivalent on Python 3.11 and 3.12, where this line (join() waiting in C) never "
            "runs. On 3.13 test_a_timed_join_is_a_way_out kills it: --python with a 3.13 "
            "interpreter."
        ),
    ),
    _mutant(
        "watchdog-polling-wait-never-recognised",
        WATCHDOG,
        "    return polling_wait(frame)",
        "    return None",
        T_WATCHDOG_POOLS,
    ),
    _mutant(
        "watchdog-polling-wait-asleep-although-it-has-not-looked",
        WD_THREADS,
        "if type(changes) is not int or looked_at != changes:",
        "if type(changes) is not int:",
        T_WATCHDOG_POOLS,
    ),
    _mutant(
        "watchdog-polling-wait-progress-not-compared",
        WD_THREADS,
        "return same_place and self.token is other.token and self.progress == other.progress",
        "return same_place and self.token is other.token",
        T_WATCHDOG_POOLS,
    ),
    _mutant(
        "watchdog-polling-threads-context-switches-counted",
        WATCHDOG,
        'ident: None if wait.kind == "polling" else voluntary_context_switches(',
        "ident: voluntary_context_switches(",
        T_WATCHDOG_POOLS,
    ),
    # --- deadlock_watch/pytest_plugin.py and whose_threads.py: pytest --deadlock ---
    _mutant(
        "plugin-pytest-timeouts-alarm-is-a-way-out",
        WD_PLUGIN,
        'getattr(handler, "__module__", None) == "pytest_timeout"',
        "False",
        T_PLUGIN,
    ),
    _mutant(
        "watchdog-timer-of-an-ignored-handler-counts",
        WD_WAYS_OUT,
        "if alarm is not signal.SIG_IGN and not ignored(signal.SIGALRM, alarm):",
        "if alarm is not signal.SIG_IGN:",
        T_PLUGIN,
    ),
    _mutant(
        "watchdog-thread-filter-ignored",
        WATCHDOG,
        "        if self._watches is None:\n            return frames",
        "        if True:\n            return frames",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-earlier-tests-threads-counted",
        WD_WHOSE,
        "        if left is not None and self._still_in(left, frame):\n            return False",
        "        if False:\n            return False",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-earlier-tests-threads-left-out-once-woken",
        WD_WHOSE,
        "        return now is not None and now.same_as(wait)",
        "        return True",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-runner-threads-counted",
        WD_WHOSE,
        "verdict = bottom not in self._runners and not is_pytest_timeouts_timer(bottom)",
        "verdict = not is_pytest_timeouts_timer(bottom)",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-pytest-timeouts-timer-thread-counted",
        WD_WHOSE,
        "verdict = bottom not in self._runners and not is_pytest_timeouts_timer(bottom)",
        "verdict = bottom not in self._runners",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-setup-unwatched",
        WD_PLUGIN,
        "    def pytest_runtest_setup(self) -> Generator[None, object, object]:\n"
        "        return (yield from self._watch())",
        "    def pytest_runtest_setup(self) -> Generator[None, object, object]:\n"
        "        return (yield)",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-a-caught-failure-passes",
        WD_PLUGIN,
        "        if phase.raised:\n",
        "        if False:\n",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-one-report-per-phase",
        WD_PLUGIN,
        "            watchdog.run()  # until the phase is over (stop()) or a report",
        "            watchdog.run()\n            return",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-every-alarm-is-no-way-out",
        WD_PLUGIN,
        "return signum == signal.SIGALRM and "
        'getattr(handler, "__module__", None) == "pytest_timeout"',
        "return signum == signal.SIGALRM",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-fixtures-threads-taken-for-the-runners",
        WD_WHOSE,
        "    def a_phase_starts(self) -> None:\n        self._verdicts.clear()",
        "    def a_phase_starts(self) -> None:\n        self._verdicts.clear()\n"
        "        self.the_runners_are_alive_now()",
        T_PLUGIN,
    ),
    _mutant(
        "plugin-exit-waits-for-threads-left-asleep",
        WD_PLUGIN,
        "        Watchdog(self._stop_waiting, ignore_handler=self._not_a_way_out).start()",
        "        pass",
        T_PLUGIN,
    ),
    # --- beyond/: pool.py, task.py, scheduler.py, waiting.py, cancellation.py, worker threads ---
    Mutant(
        "beyond-takers-see-only-the-stop-not-the-failure-count",
        SCHEDULER,
        (
            (
                "if self.stopped is not None or len(failures) >= max_errors:",
                "if self.stopped is not None:",
            ),
            (
                "if self.stopped is not None or len(self.failures) >= self.max_errors:",
                "if self.stopped is not None:",
            ),
        ),
        T_BEYOND,
    ),
    _mutant(
        "beyond-tasks-hold-their-pool",
        BEYOND,
        "            claim_all(self.tasks, self._mark)",
        "            claim_all(self.tasks, self)",
        T_BEYOND,
    ),
    _mutant(
        "beyond-worker-threads-do-not-tell-checkpoint-their-task",
        WORKER_THREADS,
        "    run_here(TaskOfThisWorker(scheduler, number))\n",
        "",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-runner-may-return-anything",
        WORKER_THREADS,
        "        if failed is not True:\n",
        "        if False:\n",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-failure-is-never-recorded",
        WORKER_THREADS,
        "        failures.append(None)",
        "        pass",
        T_BEYOND,
    ),
    _mutant(
        "beyond-stops-one-failure-late",
        WORKER_THREADS,
        "if len(failures) >= scheduler.max_errors:",
        "if len(failures) > scheduler.max_errors:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-cancelled-counts-as-a-failure",
        TASK,
        "except Cancelled as cancelled:",
        "except ZeroDivisionError as cancelled:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-task-drops-its-arguments",
        TASK,
        "self.result = self.fn(*self.args) if call is None else call()",
        "self.result = self.fn() if call is None else call()",
        T_BEYOND,
    ),
    _mutant(
        "asyncio-a-worker-drops-the-tasks-arguments",
        ASYNCIO_WORKERS,
        "                    awaitable = task.fn(*task.args)\n"
        "                    if type(awaitable) is not CoroutineType:",
        "                    awaitable = task.fn()\n"
        "                    if type(awaitable) is not CoroutineType:",
        ("tests/test_beyond_asyncio.py",),
    ),
    _mutant(
        "processes-sends-fn-without-its-arguments",
        PROCESS_GROUP,
        "self.encoder.encode(task.bound())",
        "self.encoder.encode(task.fn)",
        T_PIPELINED,
    ),
    _mutant(
        "beyond-a-plain-lock-for-the-pool",
        WAITING,
        "self._lock = threading.RLock()",
        "self._lock = threading.Lock()",
        T_BEYOND,
    ),
    Mutant(
        # A Ctrl-C landing in typing's generator expression (3.11) is printed and dropped.
        "beyond-backends-kind-told-by-a-protocol-isinstance",
        BEYOND,
        (
            (
                '        if backend.runs_on == "an event loop":\n'
                "            # asyncio: the backend runs the whole pool itself",
                "        if isinstance(backend, EventLoopBackend):\n"
                "            # asyncio: the backend runs the whole pool itself",
            ),
            (
                '        if backend.runs_on == "an event loop":\n'
                "            return backend.stream_pool",
                "        if isinstance(backend, EventLoopBackend):\n"
                "            return backend.stream_pool",
            ),
        ),
        ("tests/test_robust_interrupts.py",),
        survives=(
            "Equivalent on Python 3.12 and later, whose runtime_checkable Protocols check "
            "without a generator expression. On 3.11 "
            "test_a_real_sigint_at_every_point_of_the_pools_own_code_is_a_clean_ctrl_c kills it."
        ),
        elsewhere=(
            (
                PROTOCOL,
                "class EventLoopBackend(Protocol):",
                "@runtime_checkable\nclass EventLoopBackend(Protocol):",
            ),
            (
                PROTOCOL,
                "from typing import Any, ClassVar, Final, Literal, Protocol, TypeGuard, TypeVar",
                "from typing import Any, ClassVar, Final, Literal, Protocol, TypeGuard, TypeVar, "
                "runtime_checkable",
            ),
        ),
    ),
    _mutant(
        "beyond-no-backpressure",
        SCHEDULER,
        "if self._streaming and self._taken - self._handed >= self._ahead:",
        "if False:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-the-consumer-is-never-woken",
        SCHEDULER,
        "                        if self._main_waiting:\n"
        "                            self._wake_consumer()",
        "                        pass",
        T_BEYOND,
    ),
    _mutant(
        "beyond-running-tasks-are-never-told-to-stop",
        SCHEDULER,
        "            if cancel:\n                self.cancel_and_wake_sleepers()",
        "            if False:\n                self.cancel_and_wake_sleepers()",
        T_BEYOND,
    ),
    _mutant(
        "beyond-checkpoints-ignore-deadlines",
        CANCELLATION,
        "if deadline is not None and time.monotonic() >= deadline:",
        "if False:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-task-is-never-overdue",
        WAITING,
        "if now >= deadline + self.overdue_grace and self.report_overdue(task):",
        "if False:",
        T_BEYOND,
    ),
    Mutant(
        "beyond-tasks-start-after-the-runs-deadline",
        SCHEDULER,
        (
            (
                "                if self.run_deadline is not None and "
                "self._run_deadline_passed():\n                    return\n",
                "                if False:\n                    return\n",
            ),
            (
                "        if self.run_deadline is not None and self._run_deadline_passed():\n"
                "            # The waiting thread",
                "        if False:\n            # The waiting thread",
            ),
        ),
        T_BEYOND,
    ),
    _mutant(
        "beyond-leaving-the-loop-does-not-tell-running-tasks",
        BEYOND,
        'StopReason.CANCELLED, "the loop over the pool ended early", cancel=True',
        'StopReason.CANCELLED, "the loop over the pool ended early", cancel=False',
        T_BEYOND,
    ),
    _mutant(
        "beyond-generator-tasks-are-not-claimed",
        SCHEDULER,
        "if self._sequence is None and (owner := claim(task, self._mark)) is not None:",
        "if False:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-workers-end-wakes-nobody",
        WAITING,
        "            self._ended.append(threading.current_thread())\n            self._wake_main()",
        "            self._ended.append(threading.current_thread())",
        T_BEYOND,
    ),
    _mutant(
        "beyond-the-consumer-never-frees-room",
        SCHEDULER,
        "                self._handed += 1\n                # Wake workers",
        "                # Wake workers",
        T_BEYOND,
    ),
    _mutant(
        "beyond-failures-are-not-counted",
        TASK,
        "            self.err = error\n            return True",
        "            self.err = error\n            return False",
        T_BEYOND,
    ),
    _mutant(
        "beyond-the-last-stop-reason-wins",
        SCHEDULER,
        "            if self.stopped is None:\n"
        "                self.stopped = Stopped(reason, message)",
        "            if True:\n                self.stopped = Stopped(reason, message)",
        T_BEYOND,
    ),
    _mutant(
        "beyond-finished-tasks-are-not-handed-over",
        SCHEDULER,
        "                        done.append(finished)\n",
        "",
        T_BEYOND,
    ),
    _mutant(
        "beyond-the-waiting-thread-never-wakes-for-a-deadline",
        WAITING,
        "        if self._watching_deadlines:\n            if self.run_deadline",
        "        if False:\n            if self.run_deadline",
        T_BEYOND,
    ),
    _mutant(
        "beyond-checkpoint-does-nothing",
        CANCELLATION,
        "        if task is not None:\n            Token(running.signals, task).check()",
        "        if False:\n            Token(running.signals, task).check()",
        T_BEYOND,
    ),
    _mutant(
        "beyond-ctrl-c-does-not-tell-running-tasks",
        BEYOND,
        'StopReason.INTERRUPTED, f"interrupted by {stop!r}", cancel=True)',
        'StopReason.INTERRUPTED, f"interrupted by {stop!r}", cancel=False)',
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-a-bad-sources-error-is-not-raised",
        SCHEDULER,
        "            if error is not None and self.error is None:\n"
        "                self.error = error",
        "            if False:\n                self.error = error",
        T_BEYOND,
    ),
    _mutant(
        "beyond-the-overdue-report-is-made-every-wake",
        WAITING,
        "            if task.finished or task in self.overdue:",
        "            if task.finished:",
        T_BEYOND,
    ),
    _mutant(
        "beyond-stop-leaves-workers-waiting-for-room-asleep",
        SCHEDULER,
        "            self._wake_room_waiters()\n            self._wake_main()",
        "            self._wake_main()",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-generators-task-is-claimed-across-a-switch-point",
        TASK,
        "    if owner is None:\n        task._owner = mark",
        "    if owner is None:\n        len(task.__slots__)\n        task._owner = mark",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-stopped-pool-still-hands-out-its-list",
        SCHEDULER,
        "            if self._pending is not None:\n                self._pending.clear()\n"
        "            if cancel",
        "            if cancel",
        T_BEYOND,
        survives=(
            "Equivalent: stop() sets `stopped` (under the lock) before it empties the deque, "
            "and take() checks `stopped` after each pop and before the task starts, so a task "
            "popped after a stop never starts; emptying the deque only spares the pops."
        ),
    ),
    _mutant(
        "beyond-main-sleeps-on-however-long",
        WAITING,
        "self._wakeup.acquire(timeout=min(timeout, SIGNAL_CHECK_SECONDS))",
        "self._wakeup.acquire(timeout=-1 if timeout == math.inf else timeout)",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-a-stale-wake-up-is-not-taken-back",
        WAITING,
        "                self._wakeup.acquire(blocking=False)\n",
        "\n",
        T_BEYOND,
        survives=(
            "Not equivalent, not killed: a worker's wake-up must land just as main's timed "
            "sleep expires, and a second one within the few bytecodes before main sleeps again;"
            " the second release() then raises RuntimeError in that worker. No test of "
            "behaviour can force two such races without replacing the pool's private lock; a "
            "stress test (SIGNAL_CHECK_SECONDS=0, 5 x 20,000 streamed tasks) ran over a minute "
            "on this machine without a verdict, too slow for the suite."
        ),
    ),
    _mutant(
        "beyond-a-cancel-does-not-wake-sleeping-tasks",
        CANCELLATION,
        "            for sleeper in self._sleepers:\n                sleeper.release()",
        "            pass",
        T_BEYOND,
    ),
    _mutant(
        "beyond-a-ctrl-c-inside-thread-start-is-taken-for-a-refused-thread",
        BEYOND,
        "    if isinstance(raised, RuntimeError) and isinstance(raised.__context__, "
        "KeyboardInterrupt):",
        "    if False:",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-the-caller-waits-for-a-worker-inside-the-generators-next",
        WAITING,
        "        if self.stopped is None or self._running != sum(self._at_source):",
        "        if True:",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-a-worker-stays-counted-at-the-generator-for-good",
        SCHEDULER,
        "            at_source[number] = False\n            if taken is None or taken is NO_ROOM:",
        "            if taken is None or taken is NO_ROOM:",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-a-worker-queues-for-the-generator-after-the-stop",
        SCHEDULER,
        "        if self.stopped is not None:\n            # Not even in line for the lock",
        "        if False:\n            # Not even in line for the lock",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-workers-are-not-daemons",
        WORKER_THREADS,
        'name=f"worker-{number + 1}", daemon=True',
        'name=f"worker-{number + 1}", daemon=False',
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-the-exit-does-not-wait-for-running-tasks",
        WORKER_THREADS,
        'getattr(threading, "_register_atexit", atexit.register)(_wait_for_workers_at_exit)',
        "atexit",
        T_BEYOND_INTERRUPTS,
    ),
    _mutant(
        "beyond-the-exit-waits-for-a-worker-inside-the-generators-next",
        WORKER_THREADS,
        "        if scheduler.left_at_the_source(self.number):",
        "        if False:",
        T_BEYOND_INTERRUPTS,
    ),
    # --- beyond/backends/event_loop*.py ---
    _mutant(
        "asyncio-workers-do-not-see-a-ctrl-c-between-tasks-that-never-await",
        ASYNCIO_WORKERS,
        "if awaiting is not None and awaiting.cancelling() > self._cancels_before:",
        "if False:",
        T_BEYOND_ASYNCIO_INTERRUPTS,
    ),
    _mutant(
        "asyncio-a-worker-cancelled-before-it-began-never-ends",
        ASYNCIO_WORKERS,
        "    def _worker_ended(self, worker: asyncio.Task[None]) -> None:\n"
        "        self.running -= 1",
        "    def _worker_ended(self, worker: asyncio.Task[None]) -> None:\n"
        "        self.running -= 0 if worker.cancelled() else 1",
        T_BEYOND_ASYNCIO_INTERRUPTS,
    ),
    _mutant(
        "asyncio-ctrl-c-is-left-to-asyncio-runner",
        BEYOND_ASYNCIO,
        "        signal.signal(signal.SIGINT, self._on_sigint)\n",
        "",
        T_BEYOND_ASYNCIO_INTERRUPTS,
    ),
    _mutant(
        "asyncio-a-ctrl-c-just-after-a-step-leaves-its-stop-queued",
        BEYOND_ASYNCIO,
        "                loop.stop()\n                loop.run_forever()\n",
        "",
        T_BEYOND_ASYNCIO_INTERRUPTS,
    ),
    _mutant(
        "beyond-after-a-refused-thread-the-first-ctrl-c-ends-the-wait",
        WAITING,
        "                if not first_ctrl_c_waits or kept is not None:",
        "                if True:",
        ("tests/test_thread_limits.py",),
    ),
    _mutant(
        "beyond-a-wake-up-is-not-a-change-for-the-watchdog",
        WAITING,
        "        self._changes += 1\n        if self._main_waiting:",
        "        if self._main_waiting:",
        T_WATCHDOG_POOLS,
    ),
    _mutant(
        "beyond-a-deadline-ahead-does-not-keep-main-awake",
        WAITING,
        "self._looked_at = seen if timeout == math.inf else None",
        "self._looked_at = seen",
        T_WATCHDOG_POOLS,
    ),
    # --- beyond/backends/child_process*.py ---
    _mutant(
        "processes-a-forked-copy-goes-on-serving",
        PROCESS_CHILD,
        "    if os.getpid() != me:\n        os._exit(0)",
        "    if False:\n        os._exit(0)",
        T_PROCESSES,
    ),
    _mutant(
        "processes-any-reply-passes-for-the-workers-answer",
        PROCESS_FRAMES,
        "        if sender != pid or kind > WAITING:",
        "        if kind > WAITING:",
        T_PROCESSES,
    ),
    _mutant(
        "processes-an-answer-to-another-task-passes-for-this-ones",
        PROCESS_GROUP,
        "        if not child.sent or child.sent[0][0] != seq:",
        "        if not child.sent:",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-frame-cut-short-is-waited-for",
        PROCESS_FRAMES,
        "    if drained and 0 < end - start < header:",
        "    if False:",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-dead-child-held-open-by-a-forked-copy-goes-unseen",
        PROCESS_DISPATCHER,
        "                if not events:\n                    self.look_for_exits()",
        "                if False:\n                    self.look_for_exits()",
        T_PROCESSES,
    ),
    _mutant(
        "processes-loading-an-outcome-that-exits-stops-the-pool",
        PROCESS_CHILD,
        "    except BaseException as raised:\n        return None, raised",
        "    except Exception as raised:\n        return None, raised",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-tasks-clock-runs-through-its-childs-start",
        PROCESS_GROUP,
        "            if child.timed is not None:\n                # A task's timeout counts",
        "            if False:\n                # A task's timeout counts",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-failed-start-fails-each-task-instead-of-the-run",
        PROCESS_GROUP,
        "            except WorkerStartFailed as failed:\n                # The cause",
        "            except WorkerStartFailed as failed:\n"
        "                self.finish(task, partial(_raise, failed))\n"
        "                return\n"
        "                # The cause",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-child-runs-the-unguarded-scripts-pool-again",
        PROCESSES,
        "        _leave_if_a_child_importing_main()\n",
        "\n",
        T_PROCESSES,
    ),
    _mutant(
        "processes-programs-a-task-execs-hold-the-workers-pipe",
        PROCESS_CHILD,
        "    for fd in (tasks.fileno(), replies_fd):\n        os.set_inheritable(fd, False)\n",
        "\n",
        T_PROCESSES,
    ),
    _mutant(
        "processes-the-dispatcher-in-line-starts-a-child-after-a-ctrl-c",
        PROCESS_HANDLE,
        "            if scheduler.cancelled:\n                raise Cancelled(",
        "            if False:\n                raise Cancelled(",
        T_PROCESSES,
    ),
    _mutant(
        "processes-a-result-whose-pickling-exits-ends-the-child",
        PROCESS_CHILD,
        "    except BaseException as error:\n        # BaseException too: pickling runs",
        "    except Exception as error:\n        # BaseException too: pickling runs",
        T_PROCESSES,
    ),
    _mutant(
        "processes-an-error-whose-pickling-exits-ends-the-child",
        PROCESS_CHILD,
        '        except BaseException as failed:\n            message += f" (it could not be sent',
        '        except Exception as failed:\n            message += f" (it could not be sent',
        T_PROCESSES,
    ),
    _mutant(
        "processes-the-dispatcher-reads-a-generator-itself",
        PROCESS_DISPATCHER,
        "        if reader is not None:\n            if reader.taken:",
        "        if False:\n            if reader.taken:",
        T_PIPELINED,
    ),
    _mutant(
        "processes-a-generator-is-read-ahead-of-its-children",
        PROCESS_DISPATCHER,
        "        if self.reader is not None:\n            return 1",
        "        if False:\n            return 1",
        T_PROCESSES,
    ),
    # The pipelined design's own rules (ported from the proto-procs prototype's table).
    _mutant(
        "pipelined-a-child-does-not-count-its-own-failure",
        PROCESS_CHILD,
        "        shared[failures] += 1\n",
        "        pass\n",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-child-counts-its-failure-only-once-its-error-is-described",
        PROCESS_CHILD,
        "        failed(RAISED)\n        return _error_reply(RAISED, error)",
        "        reply = _error_reply(RAISED, error)\n        failed(RAISED)\n        return reply",
        ("tests/test_processes_pipelined.py",),
    ),
    _mutant(
        "pipelined-a-child-starts-queued-tasks-after-a-stop",
        PROCESS_CHILD,
        "        if panicked or shared[STOP] or seq >= shared[limit]:",
        "        if panicked or seq >= shared[limit]:",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-child-waits-for-tasks-without-publishing-its-replies",
        PROCESS_CHILD,
        "            before_waiting()\n",
        "",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-lost-childs-unpublished-replies-are-lost",
        PROCESS_GROUP,
        "            self.recover_areas(child)\n",
        "            pass\n",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-lost-childs-queue-is-dropped",
        PROCESS_GROUP,
        "            self.ready.extendleft(reversed(unstarted))",
        "            pass",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-child-that-dies-while-starting-sends-its-tasks-on",
        PROCESS_GROUP,
        "        if not child.ready:\n            self.lost_while_starting",
        "        if False:\n            self.lost_while_starting",
        ("tests/test_processes_pipelined.py",),
    ),
    _mutant(
        "pipelined-a-kept-error-keeps-its-whole-run-alive",
        PROCESS_GROUP,
        "        if task.err is not None:\n            without_this_threads_frames(task.err)\n",
        "",
        ("tests/test_processes_pipelined.py",),
    ),
    _mutant(
        "pipelined-a-child-killed-while-starting-stops-the-run-after-another-came-up",
        PROCESS_GROUP,
        " and self.start_deaths is not None and self.start_deaths < self.slots:",
        " and False:",
        ("tests/test_processes_pipelined.py",),
    ),
    _mutant(
        "pipelined-children-that-keep-dying-while-starting-are-started-for-ever",
        PROCESS_GROUP,
        " and self.start_deaths is not None and self.start_deaths < self.slots:",
        " and self.start_deaths is not None:",
        ("tests/test_processes_pipelined.py",),
    ),
    _mutant(
        "pipelined-a-task-killed-at-its-deadline-before-starting-is-sent-again",
        PROCESS_GROUP,
        '            if seq <= started or why == "deadline":',
        "            if seq <= started:",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-timed-task-waits-behind-others",
        PROCESS_DISPATCHER,
        "                    if task.timeout is not None:\n"
        "                        # Only to an idle child",
        "                    if False:\n                        # Only to an idle child",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-task-taken-back-is-dropped",
        PROCESS_GROUP,
        "                self.counts.taken_back += 1\n                self.ready.append(task)",
        "                self.counts.taken_back += 1",
        T_PIPELINED,
    ),
    _mutant(
        "pipelined-a-child-ignores-its-limit",
        PROCESS_CHILD,
        "        if panicked or shared[STOP] or seq >= shared[limit]:",
        "        if panicked or shared[STOP]:",
        T_PIPELINED,
    ),
    _mutant(
        "dask-waits-on-a-future-for-ever",
        DASK,
        "return outcome.result(timeout=CLIENT_CHECK_SECONDS)",
        "return outcome.result()",
        T_DASK,
    ),
    _mutant(
        "dask-a-lost-cluster-goes-unseen",
        DASK_LOST,
        '    if status == "running":\n        return None',
        "    if True:\n        return None",
        T_DASK,
    ),
    _mutant(
        "dask-only-a-cancel-counts-as-an-outcome-lost-with-the-cluster",
        DASK,
        "if (gone := outcome_lost(client, future, raised)) is not None:",
        # The code before: only a cancel (distributed's, when the client goes) was the cluster's.
        'if isinstance(raised, __import__("concurrent.futures").futures.CancelledError)'
        " and (gone := client_gone(client)):",
        T_DASK,
    ),
    _mutant(
        "dask-a-fetch-cut-off-before-the-status-changes-is-the-tasks-error",
        DASK_LOST,
        "    if gone is None and isinstance(raised, OSError):",
        "    if False:",
        T_DASK,
    ),
    # --- plots/: the benchmarks' contenders ---
    _mutant(
        "plots-peer-process-pools-fork",
        START_METHOD,
        "    return multiprocessing.get_context(START_METHOD)",
        '    return multiprocessing.get_context("fork")',
        T_CONTENDERS,
    ),
    _mutant(
        "plots-a-contender-in-a-figure-with-nothing-to-run",
        CONTENDERS,
        "if self.kind != GO and bool(timed) != (self.run is not None):",
        "if self.kind != GO and self.run is not None and not timed:",
        T_CONTENDERS,
    ),
)


def stale(mutants: Sequence[Mutant], root: Path = REPO_ROOT) -> list[str]:
    """One line per edit whose original snippet does not occur exactly once in its file."""
    problems = []
    for mutant in mutants:
        for path, original, replacement in mutant.every_edit():
            count = (root / path).read_text().count(original)
            if count != 1:
                problems.append(f"{mutant.name}: its snippet occurs {count} times in {path}")
            if original == replacement:
                problems.append(f"{mutant.name}: its replacement changes nothing")
        for test in mutant.tests:
            if not (root / test).is_file():
                problems.append(f"{mutant.name}: no test file {test}")
    names = [mutant.name for mutant in mutants]
    twice = sorted({name for name in names if names.count(name) > 1})
    problems += [f"{name}: two mutants have this name" for name in twice]
    return problems


def scratch_copy(destination: Path) -> None:
    """Copy the repository's files (tracked and new, as they are now; not .venv) to destination."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree but not yet in the index
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def child_environment(copy: Path) -> dict[str, str]:
    # The project is installed editable from the working tree; PYTHONPATH puts the copy first, and
    # no bytecode is written, so a mutant's .pyc can never stand in for the restored source.
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_come_from(copy: Path, python: str) -> None:
    program = "import beyond.pool, deadlock_watch, robust.pool; "
    program += "print(robust.pool.__file__)"
    where = subprocess.run(
        [python, "-c", program],
        cwd=copy,
        env=child_environment(copy),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(copy):
        raise SystemExit(f"mutate: the scratch copy imports the pools from {where}, not {copy}")


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    killed: bool
    how: str
    seconds: float


def run_mutant(mutant: Mutant, copy: Path, timeout: float, python: str) -> Verdict:
    """Apply mutant to the copy, run its tests, put the files back."""
    originals: dict[Path, str] = {}
    for path, original, replacement in mutant.every_edit():
        target = copy / path
        text = target.read_text()
        originals.setdefault(target, text)
        target.write_text(text.replace(original, replacement, 1))
    command = [
        python,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-p",
        "tools.pytest_exit_at_once",
        f"--timeout={timeout}",
        *mutant.tests,
    ]
    start = time.monotonic()
    # A session of its own, ended whole once the tests are done: pytest exits at once
    # (tools/pytest_exit_at_once), so the processes its tests started and left hanging under a
    # mutant (the watchdog's scenarios) would otherwise live on, each run adding dozens.
    tests = subprocess.Popen(
        command,
        cwd=copy,
        env=child_environment(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # A whole-run limit as well as pytest-timeout's per-test one: a hang outside a test (a
        # fixture, a thread left behind at exit) is caught too.
        stdout, stderr = tests.communicate(timeout=timeout * 3)
    except subprocess.TimeoutExpired:
        limit = timeout * 3
        return Verdict(mutant, True, f"timeout: the tests ran over {limit:.0f} s", limit)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(tests.pid, signal.SIGKILL)
        tests.wait()
        for target, text in originals.items():
            target.write_text(text)
    seconds = time.monotonic() - start
    lines = stdout.splitlines()
    if tests.returncode == 0:
        return Verdict(mutant, False, lines[-1] if lines else "", seconds)
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    how = failed[0] if failed else (lines[-1] if lines else stderr.strip()[-200:])
    # What pytest-timeout says when it stops a test that hangs.
    if "from pytest-timeout" in stdout:
        how = f"timeout (a test hung): {how}"
    return Verdict(mutant, True, how, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m tools.mutate",
        description="Run each named mutant of the pools and the watchdog against its tests, on a "
        "scratch copy of the repository. Last line: 'mutants: K killed, S survived'.",
    )
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help="run only this mutant (repeatable; a prefix such as 'robust-' selects a group)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants' names and stop")
    parser.add_argument(
        "--check", action="store_true", help="only check that every snippet occurs once"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="mutants run at once, each in its own copy (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a test may take (default 30)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the tests (with pytest, pytest-timeout and hypothesis "
        "installed); default: this one",
    )
    arguments = parser.parse_args(argv)
    # A run started in the background by a shell without job control (`... &` in a script)
    # inherits SIGINT ignored, and so would every test process it starts: each test that sends a
    # real Ctrl-C to a child would hang and count as a kill, whatever the mutant. Handled here,
    # SIGINT is back to its default in the programs this one starts (exec resets a handled
    # signal, not an ignored one).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if arguments.jobs < 1 or arguments.timeout <= 0:
        parser.error("--jobs must be at least 1 and --timeout more than 0")

    mutants = list(MUTANTS)
    if arguments.only:
        mutants = [m for m in MUTANTS if any(m.name.startswith(o) for o in arguments.only)]
        if not mutants:
            parser.error(f"no mutant is named {' or '.join(arguments.only)} (see --list)")
    if arguments.list:
        for mutant in mutants:
            print(mutant.name)
        return 0
    problems = stale(mutants)
    if problems:
        print("mutate: the table is stale; fix these entries in tools/mutate.py:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if arguments.check:
        print(f"mutate: all {len(mutants)} mutants apply")
        return 0

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-") as scratch:
        copies: list[Path] = []
        for number in range(min(arguments.jobs, len(mutants))):
            copy = Path(scratch) / f"copy-{number}"
            scratch_copy(copy)
            check_imports_come_from(copy, arguments.python)
            copies.append(copy)
        print(
            f"mutate: {len(mutants)} mutants, {len(copies)} at a time, in copies under {scratch}",
            flush=True,
        )
        free = list(copies)
        free_lock = threading.Lock()
        verdicts: list[Verdict] = []

        def one(mutant: Mutant) -> Verdict:
            with free_lock:
                copy = free.pop()
            try:
                verdict = run_mutant(mutant, copy, arguments.timeout, arguments.python)
            finally:
                with free_lock:
                    free.append(copy)
            with free_lock:
                verdicts.append(verdict)
                word = "killed" if verdict.killed else "SURVIVED"
                if not verdict.killed and mutant.survives:
                    word = "survived (known)"
                print(
                    f"[{len(verdicts)}/{len(mutants)}] {word:8} {mutant.name} "
                    f"({verdict.seconds:.0f} s): {verdict.how[:160]}",
                    flush=True,
                )
            return verdict

        with ThreadPoolExecutor(max_workers=len(copies)) as executor:
            list(executor.map(one, mutants))

    killed = sum(verdict.killed for verdict in verdicts)
    survivors = [verdict.mutant for verdict in verdicts if not verdict.killed]
    unexplained = [mutant.name for mutant in survivors if not mutant.survives]
    for mutant in survivors:
        reason = mutant.survives or "NOT EXPLAINED: kill it with a test, or say why it survives"
        print(f"survivor {mutant.name}: {reason}")
    print(f"mutate: {time.monotonic() - started:.0f} s in all")
    print(f"mutants: {killed} killed, {len(survivors)} survived")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
