"""concurrent.futures: a task that waits for another task of its own, saturated, executor.

The hang: each job has two steps. Its first step runs on a `ThreadPoolExecutor`, submits the
second step to that same executor, and waits for its result. With fewer jobs than workers that
works: an idle worker runs the second step. Main submits the nine jobs long before any first step
(0.3 s of work by default) submits its second step: in 0.7 ms here (median of 20 tries; the
slowest took 0.1 s, on a heavily loaded machine). So every first step is queued ahead of every
second step, and once the jobs fill every worker, every worker sits in a first step, waiting for
a second step queued behind the first steps still to come, and no worker is left to run one.
(Were main slower than a first step, an early second step could slip in ahead and a small run
could finish: the hang needs a busy pool, like most real ones. With `--work-seconds 0` the
default run still hung in each of 20 tries here.)

Who waits on whom:
- main waits in `Future.result()` for the first jobs;
- every worker waits in `Future.result()` for its job's second step;
- every second step waits in the executor's work queue for a free worker.
It is the post's deadlock with the executor's workers for the errors queue's slots: work that
can only finish when a worker is free, waited for by every worker.

The fix (`run_with_an_executor_per_step`): the second steps get an executor of their own. Its
workers run only second steps, which wait for nothing, so each one finishes; then each first step
gets its result, and main gets every job's. For any depth of nesting, the general rule is that no
task waits for work queued on its own executor: let the caller chain the steps instead.

The deadlock watchdog (`deadlock_watch/`) sees this one, and the demo starts it as
stage 2's does: main and every worker wait in `threading.Condition.wait()` without a timeout (a
Future's result() waits on the future's Condition), and no other thread exists. It would not see
an idle worker waiting for work (that wait is in C), but an idle worker would run the second step,
so there is no deadlock then. Without the watchdog (`--no-watchdog`) Ctrl-C does not end the hang
either: main takes the KeyboardInterrupt, and leaving the `with` block then waits for the stuck
workers (`shutdown(wait=True)`).

Sample run (`python -m families futures-nested`; exit status 2):

    job 1: first step on worker_0
    job 2: first step on worker_1
    job 3: first step on worker_2
    fatal error: all threads are asleep - deadlock!

    thread MainThread [condition wait: self._condition]:
    families.futures_nested.run_nested.<locals>.<listcomp>(...)
            families/futures_nested.py:91
    ...
    thread worker_0 [condition wait: self._condition]:
    families.futures_nested.first_step(...)
            families/futures_nested.py:78
    ...

With `--fix`, every job's second step runs on a `second_N` thread, and the run ends with

    results: 2 4 6 8 10 12 14 16 18
    finished: 9 results
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

Log = Callable[[str], None]


def second_step(job: int, log: Log) -> int:
    log(f"job {job}: second step on {threading.current_thread().name}")
    return job * 2


def first_step(job: int, seconds: float, second_steps: Executor, log: Log) -> int:
    """Work `seconds`, then hand the rest of the job to `second_steps` and wait for it."""
    log(f"job {job}: first step on {threading.current_thread().name}")
    time.sleep(seconds)
    rest = second_steps.submit(second_step, job, log)
    # DEADLOCK: when second_steps is the executor this step runs on, and every one of its workers
    # is in a first step, no worker will ever take `rest` off the queue.
    return rest.result()


def run_nested(job_count: int, worker_count: int, seconds: float, log: Log) -> list[int]:
    """Both steps on one executor. Hangs once job_count >= worker_count (see the docstring)."""
    with ThreadPoolExecutor(worker_count, thread_name_prefix="worker") as executor:
        # Main submits every first step at once, long before the first of them submits its second
        # step, so all first steps are queued ahead of all second steps.
        jobs = [
            executor.submit(first_step, job, seconds, executor, log)
            for job in range(1, job_count + 1)
        ]
        # DEADLOCK: main waits for first steps that wait for second steps that wait for a worker.
        return [job.result() for job in jobs]


def run_with_an_executor_per_step(
    job_count: int, worker_count: int, seconds: float, log: Log
) -> list[int]:
    """The fix: second steps run on their own executor, whose workers never wait."""
    with (
        ThreadPoolExecutor(worker_count, thread_name_prefix="first") as first_steps,
        ThreadPoolExecutor(worker_count, thread_name_prefix="second") as second_steps,
    ):
        jobs = [
            first_steps.submit(first_step, job, seconds, second_steps, log)
            for job in range(1, job_count + 1)
        ]
        # Every second step finishes (it waits for nothing), so every first step does, too.
        return [job.result() for job in jobs]
