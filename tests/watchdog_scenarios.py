"""Programs for the watchdog's tests, each run as a process of its own.

`python -m tests.watchdog_scenarios NAME` runs one scenario under a `Watchdog` with its default
settings (50 ms samples, 300 ms grace) and its default reaction: the report on stderr, exit
status 2.

Why processes: a deadlock cannot be torn down from inside, and the watchdog rightly never reports
inside pytest, whose timeout (pytest-timeout) arms a real-time timer with a SIGALRM handler for
every test: a way out, by the watchdog's rules. Each process here has only default signal handlers
unless the scenario installs its own.

Most healthy scenarios end in `deadlock_for_good()`: they print HEALTHY_PART_DONE, then main waits
on an Event nobody sets. The report that follows proves that the watchdog was watching all along,
and that what it had seen before was not a deadlock. `Runs` starts a batch of scenarios at once
(they mostly wait, so a batch takes as long as its slowest scenario) and hands out each one's
outcome.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import beyond
import robust
from deadlock_watch import DeadlockReport, Watchdog, current_frames
from deadlock_watch.threads import Wait
from deadlock_watch.watchdog import classify
from errors_channel.pool import double_evens_fail_odds
from errors_channel.pool import run as run_errors_channel
from naive.pool import double_after
from naive.pool import run as run_naive

REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTHY_PART_DONE = "healthy part done"
# Long enough for the watchdog to take many samples and to pass its grace period (0.3 s) three
# times over: a watchdog that took the healthy part for a deadlock would have reported it.
HEALTHY_SECONDS = 1.0

# Each scenario by name, and whether main() starts the default watchdog for it.
SCENARIOS: dict[str, tuple[Callable[[], None], bool]] = {}


def scenario(function: Callable[[], None]) -> Callable[[], None]:
    SCENARIOS[function.__name__] = (function, True)
    return function


def scenario_with_its_own_watchdog(function: Callable[[], None]) -> Callable[[], None]:
    SCENARIOS[function.__name__] = (function, False)
    return function


def deadlock_for_good() -> None:
    """Say the healthy part is over, then hang for real: main waits for an Event nobody sets."""
    print(HEALTHY_PART_DONE, flush=True)
    never_set = threading.Event()
    never_set.wait()


def send_me_later(signum: signal.Signals, seconds: float) -> subprocess.Popen[bytes]:
    """A real signal from outside: another process sends `signum` to this one after `seconds`."""
    sender = f"import os, time; time.sleep({seconds}); os.kill({os.getpid()}, {int(signum)})"
    return subprocess.Popen([sys.executable, "-c", sender])


# --- Threads --------------------------------------------------------------------------------------


@scenario
def queues_an_event_and_a_join() -> None:
    # Two threads wait on queues nobody fills, a third on an Event nobody sets; main joins the
    # third without a timeout. Every thread is asleep.
    inbox_a: queue.Queue[str] = queue.Queue()
    inbox_b: queue.Queue[str] = queue.Queue()
    go_on = threading.Event()
    stuck = [
        threading.Thread(target=inbox_a.get, name="reader-a", daemon=True),
        threading.Thread(target=inbox_b.get, name="reader-b", daemon=True),
        threading.Thread(target=go_on.wait, name="event-waiter", daemon=True),
    ]
    for thread in stuck:
        thread.start()
    stuck[2].join()


@scenario
def slow_naive_run() -> None:
    # Each job sleeps twice the grace period. Main sits in results.get() (asleep) all along, but a
    # sleeping worker is awake: it will come back by itself.
    results = run_naive(4, 2, double_after(0.6), lambda line: None)
    print(f"results: {sorted(results)}")
    deadlock_for_good()


@scenario
def slow_errors_channel_run() -> None:
    outcome = run_errors_channel(4, 2, double_evens_fail_odds(0.6), lambda line: None)
    print(f"results: {sorted(outcome.results)}")
    deadlock_for_good()


@scenario
def computing_thread() -> None:
    iterations = 0

    def compute() -> None:
        nonlocal iterations
        deadline = time.monotonic() + HEALTHY_SECONDS
        while time.monotonic() < deadline:
            iterations += 1

    worker = threading.Thread(target=compute)
    worker.start()
    worker.join()  # main asleep for a second; the worker never is
    print(f"iterations: {iterations}")
    deadlock_for_good()


@scenario
def exit_with_a_stuck_non_daemon_thread() -> None:
    # Main returns, but a non-daemon thread waits for an Event nobody will set: Python would hang
    # at exit, joining it.
    never_set = threading.Event()
    threading.Thread(target=never_set.wait, name="forgotten").start()
    print("main is done")


def _worker_waiting_for_none() -> tuple[queue.Queue[None], threading.Thread]:
    """A worker that waits (untimed, asleep) until main puts None on its inbox."""
    inbox: queue.Queue[None] = queue.Queue()
    worker = threading.Thread(target=inbox.get, name="worker")
    worker.start()
    return inbox, worker


@scenario
def timed_event_wait() -> None:
    # The worker is asleep; main waits with a timeout, which is a way out: nothing is stuck.
    inbox, worker = _worker_waiting_for_none()
    threading.Event().wait(HEALTHY_SECONDS)
    inbox.put(None)
    worker.join()
    deadlock_for_good()


@scenario
def timed_join() -> None:
    inbox, worker = _worker_waiting_for_none()
    worker.join(HEALTHY_SECONDS)  # times out: the worker is still waiting
    inbox.put(None)
    worker.join()
    deadlock_for_good()


@scenario_with_its_own_watchdog
def deadlock_with_a_long_grace_period() -> None:
    # Its own watchdog, with a 1 s grace period, that says how long after the deadlock formed it
    # reported it. The deadlock forms when main starts waiting, as nothing else runs.
    def report_when(report: DeadlockReport) -> None:
        print(f"reported after {time.monotonic() - formed:.3f} s", flush=True)
        os._exit(2)

    Watchdog(report_when, grace=1.0).start()
    formed = time.monotonic()
    threading.Event().wait()


@scenario
def simple_queue_ping_pong() -> None:
    # Two threads bat a ball through two SimpleQueues for a second while main joins them: each
    # player sleeps in SimpleQueue.get() until the other's put() wakes it, thousands of times a
    # second, always at the same two lines.
    to_left: queue.SimpleQueue[int] = queue.SimpleQueue()
    to_right: queue.SimpleQueue[int] = queue.SimpleQueue()
    deadline = time.monotonic() + HEALTHY_SECONDS
    rallies = 0

    def left() -> None:
        nonlocal rallies
        inbox, outbox = to_left, to_right
        while True:
            ball = inbox.get()
            if ball < 0:
                return
            rallies += 1
            outbox.put(ball + 1 if time.monotonic() < deadline else -1)

    def right() -> None:
        inbox, outbox = to_right, to_left
        while True:
            ball = inbox.get()
            outbox.put(ball)
            if ball < 0:
                return

    players = [threading.Thread(target=left), threading.Thread(target=right)]
    for player in players:
        player.start()
    to_left.put(0)
    for player in players:
        player.join()
    print(f"rallies: {rallies}")
    deadlock_for_good()


@scenario_with_its_own_watchdog
def two_watchdogs() -> None:
    # Each watchdog's thread waits with a timeout between samples: it must not count the other
    # one as an awake part of the program.
    Watchdog().start()
    Watchdog().start()
    threading.Event().wait()


@scenario
def idle_executor_beside_a_deadlock() -> None:
    # The executor's one worker waits in SimpleQueue.get() for work nobody will submit.
    executor = concurrent.futures.ThreadPoolExecutor(1)
    executor.submit(print, "the executor ran once").result()
    threading.Event().wait()


@scenario
def simple_queue_nobody_feeds() -> None:
    letters: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read_one() -> None:
        inbox = letters
        inbox.get()

    threading.Thread(target=read_one, name="reader").start()
    threading.Event().wait()


@scenario
def locks_handed_back_and_forth() -> None:
    # Two threads take turns through two bare locks for a second while main joins them: each
    # sleeps in an untimed acquire() on a held lock until the other releases it, thousands of times
    # a second, always at the same two lines, and a woken one holds its lock before it runs again.
    lefts_turn, rights_turn = threading.Lock(), threading.Lock()
    rights_turn.acquire()
    deadline = time.monotonic() + HEALTHY_SECONDS
    turns = 0
    over = False

    def left() -> None:
        nonlocal turns, over
        mine, theirs = lefts_turn, rights_turn
        while not over:
            mine.acquire()
            turns += 1
            over = time.monotonic() >= deadline
            theirs.release()  # the last one lets right see `over` and end

    def right() -> None:
        mine, theirs = rights_turn, lefts_turn
        while True:
            mine.acquire()
            if over:
                return
            theirs.release()

    players = [threading.Thread(target=left), threading.Thread(target=right)]
    for player in players:
        player.start()
    for player in players:
        player.join()
    print(f"turns: {turns}")
    deadlock_for_good()


@scenario
def lock_held_by_a_sleeping_thread() -> None:
    # A worker waits, untimed, for a lock that main holds while it sleeps: main is awake.
    held = threading.Lock()
    held.acquire()

    def take_it() -> None:
        lock = held
        lock.acquire()

    worker = threading.Thread(target=take_it, name="taker")
    worker.start()
    time.sleep(HEALTHY_SECONDS)
    held.release()
    worker.join()
    deadlock_for_good()


@scenario
def locks_taken_in_opposite_orders() -> None:
    # The textbook deadlock: each thread holds one lock and waits, untimed, for the other's.
    first, second = threading.Lock(), threading.Lock()
    both_hold_one = threading.Barrier(2)

    def take(mine: threading.Lock, theirs: threading.Lock) -> None:
        mine.acquire()
        both_hold_one.wait()
        theirs.acquire()

    takers = [
        threading.Thread(target=take, args=(first, second), name="first-then-second"),
        threading.Thread(target=take, args=(second, first), name="second-then-first"),
    ]
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join()


@scenario
def busy_executor() -> None:
    # Main hands the executor one tiny task after another and waits for each result: main and
    # the worker take turns sleeping, at the same two lines, thousands of times a second.
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        deadline = time.monotonic() + HEALTHY_SECONDS
        tasks = 0
        while time.monotonic() < deadline:
            executor.submit(int, "1").result()
            tasks += 1
        # And a task that takes longer than the grace period.
        executor.submit(time.sleep, 0.6).result()
        print(f"tasks: {tasks + 1}")
        deadlock_for_good()


# --- The pools of stages 3 and 4, whose main wakes every 50 ms only to let a Ctrl-C in ----------

# Each pool scenario runs once per stage, as NAME[robust] and NAME[beyond]. They are a batch of
# their own (pool_scenarios()), run by tests/test_watchdog_pools.py only.
POOL_STAGES = ("robust", "beyond")
POOL_SCENARIOS: list[str] = []


def pool_scenario(function: Callable[[str], None]) -> Callable[[str], None]:
    for stage in POOL_STAGES:
        name = f"{function.__name__}[{stage}]"
        SCENARIOS[name] = (functools.partial(function, stage), True)
        POOL_SCENARIOS.append(name)
    return function


def pool_scenario_with_its_own_watchdog(function: Callable[[str], None]) -> Callable[[str], None]:
    for stage in POOL_STAGES:
        name = f"{function.__name__}[{stage}]"
        SCENARIOS[name] = (functools.partial(function, stage), False)
        POOL_SCENARIOS.append(name)
    return function


def run_pool(stage: str, calls: list[Callable[[], object]], concurrency: int) -> int:
    """Stage 3's or stage 4's Pool (on threads) runs one task per call; how many finished."""
    stages: dict[str, Any] = {"robust": robust, "beyond": beyond}
    pool = stages[stage].Pool([stages[stage].Task(call) for call in calls], concurrency)
    pool.run()
    return sum(task.finished for task in pool.tasks)


@pool_scenario
def pool_tasks_wait_on_a_queue_nobody_feeds(stage: str) -> None:
    # Issue 19, item 6: main's 50 ms wake-ups used to make it look awake, and the hang was silent.
    inbox: queue.Queue[None] = queue.Queue()

    def wait_for_an_item() -> None:
        inbox.get()

    run_pool(stage, [wait_for_an_item] * 3, 3)


@pool_scenario_with_its_own_watchdog
def pool_deadlock_torn_down_by_the_callback(stage: str) -> None:
    # The watchdog calls back instead of ending the process; the callback feeds the queue the tasks
    # wait on, so the pool (its main a daemon thread, its workers too) finishes, and main goes on.
    inbox: queue.Queue[None] = queue.Queue()
    reports: list[DeadlockReport] = []

    def tear_down(report: DeadlockReport) -> None:
        reports.append(report)
        for _ in range(3):
            inbox.put(None)

    def wait_for_an_item() -> None:
        inbox.get()

    watchdog = Watchdog(tear_down).start()
    runner = threading.Thread(
        target=run_pool, args=(stage, [wait_for_an_item] * 3, 3), name="pool-main", daemon=True
    )
    runner.start()
    runner.join()
    watchdog.stop()
    print("pool finished after the report", flush=True)
    print(reports[0].format(), end="", flush=True)
    print(f"threads left: {threading.active_count()}", flush=True)


@pool_scenario_with_its_own_watchdog
def pool_deadlock_timed(stage: str) -> None:
    # How long after the deadlock formed (the last task parks on the queue) the report comes.
    inbox: queue.Queue[None] = queue.Queue()
    parked_at: list[float] = []

    def report_when(report: DeadlockReport) -> None:
        print(f"reported after {time.monotonic() - max(parked_at):.3f} s", flush=True)
        os._exit(2)

    def wait_for_an_item() -> None:
        parked_at.append(time.monotonic())
        inbox.get()

    Watchdog(report_when).start()
    run_pool(stage, [wait_for_an_item] * 3, 3)


@pool_scenario
def pool_of_slow_tasks(stage: str) -> None:
    # Each task sleeps twice the grace period: main waits for workers that are awake.
    print(f"finished: {run_pool(stage, [functools.partial(time.sleep, 0.6)] * 4, 2)}")
    deadlock_for_good()


@pool_scenario
def pool_of_tasks_waiting_with_timeouts(stage: str) -> None:
    # A timed wait is a way out (a timer, as in Go), even on a queue nobody feeds.
    inbox: queue.Queue[None] = queue.Queue()

    def wait_a_while() -> None:
        with contextlib.suppress(queue.Empty):
            inbox.get(timeout=HEALTHY_SECONDS)

    print(f"finished: {run_pool(stage, [wait_a_while] * 3, 3)}")
    deadlock_for_good()


@pool_scenario
def pool_waiting_on_a_running_worker(stage: str) -> None:
    # Two tasks wait, untimed, for a third that computes for a second: everyone but the computing
    # worker is asleep, main included, and that worker will wake them.
    computed = threading.Event()

    def compute() -> None:
        deadline = time.monotonic() + HEALTHY_SECONDS
        while time.monotonic() < deadline:
            pass
        computed.set()

    print(f"finished: {run_pool(stage, [computed.wait, computed.wait, compute], 3)}")
    deadlock_for_good()


def rallies() -> list[Callable[[], object]]:
    """Two tasks that bat an item back and forth twenty times through two queues."""
    ping: queue.Queue[int] = queue.Queue()
    pong: queue.Queue[int] = queue.Queue()

    def serve() -> None:
        for rally in range(20):
            ping.put(rally)
            pong.get()

    def answer() -> None:
        for _ in range(20):
            pong.put(ping.get())

    return [serve, answer]


@pool_scenario
def pools_ending_one_after_another(stage: str) -> None:
    # Pool after pool for a second, each of two tasks that wait for each other by turns: workers
    # park and wake and end all the time, at every point of main's wait.
    deadline = time.monotonic() + HEALTHY_SECONDS
    pools = 0
    while time.monotonic() < deadline:
        pools += run_pool(stage, rallies(), 2) == 2
    print(f"pools: {pools}", flush=True)
    deadlock_for_good()


def beyond_stream_waiting_on_tasks_nobody_feeds() -> None:
    # Stage 4's iteration: the consumer waits for a finished task in the same polling wait.
    inbox: queue.Queue[None] = queue.Queue()

    def wait_for_an_item() -> None:
        inbox.get()

    for _ in beyond.Pool([beyond.Task(wait_for_an_item) for _ in range(2)], 2):
        pass


def beyond_pool_with_a_deadline() -> None:
    # A run's deadline wakes main, a timer: only once it has passed and every task is reported
    # overdue (they never check) is main's wait for good.
    inbox: queue.Queue[None] = queue.Queue()
    started = time.monotonic()

    def report_when(report: DeadlockReport) -> None:
        print(f"reported after {time.monotonic() - started:.3f} s", flush=True)
        print(report.format(), flush=True)
        os._exit(2)

    def wait_for_an_item() -> None:
        inbox.get()

    Watchdog(report_when).start()
    pool = beyond.Pool([beyond.Task(wait_for_an_item) for _ in range(2)], 2, overdue_grace=0.2)
    pool.run(timeout=HEALTHY_SECONDS)


def beyond_generator_waiting_on_a_queue_nobody_feeds(how: str) -> None:
    # A crawler whose feeder forgot the next URL: the tasks generator waits for ever. One worker is
    # inside its next(), the others wait in line for it on the pool's bare lock (_taking).
    feed: queue.Queue[int] = queue.Queue()

    def tasks() -> Iterator[beyond.Task[int]]:
        yield beyond.Task(int)
        while True:
            number = feed.get()
            yield beyond.Task(functools.partial(int, number))

    pool = beyond.Pool(tasks(), 3)
    if how == "run":
        pool.run()
    else:
        for _ in pool:
            pass


def asyncio_pool(calls: list[Callable[[], Any]]) -> beyond.Pool[Any]:
    """Stage 4 on asyncio's standard loop (uvloop's has no Python frames for the watchdog)."""
    from beyond.backends.event_loop import Asyncio

    tasks = [beyond.Task(call) for call in calls]
    return beyond.Pool(tasks, len(tasks), backend=Asyncio(loop="standard"))


def beyond_asyncio_waiting_on_a_queue_nobody_feeds(how: str) -> None:
    # Synchronous run() and `for task in pool` handle Ctrl-C with a SIGINT handler of the pool's
    # own while the loop runs; it only interrupts, so it must not hide the deadlock.
    inbox: list[asyncio.Queue[None]] = []

    async def wait_for_an_item() -> None:
        if not inbox:
            inbox.append(asyncio.Queue())
        await inbox[0].get()

    pool = asyncio_pool([wait_for_an_item] * 3)
    if how == "run":
        pool.run()
    else:
        for _ in pool:
            pass


def beyond_asyncio_with_a_users_sigint_handler() -> None:
    # A program's own SIGINT handler is a way out (the pool then leaves Ctrl-C to it): here it
    # feeds the queue the tasks wait on, after a real SIGINT from another process.
    inbox: list[asyncio.Queue[None]] = []
    loop: list[asyncio.AbstractEventLoop] = []

    async def wait_for_an_item() -> None:
        if not inbox:
            inbox.append(asyncio.Queue())
            loop.append(asyncio.get_running_loop())
        await inbox[0].get()

    def feed(signum: int, frame: FrameType | None) -> None:
        for _ in range(3):
            loop[0].call_soon_threadsafe(inbox[0].put_nowait, None)

    signal.signal(signal.SIGINT, feed)
    sender = send_me_later(signal.SIGINT, 3 * HEALTHY_SECONDS)
    pool = asyncio_pool([wait_for_an_item] * 3)
    pool.run()
    sender.wait()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"finished: {sum(task.finished for task in pool.tasks)}")
    deadlock_for_good()


SCENARIOS["beyond_stream_waiting_on_tasks_nobody_feeds"] = (
    beyond_stream_waiting_on_tasks_nobody_feeds,
    True,
)
SCENARIOS["beyond_pool_with_a_deadline"] = (beyond_pool_with_a_deadline, False)
SCENARIOS["beyond_asyncio_with_a_users_sigint_handler"] = (
    beyond_asyncio_with_a_users_sigint_handler,
    True,
)
POOL_SCENARIOS += [
    "beyond_stream_waiting_on_tasks_nobody_feeds",
    "beyond_pool_with_a_deadline",
    "beyond_asyncio_with_a_users_sigint_handler",
]
for how in ("run", "stream"):
    for function in (
        beyond_generator_waiting_on_a_queue_nobody_feeds,
        beyond_asyncio_waiting_on_a_queue_nobody_feeds,
    ):
        SCENARIOS[f"{function.__name__}[{how}]"] = (functools.partial(function, how), True)
        POOL_SCENARIOS.append(f"{function.__name__}[{how}]")


# --- Signals and timers ---------------------------------------------------------------------------


@scenario
def sigalrm_feeds_a_queue() -> None:
    # An interval timer's SIGALRM handler feeds the queue main reads: main is woken from outside.
    ticks: queue.Queue[float] = queue.Queue()
    signal.signal(signal.SIGALRM, lambda signum, frame: ticks.put(time.monotonic()))
    signal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)
    for _ in range(3):
        ticks.get()  # untimed, but the timer will fire
    # Disarm the timer and give the handler back: from here, nothing can wake main.
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    deadlock_for_good()


@scenario
def sigterm_handler_sets_an_event() -> None:
    # The usual graceful shutdown: main waits until a SIGTERM handler says stop.
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    sender = send_me_later(signal.SIGTERM, 3 * HEALTHY_SECONDS)
    stop.wait()
    sender.wait()
    print("stopped by SIGTERM")


@scenario
def worker_waits_while_a_signal_handler_can_wake_main() -> None:
    # The worker waits for main; main waits for a signal handler: a chain that a signal ends.
    stop = threading.Event()

    def on_sigusr1(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGUSR1, on_sigusr1)
    inbox, worker = _worker_waiting_for_none()
    sender = send_me_later(signal.SIGUSR1, 3 * HEALTHY_SECONDS)
    stop.wait()
    inbox.put(None)
    worker.join()
    sender.wait()
    print("stopped by SIGUSR1")


@scenario
def deadlock_beside_signals_and_timers_that_cannot_wake_it() -> None:
    # An ignored signal wakes nobody; an armed real-time timer whose SIGALRM is ignored neither;
    # and a virtual timer counts only the CPU time this process uses, which it no longer does.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    signal.setitimer(signal.ITIMER_VIRTUAL, 100.0)
    threading.Event().wait()


@scenario
def alarm_ends_a_deadlocked_process() -> None:
    # A deadlock, but an armed alarm with SIGALRM's default action: the process will end by itself
    # (killed by SIGALRM), so it is not stuck forever, and not for the watchdog to end.
    signal.setitimer(signal.ITIMER_REAL, 3 * HEALTHY_SECONDS)
    threading.Event().wait()


# --- asyncio --------------------------------------------------------------------------------------


async def errors_queue_worker(
    worker_id: int, jobs: asyncio.Queue[int | None], errors: asyncio.Queue[Exception]
) -> None:
    while (job := await jobs.get()) is not None:
        print(f"worker {worker_id} processing job {job}", flush=True)
        await asyncio.sleep(0.01)
        if job % 2 == 1:
            await errors.put(ValueError(f"error on job {job}"))  # blocks once errors is full


async def asyncio_errors_queue_main() -> None:
    # The post's stage 2 with coroutines: an errors queue that holds one error, and main waits for
    # every worker before it reads any.
    jobs: asyncio.Queue[int | None] = asyncio.Queue()
    errors: asyncio.Queue[Exception] = asyncio.Queue(maxsize=1)
    workers = [
        asyncio.create_task(errors_queue_worker(w, jobs, errors), name=f"worker-{w}")
        for w in range(1, 4)
    ]
    for job in range(1, 10):
        jobs.put_nowait(job)
    for _ in workers:
        jobs.put_nowait(None)
    await asyncio.gather(*workers)
    print(f"finished with error: {errors.get_nowait()}")


@scenario
def asyncio_errors_queue() -> None:
    # asyncio.run() in the main thread also installs asyncio's own Ctrl-C handler, which must
    # hide nothing. It does so only over Python's default one, which a process started with
    # SIGINT ignored (say, from a shell's background job) would not have: put it back first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(asyncio_errors_queue_main())


@scenario
def asyncio_errors_queue_in_a_thread() -> None:
    loop_thread = threading.Thread(
        target=asyncio.run, args=(asyncio_errors_queue_main(),), name="event-loop"
    )
    loop_thread.start()
    loop_thread.join()


async def deadlock_for_good_async() -> None:
    print(HEALTHY_PART_DONE, flush=True)
    never_set = asyncio.Event()
    await never_set.wait()


@scenario
def asyncio_sleeping_tasks() -> None:
    async def main() -> None:
        # Three tasks asleep on timers: the loop's select() waits a whole second, and nothing
        # but the timer will end it.
        await asyncio.gather(*(asyncio.sleep(HEALTHY_SECONDS) for _ in range(3)))
        await deadlock_for_good_async()

    asyncio.run(main())


@scenario
def asyncio_socket_with_a_slow_writer() -> None:
    # The writer is another process, so no thread here is awake: only the socket registered with
    # the loop's selector says that the loop can still be woken.
    ours, theirs = socket.socketpair()
    writer = (
        "import socket, time\n"
        f"peer = socket.socket(fileno={theirs.fileno()})\n"
        "for chunk in (b'slow ', b'but ', b'sure'):\n"
        f"    time.sleep({HEALTHY_SECONDS / 2})\n"
        "    peer.sendall(chunk)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer], pass_fds=[theirs.fileno()])
    theirs.close()

    async def main() -> None:
        reader, _ = await asyncio.open_connection(sock=ours)
        print(f"read: {(await reader.read()).decode()}", flush=True)
        await deadlock_for_good_async()

    asyncio.run(main())
    process.wait()


@scenario
def asyncio_subprocess() -> None:
    async def main() -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"import time; time.sleep({HEALTHY_SECONDS}); print('child done')",
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await child.communicate()
        print(output.decode().strip(), flush=True)
        await deadlock_for_good_async()

    asyncio.run(main())


@scenario
def asyncio_run_in_executor() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, time.sleep, HEALTHY_SECONDS)
        await deadlock_for_good_async()

    asyncio.run(main())


@scenario
def asyncio_to_thread() -> None:
    async def main() -> None:
        await asyncio.to_thread(time.sleep, HEALTHY_SECONDS)
        await deadlock_for_good_async()

    asyncio.run(main())


@scenario
def asyncio_signal_handler() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, woken.set)
        sender = send_me_later(signal.SIGUSR1, 3 * HEALTHY_SECONDS)
        await woken.wait()
        sender.wait()
        # Without the handler nothing can wake the loop any more.
        loop.remove_signal_handler(signal.SIGUSR1)
        await deadlock_for_good_async()

    asyncio.run(main())


# --- Looking at one thread of this process --------------------------------------------------


def asleep_in(thread: threading.Thread) -> Wait:
    """The thread's wait, once it sleeps in one the watchdog can read (fails after 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = current_frames().get(thread.ident or 0)
        wait = classify(frame, counts_switches=True) if frame is not None else None
        if wait is not None:
            return wait
        thread.join(0.001)
    raise AssertionError(f"{thread.name} never fell asleep")


def sampled(thread: threading.Thread) -> Wait | None:
    return classify(current_frames()[thread.ident or 0], counts_switches=True)


@contextmanager
def gil_kept() -> Iterator[None]:
    """Keep the GIL in this thread: a woken thread cannot run until we wait or the block ends.

    A thread that wants the GIL asks for it only after the switch interval; make it huge. Nothing
    in the block may block (that would release the GIL).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


# --- Running them ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    def blocks(self) -> dict[str, list[str]]:
        """The report's blocks, each header ("thread worker [queue get]:") with its stack lines."""
        blocks = [block.splitlines() for block in self.stderr.split("\n\n")[1:] if block.strip()]
        return {block[0]: block[1:] for block in blocks}


FINAL_WAIT = "thread MainThread [event wait: never_set]:"


def assert_healthy_then_reported(outcome: Outcome, *also_asleep: str, tasks: bool = False) -> None:
    """The healthy part ran to its end unreported; then its final deadlock was reported.

    The report lists main's final wait (or, with `tasks`, the task's), and `also_asleep`.
    """
    assert outcome.returncode == 2, f"exit status {outcome.returncode}: {outcome.stderr}"
    assert outcome.stdout.endswith(HEALTHY_PART_DONE + "\n"), outcome.stdout
    asleep = "tasks" if tasks else "threads"
    first_line = f"fatal error: all {asleep} are asleep - deadlock!\n"
    assert outcome.stderr.startswith(first_line), outcome.stderr
    final_wait = "task Task-1 [event wait: never_set]:" if tasks else FINAL_WAIT
    assert set(outcome.blocks()) == {final_wait, *also_asleep}, outcome.stderr


@functools.cache
def every_scenario() -> Runs:
    """Every scenario but the pools', all started on first use; any still running are killed at
    exit."""
    runs = Runs(name for name in SCENARIOS if name not in POOL_SCENARIOS)
    atexit.register(runs.close)
    return runs


@functools.cache
def pool_scenarios() -> Runs:
    """The pools' scenarios, all started on first use."""
    runs = Runs(POOL_SCENARIOS)
    atexit.register(runs.close)
    return runs


class Runs:
    """Scenarios started all at once, each in its own process; outcome() waits for one of them."""

    def __init__(self, names: Iterable[str]) -> None:
        self._children = {
            name: subprocess.Popen(
                [sys.executable, "-m", "tests.watchdog_scenarios", name],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        }
        self._outcomes: dict[str, Outcome] = {}

    def outcome(self, name: str, timeout: float = 60.0) -> Outcome:
        if name not in self._outcomes:
            child = self._children[name]
            # A hang fails the test instead of stalling the suite: TimeoutExpired.
            stdout, stderr = child.communicate(timeout=timeout)
            self._outcomes[name] = Outcome(child.returncode, stdout, stderr)
        return self._outcomes[name]

    def close(self) -> None:
        for child in self._children.values():
            if child.poll() is None:
                child.kill()
            child.communicate()


def main() -> None:
    (name,) = sys.argv[1:]
    run, watched_by_default = SCENARIOS[name]
    if watched_by_default:
        Watchdog().start()
    run()


if __name__ == "__main__":
    main()
