"""The hook through which a class says that a thread inside its methods waits on it (or that a
method it installs as a Ctrl-C handler is no way out of a wait).

A class declares it with one plain class attribute, so that the code the watchdog watches never
imports the watchdog (stage 2's WaitGroup and stage 3's pool use the standard library only):

    __deadlock_watch__: ClassVar[dict[str, str]] = {"kind": "waitgroup"}

names the wait in the report ("waitgroup wait: wait_group"); the thread is still proven asleep by
the wait beneath (a Condition.wait with no timeout). A *polling* wait, one that wakes now and then
only to let a Ctrl-C in, also names its method and two int attributes:

    {"kind": "pool", "polls": "_sleep_until", "changes": "_changes", "looked_at": "_looked_at"}

The contract: every change the waiting thread waits for adds one to `changes` (which never goes
down); each time the thread has looked and found nothing to do, it sets `looked_at` to the
`changes` it read before it looked; and the method named in `polls` (with the functions it calls)
only looks and sleeps for a bounded time. Then `looked_at == changes` proves the thread asleep:
until another thread changes something, every look finds nothing to do. docs/watchdog.md says
more, and how the pools of stages 3 and 4 use it.

Why a dunder attribute and not a registration call: a class declares itself without importing
anything, as numpy's `__array_interface__` and dask's `__dask_graph__` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

DECLARATION = "__deadlock_watch__"


class WaitDeclaration(TypedDict):
    """The shape of a `__deadlock_watch__` declaration, for code that may import the watchdog."""

    kind: str
    polls: NotRequired[str]
    changes: NotRequired[str]
    looked_at: NotRequired[str]
    interrupts: NotRequired[str]


@dataclass(frozen=True)
class Declared:
    """A declaration, checked."""

    kind: str
    # The polling method's name, and the names of its two counters; None for a plain wait.
    polls: str | None = None
    changes: str = ""
    looked_at: str = ""
    # The method that is a SIGINT handler doing only the default's job; None if none.
    interrupts: str | None = None


def declared_wait(cls: type) -> Declared:
    """`cls`'s declaration, checked; ValueError saying what is wrong if it cannot be read."""
    declaration = getattr(cls, DECLARATION, None)
    if not isinstance(declaration, dict):
        raise ValueError(f"{cls.__name__}.{DECLARATION} must be a dict, got {declaration!r}")
    keys = set(declaration)
    if not all(isinstance(value, str) and value for value in declaration.values()):
        raise ValueError(f"{cls.__name__}.{DECLARATION}: every value must be a non-empty str")
    if keys == {"kind"}:
        return Declared(declaration["kind"])
    if keys == {"kind", "polls", "changes", "looked_at"}:
        return Declared(**declaration)
    if keys == {"kind", "interrupts"}:
        return Declared(declaration["kind"], interrupts=declaration["interrupts"])
    raise ValueError(
        f"{cls.__name__}.{DECLARATION} has keys {sorted(keys)}: want 'kind', and for a polling "
        "wait also 'polls', 'changes' and 'looked_at', or for a Ctrl-C handler 'interrupts'"
    )


def declaration_of(owner: object) -> Declared | None:
    """The wait that `owner`'s class declares; None if none, or one that cannot be read (the
    watchdog then reads the thread as it would without it: it never guesses)."""
    if getattr(type(owner), DECLARATION, None) is None:
        return None
    try:
        return declared_wait(type(owner))
    except ValueError:
        return None
