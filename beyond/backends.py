"""The backends a stage-4 Pool can run its tasks on, beside its threads: `Pool(backend=...)`.

    Pool(tasks, concurrency)                        # "threads", the default (beyond/pool.py)
    Pool(tasks, concurrency, backend="asyncio")     # tasks are coroutine functions
    Pool(tasks, concurrency, backend="processes")   # tasks are picklable callables
    Pool(tasks, concurrency, backend=client)        # a dask.distributed.Client

Each backend is a module of its own, imported only when asked for, so that a missing extra
(uvloop, dask, distributed) costs nothing until it is used, and then one line says what to install.
Every backend keeps the pool's contract: each task keeps its own error and result, a task runs at
most once, max_errors, cancel(), deadlines, streaming, and no thread or process left behind.

A backend module defines `make_backend(argument) -> Backend` (beyond.pool.Backend), where the
argument is what was passed as `backend=`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from beyond.pool import Backend

# Backend names, and the module that makes each one.
MODULES = {
    "asyncio": "beyond.asyncio_backend",
    "processes": "beyond.processes",
}
# A dask.distributed Client given as the backend.
DASK_MODULE = "beyond.dask_backend"


def backend_for(backend: object) -> Backend:
    """The Backend for `Pool(backend=...)`: a name from MODULES, a dask.distributed Client, or a
    Backend made by hand (for example `beyond.asyncio_backend.Asyncio(loop="standard")`)."""
    if isinstance(backend, str) and backend in MODULES:
        module = MODULES[backend]
    elif isinstance(getattr(backend, "name", None), str) and callable(
        getattr(backend, "runner", None)
    ):
        return cast("Backend", backend)
    elif _looks_like_a_dask_client(backend):
        module = DASK_MODULE
    else:
        names = ", ".join(repr(name) for name in ("threads", *MODULES))
        raise ValueError(
            f"backend must be one of {names} or a dask.distributed.Client, got {backend!r}"
        )
    return cast("Backend", importlib.import_module(module).make_backend(backend))


def _looks_like_a_dask_client(backend: object) -> bool:
    # By its type's module and name, so that deciding does not import dask.
    kind = type(backend)
    return (kind.__module__ or "").startswith("distributed") and kind.__name__ == "Client"
