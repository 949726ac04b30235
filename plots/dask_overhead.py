"""`python -m plots.dask_overhead`: a task's cost on a LocalCluster, the pool and Dask's own ways.

One cluster (2 worker processes of one thread), started before any timing; then, interleaved and
each checked, no-op tasks sent by the pool (beyond on Dask) with 1, 4 and 16 in flight, and by
Dask's own ways: submit + result one at a time, an as_completed window of 4 and of 16 futures,
client.map of every task at once read with as_completed (no bound), and one message to the
scheduler and back (run_on_scheduler) for the cost of a single hop. For each: the median and the
range of milliseconds per task, and the CPU time per task of this process (the client, the
pool's threads, and the LocalCluster's scheduler, which runs here) and of the worker processes;
then what the idle cluster burns per second of wall time, which is in those CPU times too. And the
load average before and after, since a round trip through a scheduler on a busy machine waits
for CPU.
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from beyond import Pool, Task
from demo_args import DemoArgumentParser
from plots.workloads import check, no_op


def by_the_pool(client: Any, tasks: int, workers: int) -> list[int]:
    pool = Pool([Task(no_op, job) for job in range(1, tasks + 1)], workers, backend=client)
    pool.run()
    return [task.result for task in pool.tasks if task.result is not None]


def one_at_a_time(client: Any, tasks: int, workers: int) -> list[int]:
    results = []
    for job in range(1, tasks + 1):
        future = client.submit(no_op, job, pure=False)
        results.append(future.result())
        future.release()
    return results


def window(client: Any, tasks: int, workers: int) -> list[int]:
    """Dask's own bounded way: `workers` futures in flight, a new one as each completes."""
    distributed: Any = importlib.import_module("distributed")
    jobs = iter(range(1, tasks + 1))
    first = [client.submit(no_op, next(jobs), pure=False) for _ in range(min(workers, tasks))]
    results = []
    in_flight = distributed.as_completed(first)
    for future in in_flight:
        results.append(future.result())
        future.release()
        job = next(jobs, None)
        if job is not None:
            in_flight.add(client.submit(no_op, job, pure=False))
    return results


def map_all(client: Any, tasks: int, workers: int) -> list[int]:
    """What a Dask user writes with no bound: every task at once, each read as it completes."""
    distributed: Any = importlib.import_module("distributed")
    futures = client.map(no_op, range(1, tasks + 1), pure=False)
    results = [future.result() for future in distributed.as_completed(futures)]
    client.cancel(futures)
    return results


def nothing() -> None:
    """Run on the scheduler: one message there and back, no task."""


def scheduler_hops(client: Any, tasks: int, workers: int) -> list[int]:
    """`tasks` round trips to the scheduler and back, one after another, and no task at all."""
    for _ in range(tasks):
        client.run_on_scheduler(nothing)
    return [2 * job for job in range(1, tasks + 1)]


Way = Callable[[Any, int, int], list[int]]
WAYS: list[tuple[str, Way, int]] = [
    ("the pool on Dask, 1 worker", by_the_pool, 1),
    ("the pool on Dask, 4 workers", by_the_pool, 4),
    ("the pool on Dask, 16 workers", by_the_pool, 16),
    ("Dask: submit + result, one at a time", one_at_a_time, 1),
    ("Dask: as_completed window of 4", window, 4),
    ("Dask: as_completed window of 16", window, 16),
    ("Dask: client.map, every task at once", map_all, 4),
    ("no task: one message to the scheduler", scheduler_hops, 1),
]


def cpu_seconds(processes: list[Any]) -> float:
    """User + system CPU time of the processes so far (psutil: distributed depends on it)."""
    return float(sum(times.user + times.system for times in (p.cpu_times() for p in processes)))


def main() -> None:
    parser = DemoArgumentParser(prog="python -m plots.dask_overhead", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200, help="no-op tasks per run (200)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each way (5)")
    args = parser.parse_args()
    if args.tasks < 1 or args.repeats < 1:
        parser.error("--tasks and --repeats must be at least 1")
    distributed: Any = importlib.import_module("distributed")
    psutil: Any = importlib.import_module("psutil")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # The workers import the task's module before any timing.
        client.submit(no_op, 1, pure=False).result()
        here = [psutil.Process()]
        workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        # Per run: (wall, CPU here, CPU in the workers), in ms per task.
        measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in WAYS}
        for _ in range(args.repeats):
            for name, way, in_flight in WAYS:
                cpu_here, cpu_workers = cpu_seconds(here), cpu_seconds(workers)
                start = time.perf_counter()
                results = way(client, args.tasks, in_flight)
                seconds = time.perf_counter() - start
                check(results, args.tasks, name)
                measured[name].append(
                    (
                        seconds / args.tasks * 1e3,
                        (cpu_seconds(here) - cpu_here) / args.tasks * 1e3,
                        (cpu_seconds(workers) - cpu_workers) / args.tasks * 1e3,
                    )
                )
        # What the cluster burns doing nothing: its timers (heartbeats, ticks, profiling).
        cpu_here, cpu_workers = cpu_seconds(here), cpu_seconds(workers)
        start = time.perf_counter()
        time.sleep(3)
        idle = time.perf_counter() - start
        idle_here = (cpu_seconds(here) - cpu_here) / idle
        idle_workers = (cpu_seconds(workers) - cpu_workers) / idle
    print(f"{'':40s} {'ms a task':>22s} {'CPU ms a task: here':>20s} {'workers':>8s}")
    for name, runs in measured.items():
        wall = [run[0] for run in runs]
        print(
            f"{name:40s} {statistics.median(wall):7.2f} ({min(wall):5.2f} to {max(wall):6.2f})"
            f" {statistics.median(run[1] for run in runs):20.2f}"
            f" {statistics.median(run[2] for run in runs):8.2f}"
        )
    print(
        f"idle cluster: {idle_here:.3f} of a core here (client and scheduler), "
        f"{idle_workers:.3f} in the two workers"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
