"""The watchdog sees an asyncio loop whose tasks all await what only another task could finish.

Whole programs run as processes of their own (see tests/watchdog_scenarios.py); each healthy one
ends in a real deadlock, so that its report proves the watchdog was watching all along.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.watchdog_scenarios import (
    asleep_in,
    assert_healthy_then_reported,
    every_scenario,
    gil_kept,
    sampled,
)

SCENARIOS_FILE = Path(__file__).resolve().parent / "watchdog_scenarios.py"


def line_of(text: str) -> int:
    """The line of the scenarios file that holds `text` (exactly one does)."""
    (line,) = [
        n for n, code in enumerate(SCENARIOS_FILE.read_text().splitlines(), 1) if text in code
    ]
    return line


def assert_errors_queue_deadlock_reported(stderr: str) -> dict[str, list[str]]:
    """Go's shape: the first line, then main's task at its gather and each worker at its put."""
    assert stderr.startswith("fatal error: all tasks are asleep - deadlock!\n")
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in stderr.split("\n\n")[1:]}
    put = f"\ttests/watchdog_scenarios.py:{line_of('await errors.put(')}"
    gather = f"\ttests/watchdog_scenarios.py:{line_of('await asyncio.gather(*workers)')}"
    assert blocks["task Task-1 [await gather]:"][:2] == [
        "__main__.asyncio_errors_queue_main(...)",
        gather,
    ]
    for worker in ("worker-1", "worker-2", "worker-3"):
        assert blocks[f"task {worker} [queue put: errors]:"][:2] == [
            "__main__.errors_queue_worker(...)",
            put,
        ]
    return blocks


def test_reports_the_posts_deadlock_written_with_asyncio_like_go() -> None:
    # Workers put errors on an asyncio.Queue(maxsize=1); main awaits gather() of the workers
    # before it reads any. asyncio.run() installs its own Ctrl-C handler, which hides nothing.
    outcome = every_scenario().outcome("asyncio_errors_queue")

    assert outcome.returncode == 2
    processed = [int(line.split()[-1]) for line in outcome.stdout.splitlines()]
    assert processed == [1, 2, 3, 4, 5, 6, 7]  # as in the post: jobs 8 and 9 are never taken
    blocks = assert_errors_queue_deadlock_reported(outcome.stderr)
    assert len(blocks) == 4


def test_reports_a_deadlocked_loop_in_another_thread_with_main_joining_it() -> None:
    outcome = every_scenario().outcome("asyncio_errors_queue_in_a_thread")

    assert outcome.returncode == 2
    blocks = assert_errors_queue_deadlock_reported(outcome.stderr)
    assert set(blocks) - {"task Task-1 [await gather]:"} == {
        "task worker-1 [queue put: errors]:",
        "task worker-2 [queue put: errors]:",
        "task worker-3 [queue put: errors]:",
        "thread MainThread [thread join: event-loop]:",
    }


def test_sleeping_tasks_are_not_reported() -> None:
    assert_healthy_then_reported(every_scenario().outcome("asyncio_sleeping_tasks"), tasks=True)


def test_a_task_reading_a_socket_that_another_process_writes_slowly_is_not_reported() -> None:
    # No thread is awake here: only the socket registered with the selector is a way out.
    outcome = every_scenario().outcome("asyncio_socket_with_a_slow_writer")
    assert "read: slow but sure\n" in outcome.stdout
    assert_healthy_then_reported(outcome, tasks=True)


def test_a_task_waiting_for_a_subprocess_is_not_reported() -> None:
    outcome = every_scenario().outcome("asyncio_subprocess")
    assert "child done\n" in outcome.stdout
    assert_healthy_then_reported(outcome, tasks=True)


def test_a_task_waiting_for_run_in_executor_work_is_not_reported() -> None:
    # Afterwards the default executor's worker is idle; the final report names it too.
    outcome = every_scenario().outcome("asyncio_run_in_executor")
    assert_healthy_then_reported(outcome, "thread asyncio_0 [executor worker idle]:", tasks=True)


def test_a_task_waiting_for_to_thread_is_not_reported() -> None:
    outcome = every_scenario().outcome("asyncio_to_thread")
    assert_healthy_then_reported(outcome, "thread asyncio_0 [executor worker idle]:", tasks=True)


def test_a_loop_that_a_signal_handler_can_wake_is_not_reported() -> None:
    # loop.add_signal_handler(SIGUSR1, ...); a real SIGUSR1 comes from another process after 3 s.
    # Once the handler is removed, nothing can wake the loop, and the report follows.
    assert_healthy_then_reported(every_scenario().outcome("asyncio_signal_handler"), tasks=True)


def test_a_loop_with_a_callback_from_another_thread_to_run_is_awake() -> None:
    # call_soon_threadsafe() puts the callback in the loop's ready queue, then wakes the loop
    # through its self-pipe. Here the wake-up is held back: the callback alone must say "awake".
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        assert asleep_in(runner).kind == "loop"
        with gil_kept():
            vars(loop)["_write_to_self"] = lambda: None
            loop.call_soon_threadsafe(print, "the callback ran")
            with_a_callback = sampled(runner)
            del vars(loop)["_write_to_self"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
    assert with_a_callback is None
