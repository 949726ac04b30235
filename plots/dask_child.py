"""The benchmarks' Dask cluster, in a process of its own: `python -m plots.dask_child`.

Why a process of its own: a LocalCluster runs its scheduler, and its Client runs an event loop, as
threads of the process that starts them, and an idle cluster keeps them busy (heartbeats, ticks,
profiling: about 8% of a core here). In the measuring process they took the GIL from every other
contender: robust's dispatch cost went from 2.7-3.6 to 6.6-7.8 µs a task beside an idle cluster.
So the parent (plots.measure, through `DaskChild`) starts this program once per benchmark run; it
starts the cluster and a client, warms the workers up, and then runs one timed run per request,
interleaved by the parent with the other contenders' runs. No Dask thread runs in the parent.

The protocol, one pickled object at a time over stdin and stdout (stderr is the parent's log):
- the child first sends {"ready": ..., "pids": [...], "versions": {...}} (or {"error": text});
- the parent sends (call, job_count, workers), the child replies {"results": [...], "seconds": s}
  (the time of `beyond.Pool(...)` + `run()` alone, measured here), {"wrong": text} when a task
  failed, or {"error": text} when the run itself broke;
- end of input (the parent closed the pipe, or died) closes the client and the cluster and ends
  the program. The parent kills the child's process group if that takes too long.

Between its runs the child's cluster is stopped, not just idle: an idle cluster is busy all the
same (about 0.35 of a core here for the scheduler, the client and two workers), and in a run of
this program's own, robust's dispatch cost was 4.7 µs a task beside an idle cluster in a child
process against 3.2 µs with that child stopped (medians of 7, interleaved). So the parent stops
the child's process group (SIGSTOP) once a reply is in, and continues it (SIGCONT) before the
next request, with a moment for its timers to catch up before the clock starts. Everything in the
group stops together, so no part of the cluster sees another fall silent; a pause is one round of
the other contenders' runs, far below distributed's worker-ttl (5 minutes).

The child runs in a process group of its own: a Ctrl-C at the terminal reaches the parent's
group only, and the parent then closes the child in order (a SIGINT to the cluster's worker
processes would hit them at random moments). Should the parent die without closing it, the child
reads end of input and closes its cluster; or, if the parent died while the group was stopped,
the kernel sends the group, orphaned at that moment, SIGHUP then SIGCONT (POSIX's rule for an
orphaned process group with a stopped member), which ends it. That is why the child gets a process
group of its own in the parent's session, not a session of its own: in another session its group
would be orphaned from the start, and nothing would end it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from plots.start_method import START_METHOD
from plots.workloads import WrongResults, no_op

REPO_ROOT = Path(__file__).resolve().parent.parent

# The cluster: two worker processes of one thread (one per core on the 2-core machines measured
# here), no dashboard, every other setting distributed's default but one: its worker processes
# start as every process-based contender's do (plots.start_method; distributed's default is spawn).
N_WORKERS = 2
CLUSTER = (
    f"LocalCluster(n_workers={N_WORKERS}, threads_per_worker=1, processes=True), "
    f"worker processes started by {START_METHOD}"
)
# Starting a cluster takes seconds on a loaded machine; past this, the child is taken as stuck.
START_SECONDS = 120.0
# Closing it, in order, before the child's process group is killed.
CLOSE_SECONDS = 30.0
# After a pause, for the cluster's overdue timers (heartbeats, ticks) to run outside the timing.
RESUME_SECONDS = 0.2


# --- The parent's side. ---


class DaskChildFailed(RuntimeError):
    """The child process could not start its cluster, or broke during a run."""


class DaskChild:
    """The child process and its cluster, from start to close: a context manager.

    `run(call, job_count, workers)` -> (results, seconds), one timed run on the child's cluster.
    Raises plots.workloads.WrongResults if a task failed, DaskChildFailed if the child broke.
    """

    def __init__(self) -> None:
        # The child's stderr goes to a file, shown if it fails: distributed logs there. Closed by
        # close(), as it lives as long as the child.
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, "-m", "plots.dask_child"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            # A process group of its own (see the module's docstring): the terminal's Ctrl-C
            # reaches the parent only, and the child and its worker processes stop, continue and
            # can be killed as one.
            process_group=0,
        )
        self._stopped = False
        self.pids: list[int] = [self._process.pid]
        self.versions: dict[str, str] = {}
        try:
            ready = self._receive()
            self.pids = [int(pid) for pid in ready["pids"]]
            self.versions = dict(ready["versions"])
            self._signal(signal.SIGSTOP)
        except BaseException:
            self.close()
            raise

    def run(
        self, call: Callable[[int], int], job_count: int, workers: int
    ) -> tuple[list[int], float]:
        assert self._process.stdin is not None
        self._signal(signal.SIGCONT)
        time.sleep(RESUME_SECONDS)
        try:
            pickle.dump((call, job_count, workers), self._process.stdin)
            self._process.stdin.flush()
        except OSError as error:
            raise DaskChildFailed(f"the Dask child is gone: {error}{self._tail()}") from None
        reply = self._receive()
        self._signal(signal.SIGSTOP)
        if "wrong" in reply:
            raise WrongResults(f"beyond on Dask: {reply['wrong']}")
        return list(reply["results"]), float(reply["seconds"])

    def _signal(self, number: signal.Signals) -> None:
        """Stop or continue the child's whole process group: it, and its worker processes."""
        try:
            os.killpg(self._process.pid, number)
        except ProcessLookupError:
            return  # the group is gone; the next read from the child says why
        self._stopped = number == signal.SIGSTOP

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        try:
            reply: dict[str, Any] = pickle.load(self._process.stdout)
        except (EOFError, pickle.UnpicklingError) as error:
            status = self._process.poll()
            raise DaskChildFailed(
                f"the Dask child ended without a reply ({error!r}, exit status {status})"
                + self._tail()
            ) from None
        if "error" in reply:
            raise DaskChildFailed(f"the Dask child failed:\n{reply['error']}")
        return reply

    def _tail(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return f"\n--- its stderr, last lines ---\n{text[-3000:]}" if text else ""

    def close(self) -> None:
        """End of input: the child closes its cluster and exits; if it does not within
        CLOSE_SECONDS, its whole process group is killed. Never leaves a process behind."""
        process = self._process
        try:
            if self._stopped:
                self._signal(signal.SIGCONT)
            if process.stdin is not None and not process.stdin.closed:
                # OSError: the child is gone already, and there is nothing to tell it.
                with contextlib.suppress(OSError):
                    process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(CLOSE_SECONDS)
        finally:
            # Its group too: a worker process that outlived the child's own close goes with it.
            # ProcessLookupError: nothing is left in the group, the usual case.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self._log.close()

    def __enter__(self) -> DaskChild:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        where: TracebackType | None,
    ) -> None:
        self.close()


# --- The child's side. ---


def send(out: IO[bytes], message: dict[str, object]) -> None:
    pickle.dump(message, out)
    out.flush()


def timed_run(
    client: Any, call: Callable[[int], int], job_count: int, workers: int
) -> dict[str, object]:
    """One run of the pool on the cluster, as its user calls it: a list, run(), then walk."""
    import beyond

    # Earlier garbage is collected outside the time, as in the parent's timed_run (which also
    # times the collection of a run's own garbage: nothing beside a Dask task's milliseconds).
    gc.collect()
    start = time.perf_counter()
    pool = beyond.Pool(
        [beyond.Task(call, job) for job in range(1, job_count + 1)],
        workers,
        backend=client,
    )
    pool.run()
    seconds = time.perf_counter() - start
    for task in pool.tasks:
        if task.err is not None:
            return {"wrong": f"a task failed: {task.err!r}"}
    return {
        "results": [task.result for task in pool.tasks if task.result is not None],
        "seconds": seconds,
    }


def main() -> None:
    # The protocol owns stdout: anything printed by mistake must not corrupt it.
    requests, out = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    # The parent ends us by closing our input; a stray SIGINT must not cut the cluster's close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # Any: distributed is mostly untyped, and mypy --strict refuses calls into it.
        distributed: Any = importlib.import_module("distributed")
        dask: Any = importlib.import_module("dask")
        dask.config.set({"distributed.worker.multiprocessing-method": START_METHOD})
        cluster = distributed.LocalCluster(
            n_workers=N_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        )
    except Exception:
        send(out, {"error": traceback.format_exc()})
        return
    with cluster, distributed.Client(cluster) as client:
        try:
            # The workers import the benchmarks' module (and the pool) before any timing.
            client.submit(no_op, 1, pure=False).result()
            # The worker processes (their nannies are servers in this process).
            worker_pids = client.run(os.getpid)
            send(
                out,
                {
                    "ready": True,
                    "pids": [os.getpid(), *worker_pids.values()],
                    "versions": {
                        "dask": dask.__version__,
                        "distributed": distributed.__version__,
                        "cluster": CLUSTER,
                    },
                },
            )
        except Exception:
            send(out, {"error": traceback.format_exc()})
            return
        while True:
            try:
                call, job_count, workers_wanted = pickle.load(requests)
            except EOFError:
                break
            try:
                send(out, timed_run(client, call, job_count, workers_wanted))
            except Exception:
                send(out, {"error": traceback.format_exc()})


if __name__ == "__main__":
    main()
