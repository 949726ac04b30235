"""Stage 4 on asyncio under a real Ctrl-C, each run in a child process, on both loops: the running
tasks are cancelled at their await (each keeps Cancelled), nothing new starts, run() or the loop
over the pool raises KeyboardInterrupt once they have unwound, and no thread is left.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.child_process import Child, spawn
from tests.conftest import REPO_ROOT

# The child: 20 tasks on 4 workers, from a generator. Task 0 returns at once; every other task
# says when it starts and then awaits a 30 s sleep, which only a cancel ends. A "deaf" task
# swallows the first cancel and sleeps again; with "deaf-spinning", task 4 spins instead, never
# awaiting again. The child ends by saying how far the pool got and which threads are alive.
CHILD = r"""
import asyncio, contextlib, os, sys, threading
from beyond import Cancelled, Pool, Task
from beyond.backends.event_loop import Asyncio

loop, mode, kind = sys.argv[1], sys.argv[2], sys.argv[3]

def say(line: str) -> None:
    os.write(1, (line + "\n").encode())

def task(number: int):
    async def run() -> int:
        if number == 0:
            return 0
        say(f"start {number}")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if not kind.startswith("deaf"):
                say(f"cancelled {number}")
                raise
            say(f"swallowed {number}")
            if kind == "deaf-spinning" and number == 4:
                say("spinning 4")
                while True:  # never awaits: a Ctrl-C can only land in here
                    pass
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                say(f"cancelled again {number}")
                raise
        return number
    return run

made = []

def tasks():
    for number in range(20):
        made.append(Task(task(number)))
        yield made[-1]

pool = Pool(tasks(), 4, backend=Asyncio(loop))

async def main() -> None:
    if mode == "run_async":
        await pool.run_async()
    else:
        async with contextlib.aclosing(pool.stream_async()) as finished:
            async for done in finished:
                say(f"yielded {done.result}")

try:
    if mode == "run":
        pool.run()
    elif mode in ("iterate", "body"):
        for done in pool:
            say(f"yielded {done.result}")
            if mode == "body":
                # The loop's body is busy: Ctrl-C lands here, not in the pool.
                threading.Event().wait()
    else:
        # asyncio.run(main()), on the chosen loop (asyncio.run takes loop_factory from 3.12).
        with asyncio.Runner(loop_factory=Asyncio(loop).loop_factory) as runner:
            runner.run(main())
except KeyboardInterrupt:
    finished = [task for task in made if task.finished]
    cancelled = sum(isinstance(task.err, Cancelled) for task in finished)
    say(f"interrupted: {len(finished)} finished, {cancelled} cancelled")
    say(f"stopped: {pool.stopped.message}")
    say(f"threads alive: {threading.active_count() - 1}")
    raise SystemExit(130)
say("not interrupted")
"""


@contextmanager
def child(loop: str, mode: str, kind: str = "awaiting") -> Iterator[Child]:
    with spawn(Child, CHILD, loop, mode, kind, stdin=False) as running:
        yield running


RUNNING = ("start 1", "start 2", "start 3")


@pytest.mark.parametrize("loop", ["uvloop", "standard"])
@pytest.mark.parametrize("mode", ["run", "iterate", "run_async", "stream_async"])
def test_ctrl_c_cancels_the_running_tasks_at_their_await_and_starts_no_more(
    loop: str, mode: str
) -> None:
    # Nothing ever ends the 30 s sleeps but a cancel: a pool that did not cancel its running tasks
    # on Ctrl-C would wait for them (and the backstop would kill the child).
    with child(loop, mode) as running:
        running.read_until(*RUNNING, "start 4")
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130, running.said
    assert running.started() == [1, 2, 3, 4]
    assert sorted(line for line in running.said if line.startswith("cancelled")) == [
        f"cancelled {n}" for n in (1, 2, 3, 4)
    ]
    # Task 0 finished before the signal; the four that ran were cancelled; none started after.
    assert "interrupted: 5 finished, 4 cancelled" in running.said
    reasons = ["the task awaiting the pool was cancelled" if "async" in mode else "interrupted"]
    if mode == "iterate":
        # Task 0's "yielded 0" is printed by the loop's body, between two steps of the pool, and
        # may come after "start 4": a SIGINT that lands there is raised in the body (the pool's
        # handler is installed only while a step runs), and the pool sees its loop left early.
        # Failed 2 of 14 runs of the test on 3.13; the one report kept had "yielded 0" after
        # "start 4" and every cancel as asserted above, and its stop line was cut from pytest's
        # report, so the reason is inferred, not seen. test_ctrl_c_in_the_loops_body_... covers
        # the case.
        reasons.append("the loop over the pool ended early")
    stopped = [line for line in running.said if line.startswith("stopped: ")]
    assert len(stopped) == 1, running.said
    assert stopped[0].startswith(tuple(f"stopped: {r}" for r in reasons)), running.said
    assert running.said[-1] == "threads alive: 0"


@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_ctrl_c_in_the_loops_body_cancels_the_running_tasks_as_the_loop_is_left(loop: str) -> None:
    with child(loop, "body") as running:
        # Task 0 was handed over; tasks 1 to 3 run (paused while the body runs), and task 0's
        # worker took task 4 before the loop stopped (there is room for 16 per worker).
        running.read_until("yielded 0", *RUNNING, "start 4")
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130, running.said
    assert running.started() == [1, 2, 3, 4]
    assert "interrupted: 5 finished, 4 cancelled" in running.said
    assert "stopped: the loop over the pool ended early" in running.said
    assert running.said[-1] == "threads alive: 0"


# x86_64 system call numbers (asm/unistd_64.h): the standard loop waits in epoll_wait, uvloop's
# libuv in epoll_pwait.
EPOLL_WAITS = {"232", "281"}


def wait_until_blocked_in_epoll(pid: int) -> None:
    """Until the child's main thread waits in its loop's epoll, running no Python code: a signal
    then lands in the loop, not in a task. Linux on x86_64 tells, in /proc/PID/syscall."""
    if platform.machine() != "x86_64" or not Path(f"/proc/{pid}/syscall").exists():
        pytest.skip("needs /proc/PID/syscall with x86_64 system call numbers")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/syscall").read_text().split()[0] not in EPOLL_WAITS:
        assert time.monotonic() < deadline, "the child never waited in epoll"
        time.sleep(0.001)


@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_a_second_ctrl_c_in_the_loop_ends_the_wait_and_the_tasks_are_cancelled_again(
    loop: str,
) -> None:
    with child(loop, "run", "deaf") as running:
        running.read_until(*RUNNING, "start 4")
        running.process.send_signal(signal.SIGINT)
        # Each task swallows its cancel and sleeps again: run() is still waiting for them.
        running.read_until(*(f"swallowed {n}" for n in (1, 2, 3, 4)))
        wait_until_blocked_in_epoll(running.process.pid)
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130, running.said
    # The second Ctrl-C ends the wait; closing the loop cancels every task left, and waits for it.
    assert sorted(line for line in running.said if line.startswith("cancelled again")) == [
        f"cancelled again {n}" for n in (1, 2, 3, 4)
    ]
    assert "interrupted: 5 finished, 4 cancelled" in running.said
    assert running.said[-1] == "threads alive: 0"


@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_a_second_ctrl_c_inside_a_task_is_its_panic_and_ends_the_run_all_the_same(
    loop: str,
) -> None:
    # The loop's thread runs the tasks, so a KeyboardInterrupt can land in a task's own code. It
    # must end the run as it does in the loop's code, not pass for one task's failure.
    with child(loop, "run", "deaf-spinning") as running:
        running.read_until(*RUNNING, "start 4")
        running.process.send_signal(signal.SIGINT)
        running.read_until(*(f"swallowed {n}" for n in (1, 2, 3)), "spinning 4")
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130, running.said
    assert sorted(line for line in running.said if line.startswith("cancelled again")) == [
        f"cancelled again {n}" for n in (1, 2, 3)
    ]
    # Task 4 keeps the KeyboardInterrupt as its error; the three others were cancelled.
    assert "interrupted: 5 finished, 3 cancelled" in running.said
    assert running.said[-1] == "threads alive: 0"


# Tasks that never await: the loop gets no turn between them, so the task awaiting the pool, which
# asyncio.Runner cancels on Ctrl-C, cannot stop it itself. The sixth task sends the Ctrl-C from its
# own code (the handler runs there, at once), then computes on. For each way to run the pool and
# each kind of task (coroutines, plain functions, an endless generator of plain functions), the
# child says how many tasks started and what the caller got.
NEVER_AWAITING = r"""
import asyncio, contextlib, itertools, os, signal, sys
from beyond import Pool, Task
from beyond.backends.event_loop import Asyncio

loop = sys.argv[1]

def say(line: str) -> None:
    os.write(1, (line + "\n").encode())

for mode in ("run", "iterate", "run_async", "stream_async"):
    for kind in ("coroutines", "functions", "endless"):
        started: list[int] = []

        def body(number: int) -> int:
            started.append(number)
            if number == 5:
                os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # no await: the loop gets no turn
                pass
            return number

        def make(number: int) -> Task[int]:
            if kind == "coroutines":
                async def run() -> int:
                    return body(number)
                return Task(run)
            return Task(lambda: body(number))

        numbers = itertools.count() if kind == "endless" else range(400)
        pool = Pool((make(n) for n in numbers), 4, backend=Asyncio(loop))

        async def main() -> None:
            if mode == "run_async":
                await pool.run_async()
            else:
                async with contextlib.aclosing(pool.stream_async()) as finished:
                    async for _ in finished:
                        pass

        try:
            if mode == "run":
                pool.run()
            elif mode == "iterate":
                for _ in pool:
                    pass
            else:
                with asyncio.Runner(loop_factory=Asyncio(loop).loop_factory) as runner:
                    runner.run(main())
            raised = "nothing"
        except KeyboardInterrupt:
            raised = "KeyboardInterrupt"
        assert pool.stopped is not None
        say(f"{mode} {kind}: {len(started)} started, {raised}, {pool.stopped.message}")
"""


@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_ctrl_c_starts_no_task_after_it_even_when_the_tasks_never_await(loop: str) -> None:
    with spawn(Child, NEVER_AWAITING, loop, stdin=False) as running:
        status = running.finish()

    assert status == 0, running.said
    # Tasks 0 to 5, in order (one worker runs them all: none awaits); the sixth took the Ctrl-C.
    expected = []
    for mode in ("run", "iterate", "run_async", "stream_async"):
        if "async" in mode:
            why = "the task awaiting the pool was cancelled"
        else:
            why = "interrupted by KeyboardInterrupt()"
        for kind in ("coroutines", "functions", "endless"):
            expected.append(f"{mode} {kind}: 6 started, KeyboardInterrupt, {why}")
    assert running.said == expected


# Ctrl-C between a step of `for task in pool` and the loop's stop: the step's task has returned,
# and the loop runs task 1 right after it (ready callbacks run in the order they were scheduled:
# task 0 finished and woke the step, then task 1 awaited). asyncio.Runner would raise the first
# Ctrl-C at once there, wherever the loop is (in uvloop's own clean-up, that leaves the loop for
# ever "running"); the pool takes it as a Ctrl-C like any other. A second one is raised at once,
# in task 1's code, and that step's stop is still queued as the pool cleans up.
BETWEEN_STEPS = r"""
import asyncio, os, signal, sys, threading
from beyond import Pool, Task
from beyond.backends.event_loop import Asyncio

def say(line: str) -> None:
    os.write(1, (line + "\n").encode())

async def first() -> int:
    return 0

async def second() -> int:
    await asyncio.sleep(0)
    for _ in range(int(sys.argv[2])):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs in here
            pass
    return 1

async def never() -> int:
    await asyncio.sleep(30)
    return 2

tasks = [Task(first), Task(second), Task(never), Task(never)]
pool = Pool(tasks, 2, backend=Asyncio(sys.argv[1]))
try:
    for done in pool:
        say(f"yielded {done.result}")
except KeyboardInterrupt:
    say("KeyboardInterrupt")
say(f"outcomes {[type(task.err).__name__ for task in tasks]}")
say(f"started {[task.finished for task in tasks]}")
say(f"threads alive: {threading.active_count() - 1}")
"""


@pytest.mark.parametrize("presses", [1, 2])
@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_ctrl_c_just_after_a_step_of_the_loop_is_a_clean_ctrl_c(loop: str, presses: int) -> None:
    with spawn(Child, BETWEEN_STEPS, loop, str(presses), stdin=False) as running:
        status = running.finish()

    # Not "RuntimeError: Event loop stopped before Future completed" (or, on uvloop, "this event
    # loop is already running") from the clean-up.
    assert status == 0, running.said
    assert running.said[0] == "KeyboardInterrupt", running.said
    # One Ctrl-C: task 1 runs to its end (it never awaits again). Two: the second is task 1's
    # panic. Task 2 had started before it (there is room for 16 tasks per worker ahead of the
    # loop, so the second worker took it at once) and is cancelled at its await; task 3 never
    # starts.
    second = "KeyboardInterrupt" if presses == 2 else "NoneType"
    assert running.said[1:] == [
        f"outcomes ['NoneType', '{second}', 'Cancelled', 'NoneType']",
        "started [True, True, True, False]",
        "threads alive: 0",
    ]


# The first task panics at once, before it ever awaits, so the first worker's first step lets the
# panic out of the loop while the other workers have not begun. Closing the loop cancels them
# before their first step; run() must still see them ended (it waited for ever on the standard
# loop: an adversarial pass's two quick Ctrl-Cs with tasks that never await, 6 hangs of 6).
PANIC_BEFORE_THE_OTHERS_BEGIN = r"""
import asyncio, sys
from beyond import Pool, Task
from beyond.backends.event_loop import Asyncio

loop, mode = sys.argv[1], sys.argv[2]
panic = {"ctrl-c": KeyboardInterrupt, "exit": SystemExit}[sys.argv[3]]

async def panics() -> None:
    raise panic

async def fine() -> int:
    return 1

pool = Pool([Task(panics)] + [Task(fine) for _ in range(3)], 4, backend=Asyncio(loop=loop))
try:
    if mode == "run":
        pool.run()
    elif mode == "iterate":
        for _ in pool:
            pass
    else:
        asyncio.run(pool.run_async())
except (KeyboardInterrupt, SystemExit) as raised:
    print(type(raised).__name__, pool.stopped.reason.value, [t.finished for t in pool.tasks])
"""


@pytest.mark.parametrize("panic", ["ctrl-c", "exit"])
@pytest.mark.parametrize("mode", ["run", "iterate", "run_async"])
@pytest.mark.parametrize("loop", ["uvloop", "standard"])
def test_a_panic_before_the_other_workers_begin_ends_the_run(
    loop: str, mode: str, panic: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PANIC_BEFORE_THE_OTHERS_BEGIN, loop, mode, panic],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    raised = "KeyboardInterrupt" if panic == "ctrl-c" else "SystemExit"
    assert done.stdout.splitlines() == [f"{raised} panic [True, False, False, False]"], (
        done.stdout,
        done.stderr[-2000:],
    )
