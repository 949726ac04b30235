"""How every process-based contender starts its processes: one start method for all of them.

Stage 4 on processes never forks (beyond/backends/child_processes.py says why): it starts its
children by forkserver, where the platform has it, else by spawn. The peers, `multiprocessing.Pool`
and `ProcessPoolExecutor`, would fork by default on Linux before Python 3.14, and the programs that
measure them run threads (a pool's own handler threads, the benchmark's, the failure matrix's): a
child forked while another thread holds a lock (malloc's, the import lock) keeps that lock taken
for ever, and CPython 3.12 and later warn about it ("use of fork() may lead to deadlocks in the
child"). So every process-based contender, ours and the peers', starts its processes the same way,
chosen here, and each figure's metadata and caption say which: a pool's start is part of its timed
run, and a forkserver start costs more than a fork, so a peer that forked would be measured doing
something our pool refuses to do.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext

# The same choice as beyond.backends.child_processes.Processes makes by default (a test checks that
# they agree): forked from a single-threaded server process, safe whatever threads the caller runs.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def preload_into_the_forkserver() -> None:
    """Have multiprocessing's forkserver import this program's modules once, before it forks.

    A forkserver child re-imports the parent's main module, and with it everything that module
    imports: for `python -m plots`, matplotlib included, in every worker process. CPython 3.11 to
    3.13 never preload __main__ into the server themselves (the server is handed 'main_path', a
    key the preparation data does not have). set_forkserver_preload() is multiprocessing's
    documented cure; it acts only before the server starts, and does nothing after. It is given
    the project's modules this program has imported so far, less the main module itself: a child
    runs that again anyway, as __mp_main__, and runpy warns when it finds it already imported.
    """
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    main = spec.name if spec is not None else "__main__"
    ours = ("beyond", "plots", "robust", "naive", "errors_channel")
    multiprocessing.set_forkserver_preload(
        sorted(name for name in list(sys.modules) if name.split(".")[0] in ours and name != main)
    )


def process_context() -> BaseContext:
    """The multiprocessing context a peer's pool is made from: `context.Pool(...)`, or
    `ProcessPoolExecutor(mp_context=context)`."""
    preload_into_the_forkserver()
    return multiprocessing.get_context(START_METHOD)


def start_the_forkserver() -> None:
    """Start multiprocessing's forkserver now, with this program's modules preloaded, rather than
    in whichever timed run or timed-out run first needs it: like the interpreter, it is started
    once per program (hundreds of milliseconds, seconds on a loaded machine), and every process
    pool in the program shares it. Nothing to do for spawn."""
    if START_METHOD != "forkserver":
        return
    preload_into_the_forkserver()
    # ensure_running() only launches the server, and the first process asked of it then waits
    # while it imports the preloaded modules (0.4 to 0.6 s of a Pool(3)'s start here, at a load
    # average of 13). A process that does nothing, started and joined now, waits instead.
    ready = multiprocessing.get_context("forkserver").Process(target=int, name="forkserver-ready")
    ready.start()
    ready.join()
