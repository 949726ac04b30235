"""`pytest --deadlock`: a test whose threads all wait for ever fails at once, with Go's report.

Off by default; on with `pytest --deadlock` or the ini option `deadlock = true` (the `pytest11`
entry point in pyproject.toml registers this module as the plugin `deadlock`, so `-p no:deadlock`
takes it out). While each test's setup, call and teardown run, a `Watchdog` watches the test's
threads (whose_threads.py says which those are). Once every one of them is parked in a wait only
another could end, the watchdog's thread hands its report to the test's thread with a signal,
whose handler fails the test there: the report is the failure's text, and the run goes on. At
the interpreter's exit, threads that deadlocked tests left asleep are not waited for. Each rule's
reason is in docs/pytest-deadlock.md.
"""

from __future__ import annotations

import functools
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from types import FrameType

import pytest

from deadlock_watch.report import DeadlockReport
from deadlock_watch.watchdog import Watchdog
from deadlock_watch.whose_threads import ThreadsOfTheTest

# How the watchdog's thread reaches the test's: Python runs a signal handler in the main thread,
# between two bytecodes or as soon as a wait there is interrupted (every wait the watchdog proves
# asleep returns to Python when a signal arrives). A real-time signal, because neither the
# standard library nor pytest and its plugins handle one, and programs that take real-time signals
# for their own use take them from SIGRTMIN up; this takes the last. SIGUSR2 where there are none.
REPORT_SIGNAL: int | None = getattr(signal, "SIGRTMAX", getattr(signal, "SIGUSR2", None))

HELP = "fail a test at once, with Go's deadlock report, when all its threads wait for ever"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deadlock", "deadlock_watch: Go's deadlock report for tests")
    group.addoption("--deadlock", action="store_true", default=False, help=HELP)
    parser.addini("deadlock", HELP + " (what --deadlock turns on)", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    if not (config.getoption("deadlock") or config.getini("deadlock")):
        return
    problem = why_it_cannot_watch()
    if problem is not None:
        # A warning, not an error: the tests still run, as they would without --deadlock.
        warning = pytest.PytestConfigWarning(f"--deadlock is off: {problem}")
        config.issue_config_time_warning(warning, stacklevel=2)
        return
    config.pluginmanager.register(DeadlockWatch(config), "deadlock-watch")


def why_it_cannot_watch() -> str | None:
    """Why this process cannot fail a deadlocked test in its thread; None if it can."""
    if REPORT_SIGNAL is None or not hasattr(signal, "pthread_kill"):
        return "this platform cannot send a signal to a thread (signal.pthread_kill)"
    if threading.current_thread() is not threading.main_thread():
        return "pytest runs outside the main thread, where no signal handler can run"
    handler = signal.getsignal(REPORT_SIGNAL)
    if handler not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return f"signal {REPORT_SIGNAL} (which it needs) already has a handler: {handler!r}"
    return None


@dataclass
class Phase:
    """One test's setup, call or teardown, as the plugin watches it.

    The watcher's thread writes it under DeadlockWatch._lock; the signal handler reads it in the
    test's thread, after the signal that the watcher sends once it has written.
    """

    over: bool = False
    # What to raise: the first report's text, and any later one's (see _watch_until_over).
    failures: list[str] = field(default_factory=list)
    # How many of them the handler has raised in the test's thread.
    raised: int = 0
    # The watchdog watching it now, which the test's thread stops when the phase is over.
    watchdog: Watchdog | None = None


class DeadlockWatch:
    """The plugin, registered only when --deadlock is on."""

    def __init__(self, config: pytest.Config) -> None:
        self._threads = ThreadsOfTheTest()
        self._main = threading.main_thread()
        # The phase being watched, or None between phases; the signal handler reads it.
        self._phase: Phase | None = None
        self._lock = threading.Lock()
        # Kept, so that `is` recognises it: each attribute access makes a new bound method.
        self._handler = self._raise_the_failure
        assert REPORT_SIGNAL is not None  # why_it_cannot_watch() said so
        self._previous = signal.signal(REPORT_SIGNAL, self._handler)
        # One thread watches every phase in turn (None: the session is over). One for the whole
        # session, so that a test that checks that it leaves no thread behind finds the same
        # threads before and after it.
        self._phases: queue.SimpleQueue[Phase | None] = queue.SimpleQueue()
        self._watcher = threading.Thread(
            target=self._watch_each, name="deadlock-watch", daemon=True
        )
        # An xdist worker's stderr is the terminal's too: its exit note would land mid-line.
        self._say_at_exit = not hasattr(config, "workerinput")

    def pytest_sessionstart(self) -> None:
        self._watcher.start()
        # Every thread alive now is the runner's: xdist's (execnet's), other plugins', this one.
        self._threads.the_runners_are_alive_now()

    def pytest_sessionfinish(self) -> None:
        self._phases.put(None)
        self._watcher.join()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Generator[None, object, object]:
        return (yield from self._watch())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, object, object]:
        return (yield from self._watch())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, object, object]:
        try:
            return (yield from self._watch())
        finally:
            # From the next test on, the threads it left asleep are none of that test's.
            self._threads.the_test_is_over()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        assert REPORT_SIGNAL is not None
        signal.signal(REPORT_SIGNAL, self._previous)
        # Registered as late as possible, so that it runs first at exit: before concurrent.futures
        # joins its workers (threading's exit callbacks run last registered, first called).
        watch_at_exit_once(self._say_at_exit)

    def _watch(self) -> Generator[None, object, object]:
        """The test's thread, around one phase: the watcher watches while it runs."""
        if threading.current_thread() is not self._main:
            # No signal handler can run in this thread; the test runs unwatched, as without the
            # plugin (pytest-timeout still backs it).
            return (yield)
        phase = Phase()
        self._threads.a_phase_starts()
        self._phase = phase
        self._phases.put(phase)
        try:
            outcome = yield
        finally:
            with self._lock:
                phase.over = True
                watchdog = phase.watchdog
            if watchdog is not None:
                watchdog.stop()  # the watcher leaves it within a sample, for the next phase
            self._phase = None
        if phase.raised:
            # The test caught the failure (`except BaseException`) and went on: it still failed.
            pytest.fail("\n".join(phase.failures), pytrace=False)
        return outcome

    def _watch_each(self) -> None:
        """The watcher's thread: each phase in turn, until the session is over."""
        while (phase := self._phases.get()) is not None:
            try:
                self._watch_until_over(phase)
            except Exception:
                # A bug in the watchdog: say so, and go on watching the phases that follow.
                print("--deadlock: watching a test failed:", file=sys.__stderr__)
                traceback.print_exc(file=sys.__stderr__)

    def _watch_until_over(self, phase: Phase) -> None:
        # Not only the first deadlock: a test can deadlock again while it unwinds from the
        # failure. Stage 3's pool does: it takes the failure for a Ctrl-C, and waits for its
        # running workers, stuck for good, before it lets it through. Raised again, the failure
        # gets through, as a second Ctrl-C would.
        while not phase.over:
            watchdog = Watchdog(
                functools.partial(self._deadlocked, phase),
                watches=self._threads.watches,
                ignore_handler=self._not_a_way_out,
            )
            with self._lock:
                if phase.over:
                    return  # over while this watchdog was made: the test's thread stops no other
                phase.watchdog = watchdog
            watchdog.run()  # until the phase is over (stop()) or a report

    def _deadlocked(self, phase: Phase, report: DeadlockReport) -> None:
        """The watchdog's reaction, in the watcher's thread: hand the report to the test's."""
        with self._lock:
            if phase.over:
                return  # the test's thread woke after all (pytest-timeout's signal came first)
            # What the test leaves behind, seen now, while nothing can move: the report's
            # threads. Under the lock, so that none is noted after the test is over.
            stuck = self._threads.left_asleep(report.idents)
            again = "It deadlocked again, unwinding from the failure above:\n\n"
            phase.failures.append((again if phase.failures else "") + failure_text(report, stuck))
        assert REPORT_SIGNAL is not None
        signal.pthread_kill(self._main.ident or 0, REPORT_SIGNAL)

    def _raise_the_failure(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler, in the test's (main) thread, in the wait it deadlocked in."""
        phase = self._phase
        if phase is None or phase.over or phase.raised >= len(phase.failures):
            return  # late: the phase it was meant for has ended
        phase.raised = len(phase.failures)
        # pytest shows an earlier failure that this one interrupts above it, as its context.
        pytest.fail(phase.failures[-1], pytrace=False)

    def _not_a_way_out(self, signum: int, handler: object) -> bool:
        """Handlers that cannot end a deadlock: this plugin's own, and pytest-timeout's.

        pytest-timeout's SIGALRM handler fails the test when its time is up: the very timeout
        that --deadlock makes unnecessary. A handler or timer the test arms itself stays a way
        out (the test's handler replaces pytest-timeout's for as long as it is set).
        """
        if handler is self._handler:
            return True
        return signum == signal.SIGALRM and getattr(handler, "__module__", None) == "pytest_timeout"


def failure_text(report: DeadlockReport, stuck: list[str]) -> str:
    """The report, and which threads stay behind."""
    text = report.format()
    if stuck:
        names = ", ".join(stuck)
        text += (
            f"\n({names} stay asleep: Python cannot stop a thread. Later tests leave them out, "
            "and the run will not wait for them at exit.)\n"
        )
    return text


# --- At the interpreter's exit --------------------------------------------------------------------


class LeftAsleep(Exception):
    """Raised in the main thread while it waits at exit for threads that wait for ever."""


_watching_at_exit: list[bool] = []  # one exit per process, so one callback, however many sessions


def watch_at_exit_once(say_it: bool) -> None:
    if not _watching_at_exit:
        _watching_at_exit.append(True)
        # concurrent.futures registers its exit callback the same way (Lib/concurrent/futures/
        # thread.py). Each runs in threading._shutdown(), before it joins the non-daemon threads.
        threading._register_atexit(ExitWatch(say_it))  # type: ignore[attr-defined]


class ExitWatch:
    """If non-daemon threads remain at exit, stop waiting for them once every thread is asleep.

    The interpreter waits at exit for every non-daemon thread; a deadlocked test's threads never
    end. A watchdog then sees the main thread parked in that wait, with every other thread asleep,
    and interrupts the wait with a signal, as a Ctrl-C would. The interpreter hands the exception
    to sys.unraisablehook (which here says it in one line, or not at all) and carries on with its
    exit: pytest's exit status, the atexit callbacks. (CPython: Py_FinalizeEx reports an exception
    from threading._shutdown() as unraisable; on 3.13 the C loop that joins does the same.)
    """

    def __init__(self, say_it: bool) -> None:
        self._say_it = say_it
        self._raised = False
        self._previous_hook = sys.unraisablehook

    def __call__(self) -> None:
        main = threading.current_thread()
        if not any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate()):
            return
        assert REPORT_SIGNAL is not None
        signal.signal(REPORT_SIGNAL, self._interrupt)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        Watchdog(self._stop_waiting, ignore_handler=self._not_a_way_out).start()

    def _stop_waiting(self, report: DeadlockReport) -> None:
        main = threading.main_thread()
        if self._say_it:
            # The non-daemon threads: the only ones the exit would wait for.
            threads = {thread.ident: thread for thread in threading.enumerate()}
            left = [threads.get(ident) for ident in report.idents]
            names = ", ".join(t.name for t in left if t and not t.daemon and t is not main)
            sys.stderr.write(
                f"--deadlock: not waiting at exit for threads asleep for good: {names}\n"
            )
            sys.stderr.flush()
        assert REPORT_SIGNAL is not None
        signal.pthread_kill(main.ident or 0, REPORT_SIGNAL)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if not self._raised:
            self._raised = True
            raise LeftAsleep

    def _unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not LeftAsleep:
            self._previous_hook(unraisable)

    def _not_a_way_out(self, signum: int, handler: object) -> bool:
        return getattr(handler, "__func__", None) is ExitWatch._interrupt
