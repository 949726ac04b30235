"""Stage 4's Task: one call to make and, once a pool has run it, how it went.

Stage 3's Task (robust/pool.py) with two additions a real workload asks for: a deadline
(`timeout`) and a name that says which input a message is about. It is the record every part of
stage 4 shares: the Pool (beyond/pool.py) is given Tasks and hands them back, the scheduler
(beyond/scheduler.py) takes and starts them, and each backend (beyond/backends/) runs them with
`Task.run`, which keeps the outcome on the task wherever fn ran.

A task runs at most once, so a Pool claims each task it is given (`claim_all` for a list, as the
Pool is built; `claim` for each task a worker takes from a generator), and refuses a task that
another Pool, or the same one, holds already.
"""

from __future__ import annotations

import functools
import reprlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, TypeVarTuple, overload

from beyond.cancellation import Cancelled, check_seconds

Result = TypeVar("Result")
# fn's positional arguments, given to Task after fn: checked against fn's signature by mypy.
Arguments = TypeVarTuple("Arguments")

# Guards Task._owner while a Pool claims a list's tasks, so that two pools built at the same moment
# from the same tasks cannot both claim one, and a refused Pool undoes its claims as a whole. Held
# once per Pool for a list; never while a task runs. A generator's tasks are claimed one by one,
# without it (see claim()).
_claiming = threading.Lock()


class Task(Generic[Result]):
    """One call to make, `fn(*args)`. After the pool has run it, `err` or `result` says how it
    went.

    A task runs at most once: it belongs to the first Pool it is given to, and a second Pool (or the
    same task listed twice in one Pool) is refused before any task runs. Exactly one of `err` and
    `result` is set once it has run: `err` if fn raised, else `result` (which may be None).

    `timeout`: seconds the task may run. Once they have passed, checkpoint() in the task raises
    TimeoutError (which counts as the task's failure); a task that does not check runs on and is
    reported overdue.

    `args`: fn's positional arguments: `Task(fetch, url)` calls `fetch(url)`, as
    `Task(partial(fetch, url))` does, without a partial object per task (with tens of thousands of
    tasks alive, one object fewer each is less for the garbage collector to walk).

    `name`: what every message, warning and repr calls the task (`task.name`). By default, fn's
    name with its arguments (given here or in a functools.partial), shortened: `Task(fetch, url)`
    is `fetch('https://example.com/a')`, so that an error says which input failed.
    """

    # Slots: the pool touches these once per task, and slot access is the cheapest there is.
    __slots__ = (
        "_given_name",
        "_owner",
        "args",
        "deadline",
        "err",
        "finished",
        "fn",
        "result",
        "timeout",
    )

    # A coroutine function (backend="asyncio") makes a Task of what it returns once awaited.
    @overload
    def __init__(
        self: Task[Result],
        fn: Callable[[*Arguments], Awaitable[Result]],
        *args: *Arguments,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Task[Result],
        fn: Callable[[*Arguments], Result],
        *args: *Arguments,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        fn: Callable[[*Arguments], Any],
        *args: *Arguments,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Task needs a callable, got {type(fn).__name__}")
        if timeout is not None:
            check_seconds("timeout", timeout)
        if name is not None and type(name) is not str:
            # Exactly str: a subclass's own __str__ or __repr__ would run in every message.
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        # None: made from fn when a message first needs it (see `name`), not for every task.
        self._given_name = name
        self.fn: Callable[..., Any] = fn
        self.args: tuple[Any, ...] = args
        self.timeout = timeout
        # When the task must be done by, on the time.monotonic() clock: set by its worker as it
        # starts the task, and only for a task with a timeout.
        self.deadline: float | None = None
        # What fn raised (traceback included), or None. Go: `Err error`.
        self.err: BaseException | None = None
        # What fn returned; meaningful only when err is None.
        self.result: Result | None = None
        # False for a task that never ran (the run was stopped before its turn).
        self.finished = False
        # The mark of the Pool that holds this task, once one does (see Pool.__init__).
        self._owner: object | None = None

    @property
    def name(self) -> str:
        """The name given to Task(), else one made from fn (see the class docstring): printable,
        at most NAME_LIMIT characters, and never an exception, whatever fn's arguments do."""
        name = self._given_name
        if name is None:
            # Made once, when first needed: every message about the task then says the same, even
            # if an argument changes meanwhile (an Event's repr says whether it is set).
            # Arguments given to Task show as a partial's do (and a partial's are joined to them).
            name = self._given_name = _name_of(self.bound())
        return name

    def bound(self) -> Callable[[], Any]:
        """fn with its args bound (fn itself if there are none): for a backend that sends the
        call elsewhere in one piece (a child process, a cluster)."""
        return functools.partial(self.fn, *self.args) if self.args else self.fn

    def run(self, call: Callable[[], Result] | None = None) -> bool:
        """Call fn(*args) once and keep its outcome. The pool's workers call this; a task runs once.

        `call`: how to call fn, if not here and now: a backend that runs fn elsewhere (a child
        process, a cluster) passes a function that does so and returns fn's result or raises its
        error, and the outcome is kept on the task all the same.

        Returns True if fn failed in a way that counts toward max_errors: it raised an Exception
        other than Cancelled. The worker records that before it does anything else (see work() in
        beyond/backends/worker_threads.py), so
        it returns straight from the except clause: between fn's exception reaching this frame
        and that record, no call, loop or new frame gives another thread a turn.
        """
        if self.finished:
            raise RuntimeError(f"{self!r} has already run; a task runs at most once")
        try:
            self.result = self.fn(*self.args) if call is None else call()
        except Cancelled as cancelled:
            # The pool's stop, seen at a checkpoint: the task's outcome, not its failure.
            self.err = cancelled
        except Exception as error:
            # Go: `t.Err = t.f()`. The error stays with its task, where it cannot block anyone.
            self.err = error
            return True
        except BaseException as panic:
            # KeyboardInterrupt, SystemExit...: Go's panic. Record it, and let the worker stop
            # the pool (see Pool.run).
            self.err = panic
            raise
        finally:
            self.finished = True
        return False

    def __repr__(self) -> str:
        # Never raises, whatever fn and err are: a repr is what a failing program prints.
        name = quoted_name(self)
        if not self.finished:
            state = "not run"
        elif self.err is None:
            state = "ok"
        else:
            # `is None`, not truthiness: an exception may define __bool__, and it still failed.
            try:
                state = f"failed: {self.err!r}"
            except KeyboardInterrupt:
                raise
            except BaseException:
                state = f"failed: {type(self.err).__name__}"
        return f"<Task {name} {state}>"


# A name made from fn is at most this long: an argument of a megabyte must not make a message of a
# megabyte. Each argument is shortened on its own first (_SHORT), so that every one shows.
NAME_LIMIT = 120
# How many of a partial's arguments a name shows, and how many nested partials it looks into.
NAME_ARGUMENTS = 4
NAME_DEPTH = 3


class _ShortRepr(reprlib.Repr):
    """reprlib's shortening, which cuts a str before it makes its repr; bytes too. (Any other
    object's repr is made whole and then cut: a megabyte only for a moment.)"""

    def repr_bytes(self, value: bytes, level: int) -> str:
        return self._cut(repr(value[: self.maxstring]), len(value) > self.maxstring)

    def repr_bytearray(self, value: bytearray, level: int) -> str:
        return self._cut(repr(value[: self.maxstring]), len(value) > self.maxstring)

    def _cut(self, text: str, cut: bool) -> str:
        return text + "..." if cut else text


_SHORT = _ShortRepr()
_SHORT.maxstring = _SHORT.maxother = 40
_SHORT.maxlong = 20
_SHORT.maxlevel = 2


def _name_of(fn: object, depth: int = 0) -> str:
    """A task's default name: fn's qualified name, and a partial's arguments, each shortened.

    Never raises, whatever fn and the arguments do in their own __repr__ or __getattr__ (see
    _short); a Ctrl-C that lands here is the caller's, and goes on.
    """
    try:
        if isinstance(fn, functools.partial) and depth < NAME_DEPTH:
            shown = [_short(argument) for argument in fn.args[:NAME_ARGUMENTS]]
            room = NAME_ARGUMENTS - len(shown)
            keywords = list(fn.keywords.items())
            shown += [f"{key}={_short(value)}" for key, value in keywords[:room]]
            if len(fn.args) + len(keywords) > len(shown):
                shown.append("...")
            name = f"{_name_of(fn.func, depth + 1)}({', '.join(shown)})"
        else:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            if type(name) is not str:
                name = type(fn).__name__
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = type(fn).__name__
    if not name.isprintable():
        # A repr of its own may hold a newline (a numpy array's does): a message is one line.
        name = name.encode("unicode_escape").decode("ascii")
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 3] + "..."


def _short(value: object) -> str:
    """One argument, shortened. reprlib already puts a placeholder for a repr that raises an
    Exception; this covers one that raises SystemExit or another BaseException."""
    try:
        return _SHORT.repr(value)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return f"<{type(value).__name__}>"


def quoted_name(task: Task[Any]) -> str:
    """A task's name, quoted, for messages: one line whatever it holds; never raises. Every
    message, warning and repr about a task says it this way."""
    name = task.name
    # A made name is printable already (its arguments are reprs): quoted as it is, since repr()
    # would double every backslash in it. A given one may hold anything: repr().
    if name.isprintable():
        if "'" not in name:
            return f"'{name}'"
        if '"' not in name:
            return f'"{name}"'
    return repr(name)


def claim_all(tasks: list[Task[Result]], mark: object) -> None:
    """Make the pool with this mark the owner of every task, or of none: a task runs once."""
    with _claiming:
        for claimed, task in enumerate(tasks):
            if task._owner is not None:
                # Read before the undo below, which clears this very task if it came earlier in
                # the list.
                here = task._owner is mark
                # Undo this pool's claims so far: the Pool is refused as a whole.
                for earlier in tasks[:claimed]:
                    earlier._owner = None
                raise given_twice(task, claimed, here)
            task._owner = mark


def claim(task: Task[Any], mark: object) -> object | None:
    """Make the pool with this mark the owner of `task` unless it has one; return the owner it
    had (None: claimed now).

    Another pool may be claiming the same task in another thread at this moment, and yet no lock:
    between reading _owner and writing it there is no call and no backward jump, the only places
    where CPython switches threads or runs a signal handler (its eval breaker: a function's start,
    a loop's jump back, the return of a call into C), so no other thread runs in between (the
    call of this function is one, before the read). It runs once per task a worker takes from a
    generator: with the global lock that claim_all takes, iterating over a generator cost 1.72
    times a run() over a list in CPU, without it 1.32 (issue 21's measurements).
    tests/test_beyond_streaming.py checks the bytecode.
    """
    owner = task._owner
    if owner is None:
        task._owner = mark
    return owner


def given_twice(task: Task[Any], number: int, here: bool) -> ValueError:
    """The error for a task that already has an owner. `number`: its place in the pool's input;
    `here`: the owner is this pool."""
    where = "twice in this Pool" if here else "to another Pool already"
    return ValueError(
        f"task {number} ({task!r}) was given {where}; a Task runs at most once, so make a new "
        "Task for each run"
    )
