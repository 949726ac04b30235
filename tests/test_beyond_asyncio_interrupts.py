"""Stage 4 on asyncio under a real Ctrl-C, each run in a child process, on both loops: the running
tasks are cancelled at their await (each keeps Cancelled), nothing new starts, run() or the loop
over the pool raises KeyboardInterrupt once they have unwound, and no thread is left.
"""

from __future__ import annotations

import platform
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.child_process import Child, spawn

# The child: 20 tasks on 4 workers, from a generator. Task 0 returns at once; every other task
# says when it starts and then awaits a 30 s sleep, which only a cancel ends. A "deaf" task
# swallows the first cancel and sleeps again; with "deaf-spinning", task 4 spins instead, never
# awaiting again. The child ends by saying how far the pool got and which threads are alive.
CHILD = r"""
import asyncio, contextlib, os, sys, threading
from beyond import Cancelled, Pool, Task
from beyond.asyncio_backend import Asyncio

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
    reason = "the task awaiting the pool was cancelled" if "async" in mode else "interrupted"
    assert any(line.startswith(f"stopped: {reason}") for line in running.said), running.said
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
