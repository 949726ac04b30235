"""Looking at other threads from Python: their frames, the bytecode they stopped at, their CPU.

The raw readings the watchdog's rules are built on (docs/watchdog.md, "Limits"):
`current_frames()`, the functions of the standard library a thread can sleep in, the offsets of
the calls a thread shows while it waits in C, and Linux's count of a thread's voluntary context
switches.
"""

from __future__ import annotations

import dis
import functools
import gc
import selectors
import sys
import threading
from dataclasses import dataclass
from types import CodeType, FrameType


def current_frames() -> dict[int, FrameType]:
    """sys._current_frames(), on 3.11 with the cyclic garbage collector held off while it runs.

    On CPython 3.11, sys._current_frames() holds the runtime's thread-list lock while it makes
    the dict it returns; an allocation there can start a collection, and freeing a
    threading.local in it takes that same lock (local_dealloc): the calling thread then waits on
    itself for ever (CPython gh-106883, fixed in 3.12). Seen here: a test's main thread stuck in
    _PyThread_CurrentFrames -> gc_collect_main -> PyThread_acquire_lock_timed, where no timeout
    could reach it. With the collector disabled, no collection starts there.

    Only on 3.11, because the cure has a cost: the collector's on/off flag is one for the whole
    process, and Python code that turns it off and back on in another thread at the same moment
    (timeit does, around its timing) can interleave with this: it may find the collector off,
    and leave it off for good, as this turns it back on before it ends; or turn it on while this
    runs. A Ctrl-C that lands in the `finally` below can leave it off too. 3.12 and later need
    none of it.
    """
    if sys.version_info >= (3, 12):
        return sys._current_frames()
    # One caller of ours at a time, so that ours at least never interleave as above. Re-entrant:
    # a signal handler may look while the main thread it interrupted holds the lock.
    with _LOOKING:
        enabled = gc.isenabled()
        try:
            gc.disable()
            return sys._current_frames()
        finally:
            if enabled:
                gc.enable()


_LOOKING = threading.RLock()


def code_of(owner: object, name: str) -> CodeType | None:
    """The code of owner.name, or None where this Python has no such function."""
    return getattr(getattr(owner, name, None), "__code__", None)


def outward(frame: FrameType | None) -> list[FrameType]:
    """`frame` and its callers, innermost first."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


# --- Reading the bytecode at a frame's f_lasti ---------------------------------------------------


@dataclass(frozen=True)
class MethodCall:
    """`receiver.method(*positional, **keywords)`: a local variable's method, constant arguments."""

    receiver: str
    method: str
    positional: tuple[object, ...]
    keywords: tuple[tuple[str, object], ...]


_LOAD_LOCAL = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF"})
_LOAD_METHOD = frozenset({"LOAD_METHOD", "LOAD_ATTR"})
_CALL = frozenset({"CALL", "CALL_KW"})


@functools.lru_cache(maxsize=512)
def method_calls(code: CodeType) -> dict[int, MethodCall]:
    """Every `local.method(constants)` call in `code`, by the offsets a thread inside it shows.

    A thread stopped in a C function shows f_lasti at the instruction that called it: CALL, or on
    3.11 the PRECALL before it, which makes the call itself once specialised for a C method. The
    shapes read here:
    3.11 LOAD_FAST, LOAD_METHOD, LOAD_CONST..., [KW_NAMES], PRECALL, CALL;
    3.12 LOAD_FAST, LOAD_ATTR, LOAD_CONST..., [KW_NAMES], CALL;
    3.13 LOAD_FAST, LOAD_ATTR, LOAD_CONST..., [LOAD_CONST names, CALL_KW | CALL].
    Any other shape is left out, so such a call is never taken for a wait.
    """
    instructions = list(dis.get_instructions(code))
    calls = {}
    for index, call in enumerate(instructions):
        if call.opname not in _CALL or call.arg is None:
            continue
        before = index - 1
        if instructions[before].opname == "PRECALL":
            before -= 1
        names: tuple[str, ...] = ()
        if call.opname == "CALL_KW":
            if instructions[before].opname != "LOAD_CONST":
                continue
            names = instructions[before].argval
            before -= 1
        elif instructions[before].opname == "KW_NAMES":
            names = code.co_consts[instructions[before].arg or 0]
            before -= 1
        first_argument = before - call.arg + 1
        if first_argument < 2:
            continue
        arguments = instructions[first_argument : before + 1]
        method, receiver = instructions[first_argument - 1], instructions[first_argument - 2]
        if (
            any(argument.opname != "LOAD_CONST" for argument in arguments)
            or method.opname not in _LOAD_METHOD
            or receiver.opname not in _LOAD_LOCAL
            # A jump landing after the receiver's load could put something else on the stack.
            or any(i.is_jump_target for i in instructions[first_argument - 1 : index + 1])
        ):
            continue
        values = tuple(argument.argval for argument in arguments)
        split = len(values) - len(names)
        method_call = MethodCall(
            receiver.argval,
            method.argval,
            values[:split],
            tuple(zip(names, values[split:], strict=True)),
        )
        for offset in _offsets_of_call(instructions, index):
            calls[offset] = method_call
    return calls


def _offsets_of_call(instructions: list[dis.Instruction], index: int) -> tuple[int, ...]:
    """Where f_lasti stands while the CALL at `index` runs: there, or at its PRECALL (3.11)."""
    call = instructions[index]
    if index > 0 and instructions[index - 1].opname == "PRECALL":
        return (instructions[index - 1].offset, call.offset)
    return (call.offset,)


def calls_of_global(code: CodeType, name: str) -> frozenset[int]:
    """The offsets of the CALLs that call the global `name` with no arguments, like `f()`."""
    offsets: list[int] = []
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions[:-2]):
        if instruction.opname == "LOAD_GLOBAL" and instruction.argval == name:
            call = index + 2 if instructions[index + 1].opname == "PRECALL" else index + 1
            if instructions[call].opname == "CALL" and instructions[call].arg == 0:
                offsets += _offsets_of_call(instructions, call)
    return frozenset(offsets)


def _system_calls_in_select() -> dict[CodeType, frozenset[int]]:
    """For each selector's select(): the offsets of the CALL that blocks (poll, control, select)."""
    blocking = {"poll", "control", "_select"}
    calls = {}
    for selector in vars(selectors).values():
        if not isinstance(selector, type):
            continue
        code = getattr(vars(selector).get("select"), "__code__", None)
        if code is None:
            continue
        instructions = list(dis.get_instructions(code))
        offsets: list[int] = []
        for index, instruction in enumerate(instructions):
            if instruction.opname in _LOAD_METHOD and instruction.argval in blocking:
                # The first call after the method's load is its call: the arguments call nothing.
                call = next(
                    i
                    for i in range(index + 1, len(instructions))
                    if instructions[i].opname in _CALL
                )
                offsets += _offsets_of_call(instructions, call)
        calls[code] = frozenset(offsets)
    return calls


SELECT_CALLS = _system_calls_in_select()


# --- Context switches (Linux) --------------------------------------------------------------------


def voluntary_context_switches(native_id: int | None) -> int | None:
    """How often the thread has given up the CPU of its own accord (Linux only, else None)."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
