"""Stage 4 under real signals, each in a child process: Ctrl-C during run() and during iteration
tells the running tasks (they stop at their next checkpoint), waits for them, and leaves no thread;
a signal handler may cancel the pool, even while main holds the pool's lock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.child_process import Child, spawn
from tests.conftest import REPO_ROOT

# The child: 20 tasks on 4 workers, from a generator. Each task says when it starts, then runs
# until the parent releases it by writing its number on the child's stdin, then says it is done.
# "checking" tasks call checkpoint() while they wait, so a cancel stops them there; "deaf" tasks
# never check, so the pool can only wait for them. The parent decides when each task ends, so no
# test here depends on how fast the machine is. The child ends by counting its workers still alive.
CHILD = r"""
import os, sys, threading, time
from beyond import Cancelled, Pool, Task, checkpoint

mode, kind = sys.argv[1], sys.argv[2]
released = [threading.Event() for _ in range(21)]
body_released = threading.Event()

def listen() -> None:
    for line in sys.stdin:
        if line.strip() == "body":
            body_released.set()
        elif line.strip() == "alive?":
            say(f"alive {sum(t.name.startswith('worker-') for t in threading.enumerate())}")
        elif line.strip() == "stopped?":
            say(f"stopped {pool.stopped is not None}")
        else:
            released[int(line)].set()

threading.Thread(target=listen, name="listener", daemon=True).start()

def say(line: str) -> None:
    # One os.write per line: a write this short to a pipe is atomic, whereas sys.stdout (a
    # TextIOWrapper) can lose a line written by two threads at once.
    os.write(1, (line + "\n").encode())

def task(number: int):
    def run() -> int:
        say(f"start {number}")
        if kind == "checking":
            while not released[number].is_set():
                checkpoint()
                released[number].wait(0.001)
        else:
            released[number].wait()
        say(f"done {number}")
        return number
    return run

made = []

def tasks():
    for number in range(20):
        made.append(Task(task(number)))
        yield made[-1]

pool = Pool(tasks(), 4)

if sys.argv[3:] == ["main-blocks-sigint"]:
    import signal

    def block_sigint(signum, frame) -> None:
        # Runs in the main thread: from now on the kernel gives SIGINT to a worker thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        say("main blocks SIGINT")

    signal.signal(signal.SIGUSR1, block_sigint)
try:
    if mode == "run":
        pool.run()
    else:
        for finished in pool:
            say(f"yielded {finished.result}")
            if mode == "stream-body":
                # The loop's body is busy (Ctrl-C lands here, not in the pool).
                body_released.wait()
except KeyboardInterrupt:
    finished = [task for task in made if task.finished]
    cancelled = sum(isinstance(task.err, Cancelled) for task in finished)
    say(f"interrupted: {len(finished)} finished, {cancelled} cancelled")
    workers = [t.name for t in threading.enumerate() if t.name.startswith("worker-")]
    say(f"workers alive: {len(workers)}")
    raise SystemExit(130)
say("not interrupted")
"""


class Listening(Child):
    """The child above, whose listener also answers questions and releases tasks."""

    def release(self, *numbers: int | str) -> None:
        self.tell(*(str(number) for number in numbers))

    def ask_until(self, question: str, answer: str) -> None:
        """Ask the child's listener `question` until it answers `answer` (polling, but nothing
        depends on how soon it does)."""
        assert self.process.stdout is not None
        prefix = answer.split()[0] + " "
        while True:
            self.release(question)
            while not (said := self.process.stdout.readline()).startswith(prefix):
                if not said:
                    raise AssertionError(f"the child ended: {self.said}")
                self.said.append(said.rstrip("\n"))
            if said.strip() == answer:
                return
            time.sleep(0.01)

    def ask(self, question: str, prefix: str) -> str:
        """Ask the child's listener `question` once; its answer, the line starting `prefix`."""
        assert self.process.stdout is not None
        self.release(question)
        while not (said := self.process.stdout.readline()).startswith(prefix):
            if not said:
                raise AssertionError(f"the child ended: {self.said}")
            self.said.append(said.rstrip("\n"))
        return said.strip()

    def wait_until_workers_alive(self, count: int) -> None:
        """A worker ends only after its task has finished: how the parent knows a task is over."""
        self.ask_until("alive?", f"alive {count}")


@contextmanager
def child(mode: str, kind: str, *extra: str) -> Iterator[Listening]:
    with spawn(Listening, CHILD, mode, kind, *extra) as running:
        yield running


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_ctrl_c_stops_checkpointing_tasks_at_their_next_checkpoint_and_starts_no_more(
    mode: str,
) -> None:
    # Nothing is ever released: the four running tasks can only end by seeing the cancel at a
    # checkpoint. A pool that did not tell them would wait forever (the communicate timeout).
    with child(mode, "checking") as running:
        for number in range(4):
            running.read_until(f"start {number}")
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130
    assert "interrupted: 4 finished, 4 cancelled" in running.said
    assert running.started() == [0, 1, 2, 3]
    assert running.said[-1] == "workers alive: 0"


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_a_ctrl_c_that_a_worker_thread_receives_still_stops_the_pool(mode: str) -> None:
    # The kernel may give a process's SIGINT to any thread that does not block it. Here main
    # blocks it, so a worker gets it: CPython then runs the handler (KeyboardInterrupt) in main
    # only when main next runs bytecode. A main asleep in a lock for good would never stop.
    with child(mode, "checking", "main-blocks-sigint") as running:
        for number in range(4):
            running.read_until(f"start {number}")
        running.process.send_signal(signal.SIGUSR1)
        running.read_until("main blocks SIGINT")
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130
    assert "interrupted: 4 finished, 4 cancelled" in running.said
    assert running.said[-1] == "workers alive: 0"


def test_ctrl_c_in_the_loops_body_stops_the_pool_when_the_loop_is_left() -> None:
    with child("stream-body", "checking") as running:
        for number in range(4):
            running.read_until(f"start {number}")
        running.release(0)
        running.read_until("yielded 0")
        # The loop's body is busy now; Ctrl-C lands there, the loop is left, and the generator
        # is closed on the way out: that must cancel the three running tasks and wait for them.
        running.process.send_signal(signal.SIGINT)
        status = running.finish()

    assert status == 130
    started = running.started()
    # Task 4 may have started as task 0 finished; nothing after the signal.
    assert started in ([0, 1, 2, 3], [0, 1, 2, 3, 4])
    assert f"interrupted: {len(started)} finished, {len(started) - 1} cancelled" in running.said
    assert running.said[-1] == "workers alive: 0"


def ctrl_c(running: Listening) -> None:
    """A real SIGINT, and wait until the child's pool has stopped (main took the signal)."""
    running.process.send_signal(signal.SIGINT)
    running.ask_until("stopped?", "stopped True")


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_ctrl_c_waits_for_tasks_that_never_check_and_starts_no_new_one(mode: str) -> None:
    with child(mode, "deaf") as running:
        for number in range(4):
            running.read_until(f"start {number}")
        ctrl_c(running)
        running.release(0, 1, 2, 3)
        status = running.finish()

    assert status == 130
    assert "interrupted: 4 finished, 0 cancelled" in running.said
    assert running.started() == [0, 1, 2, 3]
    assert running.said[-1] == "workers alive: 0"


def test_a_second_ctrl_c_stops_the_wait_but_the_running_task_still_finishes_before_exit() -> None:
    with child("run", "deaf") as running:
        for number in range(4):
            running.read_until(f"start {number}")
        ctrl_c(running)
        running.release(1, 2, 3)
        for number in (1, 2, 3):
            running.read_until(f"done {number}")
        # Tasks 1-3 have returned once their workers have ended (after the first Ctrl-C, no
        # worker takes another task): only task 0's worker is left.
        running.wait_until_workers_alive(1)
        # The second Ctrl-C: run() stops waiting for task 0 and re-raises at once...
        running.process.send_signal(signal.SIGINT)
        running.read_until("interrupted: 3 finished, 0 cancelled")
        # ...but task 0's worker is not a daemon, so the interpreter waits for it at exit.
        running.release(0)
        status = running.finish()

    assert status == 130
    assert running.said.index("done 0") > running.said.index("interrupted: 3 finished, 0 cancelled")
    assert running.started() == [0, 1, 2, 3]


# A signal handler that cancels the pool, raised by main itself while it holds the pool's lock:
# CPython runs the handler in main right after raise_signal returns, inside the `with`. With a
# plain Lock the handler would wait for main, which waits for the handler: a hang.
HANDLER = r"""
import signal, sys, threading
from beyond import Cancelled, Pool, Task, current_token

started = threading.Barrier(3)

def waits_for_cancel() -> int:
    started.wait()
    current_token().sleep(60)
    return 0

pool = Pool([Task(waits_for_cancel) for _ in range(2)] + [Task(lambda: 1) for _ in range(5)], 2)
signal.signal(signal.SIGUSR1, lambda signum, frame: pool.cancel())
runner = threading.Thread(target=pool.run)
runner.start()
started.wait()
if sys.argv[1] == "while-main-holds-the-lock":
    with pool._scheduler._lock:
        signal.raise_signal(signal.SIGUSR1)
        print("handler ran inside the lock:", pool.stopped is not None, flush=True)
else:
    print("waiting for the signal", flush=True)
# The handler runs in main while it waits here (a join that is not interrupted by an exception is
# fine; the handler does not raise).
runner.join()
print(pool.stopped.reason.name, [type(task.err).__name__ for task in pool.tasks])
"""


@pytest.mark.parametrize("when", ["from-outside", "while-main-holds-the-lock"])
def test_a_signal_handler_can_cancel_the_pool(when: str) -> None:
    outside = when == "from-outside"
    first = "waiting for the signal" if outside else "handler ran inside the lock: True"
    with spawn(Child, HANDLER, when, stdin=False) as running:
        running.read_until(first)
        if outside:
            running.process.send_signal(signal.SIGUSR1)
        status = running.finish()

    assert status == 0
    outcomes = ["Cancelled"] * 2 + ["NoneType"] * 5
    assert running.said == [first, f"CANCELLED {outcomes}"]


# A child that may only map a little more memory than it has: each thread's stack needs address
# space, so the system refuses a new thread after a handful (as in stage 3's test).
LIMITED = r"""
import resource, sys, threading

def vm_size() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))

resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (64 << 20), resource.RLIM_INFINITY))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("how", ["run", "stream"])
def test_a_thread_the_system_refuses_stops_the_pool_and_says_how_many_started(how: str) -> None:
    program = (
        LIMITED
        + r"""
import time
from beyond import Pool, Task

def job(number: int):
    def run() -> int:
        time.sleep(0.05)
        return number
    return run

pool = Pool([Task(job(number)) for number in range(500)], 500)
try:
    if sys.argv[1] == "run":
        pool.run()
    else:
        list(pool)
except RuntimeError as error:
    print(error)
print(pool.stopped.reason.name)
print(sorted(thread.name for thread in threading.enumerate()))
"""
    )
    completed = subprocess.run(
        [sys.executable, "-c", program, how],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    message, reason, threads = completed.stdout.splitlines()
    started = int(message.split()[3])
    assert 1 <= started < 500
    assert message == f"could start only {started} of 500 worker threads: can't start new thread"
    assert reason == "INTERRUPTED"
    assert threads == "['MainThread']"


# A worker inside the generator's next(): it runs no task, and may never come back (a generator
# blocked on a queue or a socket). Task 0 is quick, or "deaf" (it ends only when the parent says
# "0"); then the generator says "in next" and waits until the parent says "source", after which
# it gives one more task ("late"), or raises, or (never) it is not released at all. After the
# KeyboardInterrupt the child waits for "exit" before it reports and exits, so that the parent can
# watch the worker in between.
SOURCE_CHILD = r"""
import os, sys, threading
from beyond import Pool, Task
from deadlock_watch import current_frames

mode, first, after = sys.argv[1], sys.argv[2], sys.argv[3]
released = {name: threading.Event() for name in ("0", "source", "exit")}

def say(line: str) -> None:
    os.write(1, (line + "\n").encode())

def listen() -> None:
    for line in sys.stdin:
        word = line.strip()
        if word == "alive?":
            say(f"alive {sum(t.name.startswith('worker-') for t in threading.enumerate())}")
        elif word == "stopped?":
            say(f"stopped {pool.stopped is not None}")
        elif word == "main?":
            # Is main in the pool's exit hook, joining a worker?
            frame, names = current_frames().get(threading.main_thread().ident or -1), []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            say("main joins at exit" if {"wait_at_exit", "join"} <= set(names) else "main not")
        else:
            released[word].set()

threading.Thread(target=listen, name="listener", daemon=True).start()

def task_0() -> int:
    say("start 0")
    if first == "deaf":
        released["0"].wait()
    say("done 0")
    return 0

def late() -> int:
    say("start late")
    return 1

def tasks():
    yield Task(task_0)
    say("in next")
    released["source"].wait()
    if after == "raises":
        raise ValueError("the generator failed late")
    say("next returns")
    yield Task(late)

pool = Pool(tasks(), 2)
try:
    if mode == "run":
        pool.run()
    else:
        for _ in pool:
            pass
except KeyboardInterrupt:
    say("interrupted")
    released["exit"].wait()
    say(f"stopped: {pool.stopped.message}")
    raise SystemExit(130)
say("not interrupted")
"""


@contextmanager
def source_child(mode: str, first: str, after: str) -> Iterator[Listening]:
    with spawn(Listening, SOURCE_CHILD, mode, first, after) as running:
        yield running


@pytest.mark.parametrize("after", ["task", "raises", "never"])
@pytest.mark.parametrize("mode", ["run", "stream"])
def test_ctrl_c_while_a_worker_is_inside_the_generators_next_is_not_kept_waiting_for_it(
    mode: str, after: str
) -> None:
    with source_child(mode, "quick", after) as running:
        running.read_until("done 0", "in next")
        running.process.send_signal(signal.SIGINT)
        # Before anything releases the generator: the caller is not kept waiting for it.
        running.read_until("interrupted")
        # The worker inside next() is alive (and the other one too, if it finished task 0 in
        # time to queue for the generator behind it).
        assert running.ask("alive?", "alive ") in ("alive 1", "alive 2")
        if after != "never":
            running.release("source")
            # It comes back to a stopped pool: it starts nothing, and its thread ends.
            running.wait_until_workers_alive(0)
        # With "never", the thread is still inside next(): it must not keep the process alive.
        running.release("exit")
        status = running.finish()

    assert status == 130, running.said
    assert "start late" not in running.said
    assert running.said[-1] == "stopped: interrupted by KeyboardInterrupt()"


def test_after_a_second_ctrl_c_the_exit_waits_for_the_running_task_but_not_the_generator() -> None:
    with source_child("run", "deaf", "never") as running:
        running.read_until("start 0", "in next")
        ctrl_c(running)
        # run() waits for task 0, which never checks; the second Ctrl-C ends that wait.
        running.process.send_signal(signal.SIGINT)
        running.read_until("interrupted")
        running.release("exit")
        # Main has returned, and the interpreter is exiting: it waits for task 0's worker (the
        # listener still answers meanwhile), and not for the one inside next(), which never
        # comes back.
        running.ask_until("main?", "main joins at exit")
        assert running.ask("alive?", "alive ") == "alive 2"
        running.release(0)
        status = running.finish()

    assert status == 130, running.said
    assert running.said.index("done 0") > running.said.index("interrupted")
    assert "start late" not in running.said
