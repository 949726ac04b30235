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
import signal
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass
from types import FrameType

import pytest

from deadlock_watch.report import DeadlockReport
from deadlock_watch.whose_threads import ThreadsOfTheTest
from deadlock_watch.watchdog import Watchdog

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
    config.pluginmanager.register(DeadlockWatch(), "deadlock-watch")


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
    """One test's setup, call or teardown, as the plugin watches it."""

    item: pytest.Item
    when: str
    # The failure's text, set once by the watchdog's thread (under DeadlockWatch._lock), only
    # while the phase is not over.
    failure: str | None = None
    over: bool = False
    # Whether the handler has raised the failure in the test's thread (it does so once).
    raised: bool = False


class DeadlockWatch:
    """The plugin, registered only when --deadlock is on."""

    def __init__(self) -> None:
        self._threads = ThreadsOfTheTest()
        self._main = threading.main_thread()
        # The phase being watched, or None between phases. The signal handler reads it in the main
        # thread; the watchdog's thread reads and marks it under the lock.
        self._phase: Phase | None = None
        self._lock = threading.Lock()
        self._tests_left_threads: list[str] = []
        # Kept, so that `is` recognises it: each attribute access makes a new bound method.
        self._handler = self._raise_the_failure
        assert REPORT_SIGNAL is not None  # why_it_cannot_watch() said so
        self._previous = signal.signal(REPORT_SIGNAL, self._handler)

    def pytest_sessionstart(self) -> None:
        # Every thread alive now is the runner's: xdist's (execnet's), other plugins'.
        self._threads.the_runners_are_alive_now()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._watch(item, "setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._watch(item, "call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        try:
            return (yield from self._watch(item, "teardown"))
        finally:
            # From the next test on, the threads it left asleep are none of that test's.
            self._tests_left_threads += self._threads.the_test_is_over()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self._tests_left_threads:
            names = ", ".join(self._tests_left_threads)
            terminalreporter.write_line(
                f"--deadlock: deadlocked tests left {len(self._tests_left_threads)} threads "
                f"asleep for good ({names}); the run does not wait for them at exit"
            )

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        assert REPORT_SIGNAL is not None
        signal.signal(REPORT_SIGNAL, self._previous)
        # Registered as late as possible, so that it runs first at exit: before concurrent.futures
        # joins its workers (threading's exit callbacks run last registered, first called).
        watch_at_exit_once()

    def _watch(self, item: pytest.Item, when: str) -> Generator[None, object, object]:
        if threading.current_thread() is not self._main:
            # No signal handler can run in this thread; the test runs unwatched, as without the
            # plugin (pytest-timeout still backs it).
            return (yield)
        phase = Phase(item, when)
        self._threads.a_phase_starts()
        watchdog = Watchdog(
            functools.partial(self._deadlocked, phase),
            watches=self._threads.watches,
            ignore_handler=self._not_a_way_out,
        )
        self._phase = phase
        watchdog.start()
        try:
            outcome = yield
        finally:
            with self._lock:
                phase.over = True
            watchdog.stop()
            self._phase = None
        if phase.raised:
            # The test caught the failure (`except BaseException`) and went on: it still failed.
            pytest.fail(phase.failure or "", pytrace=False)
        return outcome

    def _deadlocked(self, phase: Phase, report: DeadlockReport) -> None:
        """The watchdog's reaction, in its thread: hand the report to the test's thread."""
        # What the test leaves behind, seen now, while nothing can move: the report's threads.
        stuck = self._threads.left_asleep(report.idents)
        with self._lock:
            if phase.over:
                return  # the test's thread woke after all (pytest-timeout's signal came first)
            phase.failure = failure_text(report, stuck)
        assert REPORT_SIGNAL is not None
        signal.pthread_kill(self._main.ident or 0, REPORT_SIGNAL)

    def _raise_the_failure(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler, in the test's (main) thread, in the wait it deadlocked in."""
        phase = self._phase
        if phase is None or phase.over or phase.failure is None or phase.raised:
            return  # late: the phase it was meant for has ended
        phase.raised = True
        pytest.fail(phase.failure, pytrace=False)

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
            f"\n({names}: asleep for good, as shown; Python cannot stop a thread. Later tests "
            "do not count them, and the run does not wait for them at exit.)\n"
        )
    return text


# --- At the interpreter's exit --------------------------------------------------------------------


class LeftAsleep(Exception):
    """Raised in the main thread while it waits at exit for threads that wait for ever."""


_watching_at_exit: list[bool] = []  # one exit per process, so one callback, however many sessions


def watch_at_exit_once() -> None:
    if not _watching_at_exit:
        _watching_at_exit.append(True)
        # concurrent.futures registers its exit callback the same way (Lib/concurrent/futures/
        # thread.py). Each runs in threading._shutdown(), before it joins the non-daemon threads.
        threading._register_atexit(watch_the_exit)  # type: ignore[attr-defined]


def watch_the_exit() -> None:
    """If non-daemon threads remain, end the wait for them once every thread is asleep.

    The interpreter waits at exit for every non-daemon thread; a deadlocked test's threads never
    end. A watchdog then sees the main thread parked in that wait, with every other thread asleep,
    and interrupts the wait with a signal, as Ctrl-C would: the interpreter prints the exception
    (through sys.unraisablehook, which says it in one line here) and carries on with its exit,
    with pytest's exit status, running the atexit callbacks. (CPython: Py_FinalizeEx calls
    threading._shutdown() and reports an exception from it as unraisable; on 3.13 the C loop
    that joins the threads does the same.)
    """
    main = threading.current_thread()
    if not any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate()):
        return
    assert REPORT_SIGNAL is not None
    raised: list[bool] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not raised:
            raised.append(True)
            raise LeftAsleep

    signal.signal(REPORT_SIGNAL, interrupt)
    previous_hook = sys.unraisablehook

    def say_it(unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not LeftAsleep:
            previous_hook(unraisable)

    def stop_waiting(report: DeadlockReport) -> None:
        names = ", ".join(t.name for t in report.threads if t.name != main.name)
        sys.stderr.write(f"--deadlock: not waiting at exit for threads asleep for good: {names}\n")
        sys.stderr.flush()
        signal.pthread_kill(main.ident or 0, REPORT_SIGNAL)

    sys.unraisablehook = say_it
    Watchdog(stop_waiting, ignore_handler=lambda signum, handler: handler is interrupt).start()
