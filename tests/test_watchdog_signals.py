"""Signals and timers are ways out: no report for a program that one of them can wake.

Each case runs as a process of its own, with only default signal handlers until it installs one
(inside pytest, pytest-timeout's SIGALRM handler and timer would hide every deadlock, rightly).
Only the rule for a Ctrl-C handler that a class declares is also looked at in this process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType
from typing import ClassVar

from beyond import Pool
from beyond.backends.event_loop import CtrlC
from deadlock_watch import declared_wait
from deadlock_watch.ways_out import _declared_to_only_interrupt
from tests.conftest import REPO_ROOT
from tests.watchdog_scenarios import assert_healthy_then_reported, every_scenario


def test_a_sigalrm_fed_queue_is_not_reported_until_timer_and_handler_are_gone() -> None:
    # Main waits in queue.get() (untimed) three times; each time an interval timer's SIGALRM
    # handler feeds it. Then main disarms the timer, restores SIG_DFL and hangs for real: the
    # watchdog reads the handlers afresh and reports.
    assert_healthy_then_reported(every_scenario().outcome("sigalrm_feeds_a_queue"))


def test_main_waiting_for_a_sigterm_handler_ends_cleanly_without_a_report() -> None:
    # The graceful-shutdown pattern: main in Event.wait(), set by a SIGTERM handler. A real SIGTERM
    # arrives from another process after 3 s, ten grace periods later.
    outcome = every_scenario().outcome("sigterm_handler_sets_an_event")
    assert (outcome.returncode, outcome.stdout, outcome.stderr) == (0, "stopped by SIGTERM\n", "")


def test_a_worker_waiting_on_main_that_waits_for_a_signal_handler_is_not_reported() -> None:
    outcome = every_scenario().outcome("worker_waits_while_a_signal_handler_can_wake_main")
    assert (outcome.returncode, outcome.stdout, outcome.stderr) == (0, "stopped by SIGUSR1\n", "")


def test_an_armed_alarm_with_the_default_action_is_a_way_out() -> None:
    # The process is deadlocked, but SIGALRM will end it: it does not hang forever.
    outcome = every_scenario().outcome("alarm_ends_a_deadlocked_process")
    assert (outcome.returncode, outcome.stderr) == (-signal.SIGALRM, "")


def test_ignored_signals_and_cpu_time_timers_do_not_hide_a_deadlock() -> None:
    outcome = every_scenario().outcome("deadlock_beside_signals_and_timers_that_cannot_wake_it")
    assert outcome.returncode == 2
    assert set(outcome.blocks()) == {"thread MainThread [event wait]:"}


# --- A Ctrl-C handler that a class declares only interrupts (deadlock_watch/declared.py) --------


class Interrupter:
    """Declares `_on_sigint` a handler that only interrupts; `_on_sigusr1` is a handler too."""

    __deadlock_watch__: ClassVar[dict[str, str]] = {"kind": "ctrl-c", "interrupts": "_on_sigint"}

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def _on_sigusr1(self, signum: int, frame: FrameType | None) -> None:
        pass


def test_only_the_method_a_class_declares_is_a_handler_that_is_no_way_out() -> None:
    interrupter = Interrupter()
    assert declared_wait(Interrupter).interrupts == "_on_sigint"
    assert _declared_to_only_interrupt(interrupter._on_sigint)
    assert not _declared_to_only_interrupt(interrupter._on_sigusr1)
    assert not _declared_to_only_interrupt(lambda signum, frame: None)
    # Stage 4's asyncio pool, whose handler stops the run as Ctrl-C would.
    ctrl_c = CtrlC(Pool([], 1)._scheduler)
    assert _declared_to_only_interrupt(ctrl_c._on_sigint)


def test_a_declared_handler_is_no_way_out_only_for_sigint() -> None:
    # In a process of its own: inside pytest, pytest-timeout's SIGALRM handler is a way out.
    program = (
        "import signal\n"
        "from deadlock_watch.ways_out import signal_or_timer_can_wake\n"
        "from tests.test_watchdog_signals import Interrupter\n"
        "interrupter = Interrupter()\n"
        "signal.signal(signal.SIGINT, interrupter._on_sigint)\n"
        "print(signal_or_timer_can_wake())\n"
        "signal.signal(signal.SIGTERM, interrupter._on_sigint)\n"
        "print(signal_or_timer_can_wake())\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "signal.signal(signal.SIGINT, interrupter._on_sigusr1)\n"
        "print(signal_or_timer_can_wake())\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (completed.stdout, completed.stderr) == ("False\nTrue\nTrue\n", "")
