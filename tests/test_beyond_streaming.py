"""Stage 4's hand-over to the loop over the pool, and its claim of a generator's tasks, both without
a lock per task: a Ctrl-C at any instruction of the consumer still stops the pool and leaves no
thread behind, and no task runs twice however many pools claim it at once."""

from __future__ import annotations

import dis
import sys
import threading
from collections.abc import Callable
from functools import partial
from types import CodeType, FrameType
from typing import Any

import pytest

import beyond.scheduler
import beyond.task
import beyond.waiting
from beyond import Pool, StopReason, Task
from tests.conftest import finish_within

# test_beyond.py's autouse fixtures, which apply here too: no thread outlives a test, and a
# wake-up the pool forgets hangs the test instead of costing 50 ms.
from tests.test_beyond import (  # noqa: F401
    no_thread_left_behind,
    wake_ups_are_not_covered_by_polling,
)

Scheduler = beyond.scheduler.Scheduler
# Everything the consumer (the thread looping over the pool) runs of the pool's own code per task.
CONSUMER_CODE = (
    Scheduler.finished,
    Scheduler._next_finished_or_sleep,
    Scheduler._sleep_until,
    Scheduler._wake_room_waiters,
)


def instructions(function: Callable[..., Any]) -> list[int]:
    """Where in `function` a Ctrl-C can land: CPython runs a signal handler (which raises
    KeyboardInterrupt) only at its eval breaker, checked at a function's start (RESUME), after a
    call returns and at a loop's backward jump (one landing at the start of a pool function this
    calls is that function's own case). Not between any two instructions: at the end of a `with`
    block, say, a Ctrl-C can never skip __exit__."""
    code = list(dis.get_instructions(function))
    points: set[int] = set()
    for index, instruction in enumerate(code):
        after_a_check = instruction.opname.startswith("CALL") or instruction.opname == "RESUME"
        if after_a_check and index + 1 < len(code):
            points.add(code[index + 1].offset)
        if instruction.opname.startswith("JUMP_BACKWARD"):
            points.add(instruction.argval)
    return sorted(points)


class InterruptAt:
    """A trace function that raises KeyboardInterrupt in the traced thread just before the
    instruction at `offset` of `code` runs for the `nth` time: a Ctrl-C landing there, as the
    signal handler raises it in the main thread between two bytecodes."""

    def __init__(self, code: CodeType, offset: int, nth: int) -> None:
        self.code, self.offset, self.left = code, offset, nth
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is not self.code:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self.local

    def local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode" and frame.f_lasti == self.offset and not self.fired:
            self.left -= 1
            if self.left == 0:
                self.fired = True
                raise KeyboardInterrupt(f"at {self.code.co_name}+{self.offset}")
        return self.local


def stream_interrupted_at(code: CodeType, offset: int) -> tuple[bool, Pool[int]]:
    """Iterate over a pool of 2 workers and 400 no-op tasks from a generator, with a Ctrl-C
    injected at one instruction of the consumer's code (its third run, so that workers are
    already waiting for room or handing over). Whether it fired, and the pool."""
    tasks = (Task(partial(int, n)) for n in range(400))
    pool = Pool(tasks, 2)
    interrupt = InterruptAt(code, offset, 3)

    def consume() -> None:
        sys.settrace(interrupt)
        try:
            for _task in pool:
                pass
        except KeyboardInterrupt:
            if not interrupt.fired:
                raise
        finally:
            sys.settrace(None)

    finish_within(20, consume)
    return interrupt.fired, pool


@pytest.mark.parametrize("function", CONSUMER_CODE, ids=lambda f: f.__name__)
def test_a_ctrl_c_at_any_instruction_of_the_consumer_stops_the_pool_and_ends_every_worker(
    function: Callable[..., Any],
) -> None:
    # The consumer takes finished tasks without a lock and wakes the workers waiting for room
    # itself: a Ctrl-C between any two of its instructions (a popped task, a count not yet made,
    # waiters not yet notified) must still end in stop(), which wakes every waiter, and every
    # worker ends (else finish_within fails, and the fixture finds threads left behind).
    fired = 0
    for offset in instructions(function):
        landed, pool = stream_interrupted_at(function.__code__, offset)
        if landed:
            fired += 1
            assert pool.stopped is not None
            assert pool.stopped.reason is StopReason.INTERRUPTED
    # Most instructions are reached (the sleeping path and the wake-ups included); not every
    # one (an exception handler that never runs, a return not taken this time).
    assert fired >= len(instructions(function)) // 2


def test_a_generators_task_is_claimed_with_no_switch_point_between_read_and_write() -> None:
    # beyond.task.claim claims a generator's task without a lock: it reads task._owner and
    # writes it with nothing in between where CPython could switch threads or run a signal
    # handler: no call, no backward jump (the eval breaker runs at those), no yield.
    code = list(dis.get_instructions(beyond.task.claim))
    reads = [
        i for i, ins in enumerate(code) if ins.opname == "LOAD_ATTR" and ins.argval == "_owner"
    ]
    writes = [
        i for i, ins in enumerate(code) if ins.opname == "STORE_ATTR" and ins.argval == "_owner"
    ]
    assert len(reads) == len(writes) == 1 and reads[0] < writes[0]
    between = code[reads[0] + 1 : writes[0]]
    switch_points = ("CALL", "PRECALL", "JUMP_BACKWARD", "YIELD", "SEND", "RESUME", "FOR_ITER")
    assert not [ins.opname for ins in between if ins.opname.startswith(switch_points)]


def test_pools_racing_to_claim_the_same_generator_tasks_run_each_at_most_once() -> None:
    # Three pools read generators over the same 300 tasks at once. Each task is claimed by one of
    # them; the others are refused when they reach it (their run raises ValueError). Thread
    # switches forced as often as CPython allows, so that a claim that could be split would be.
    counted: list[int] = []

    def count(n: int) -> None:
        counted.append(n)

    tasks = [Task(partial(count, n)) for n in range(300)]
    outcomes: list[BaseException | None] = []

    def run_one() -> None:
        try:
            Pool((task for task in tasks), 3).run()
            outcomes.append(None)
        except ValueError as refused:
            outcomes.append(refused)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        runners = [threading.Thread(target=run_one) for _ in range(3)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert len(outcomes) == 3
    assert sorted(counted) == sorted(set(counted))
    assert sum(outcome is not None for outcome in outcomes) >= 2
