"""Signals and timers: ways out of a wait that no thread's stack shows.

A process can be woken from outside by a signal it handles, and an armed real-time timer fires:
Go does not report a program that waits for a signal it asked for, and neither does the watchdog.
The handlers are read afresh at every sample. docs/watchdog.md lists which handlers count.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys
from collections.abc import Callable

from deadlock_watch.declared import declaration_of

# Every signal a handler can be set for, read once (the set of signals does not change).
_SIGNALS = tuple(sorted(signal.valid_signals()))
# signal.getsignal() without the wrapper that turns 0 and 1 into SIG_DFL and SIG_IGN: fifteen times
# faster, and it runs for every signal at every sample in which every thread is asleep.
_getsignal: Callable[[int], object] = getattr(
    importlib.import_module("_signal"), "getsignal", signal.getsignal
)


# Handlers that are no way out, though the rules below would count them: ignore(signum, handler).
IgnoreHandler = Callable[[int, object], bool]


def signal_or_timer_can_wake(ignore: IgnoreHandler | None = None) -> bool:
    """True while a signal handler of the program's own or an armed real-time timer can wake it.

    A handler for which `ignore(signum, handler)` is true is none of the program's own, and
    neither is a timer whose SIGALRM it handles (the pytest plugin ignores pytest-timeout's).
    """
    ignored = ignore or _nothing
    # An armed real-time timer raises SIGALRM, which either a handler catches or ends the process
    # (the default action); only an ignored SIGALRM makes it no way out.
    timer_armed = hasattr(signal, "getitimer") and signal.getitimer(signal.ITIMER_REAL)[0] > 0
    if timer_armed:
        alarm = signal.getsignal(signal.SIGALRM)
        if alarm is not signal.SIG_IGN and not ignored(signal.SIGALRM, alarm):
            return True
    for signum in _SIGNALS:
        handler = _getsignal(signum)
        # None: set from C (C code cannot run Python, and a wake-up it writes to a file must be
        # read by a thread, which is then awake in I/O); an int: SIG_DFL or SIG_IGN.
        if handler is None or isinstance(handler, int) or handler is signal.default_int_handler:
            continue
        if signum == signal.SIGINT and _declared_to_only_interrupt(handler):
            continue
        if not _is_asyncio_sigint(handler) and not ignored(signum, handler):
            return True
    return False


def _nothing(signum: int, handler: object) -> bool:
    return False


def _declared_to_only_interrupt(handler: object) -> bool:
    """A bound method whose class declares it a Ctrl-C handler that only interrupts the program,
    as the default one does (declared.py): stage 4's asyncio pool, which turns Ctrl-C into a stop
    of the run. The method's name must be the one declared: any other method stays a way out."""
    owner = getattr(handler, "__self__", None)
    declared = declaration_of(owner) if owner is not None else None
    if declared is None or declared.interrupts is None:
        return False
    return getattr(getattr(handler, "__func__", None), "__name__", None) == declared.interrupts


def _is_asyncio_sigint(handler: object) -> bool:
    """asyncio.run's Ctrl-C handler (3.11+): partial(runner._on_sigint, main_task=...).

    It does the default handler's job, so it is no more a way out than the default is.
    """
    runners = sys.modules.get("asyncio.runners")
    on_sigint = getattr(getattr(runners, "Runner", None), "_on_sigint", None)
    if on_sigint is None or not isinstance(handler, functools.partial):
        return False
    return getattr(handler.func, "__func__", None) is on_sigint
