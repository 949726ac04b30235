"""Where a stage-4 Pool runs its tasks: `Pool(backend=...)`.

    Pool(tasks, concurrency)                        # "threads", the default: threads.py
    Pool(tasks, concurrency, backend="asyncio")     # coroutine functions: event_loop.py
    Pool(tasks, concurrency, backend="processes")   # picklable callables: child_processes.py
    Pool(tasks, concurrency, backend=client)        # a dask.distributed Client: dask_cluster.py

Each backend is a module of its own, imported only when asked for, so that a missing extra
(uvloop, dask, distributed) costs nothing until it is used, and then one line says what to install.
Every backend keeps the pool's contract: each task keeps its own error and result, a task runs at
most once, max_errors, cancel(), deadlines, streaming, and no thread or process left behind. What
a backend may ask of the scheduler, and nothing more, is in protocol.py.
"""

from __future__ import annotations

from beyond.backends.protocol import Backend, is_a_backend
from beyond.backends.threads import THREADS

# The backends by name, beside a dask.distributed Client (for messages).
NAMES = ("threads", "asyncio", "processes")


def backend_for(backend: object) -> Backend:
    """The Backend for `Pool(backend=...)`: a name from NAMES, a dask.distributed Client, or a
    Backend made by hand (for example `beyond.backends.event_loop.Asyncio(loop="standard")`)."""
    if backend == "threads":
        return THREADS
    if backend == "asyncio":
        from beyond.backends.event_loop import Asyncio

        return Asyncio()
    if backend == "processes":
        from beyond.backends.child_processes import Processes

        return Processes()
    if is_a_backend(backend):
        return backend
    if _looks_like_a_dask_client(backend):
        from beyond.backends.dask_cluster import dask_backend

        return dask_backend(backend)
    names = ", ".join(repr(name) for name in NAMES)
    if hasattr(backend, "threads") or hasattr(backend, "run_pool"):
        # Made by hand, but without what says which kind it is (docs/stage4.md, the seam).
        raise ValueError(
            f"a backend made by hand needs a str `name` and `runs_on` set to 'worker threads' or "
            f"'an event loop' (see docs/stage4.md, the seam), got {backend!r}"
        )
    raise ValueError(
        f"backend must be one of {names}, a dask.distributed.Client or a backend made by hand, "
        f"got {backend!r}"
    )


def _looks_like_a_dask_client(backend: object) -> bool:
    # By its type's module and name, so that deciding does not import dask.
    kind = type(backend)
    return (kind.__module__ or "").startswith("distributed") and kind.__name__ == "Client"
