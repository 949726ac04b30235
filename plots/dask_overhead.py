"""`python -m plots.dask_overhead`: a task's cost on a LocalCluster, the pool and Dask's own ways.

One cluster (2 worker processes of one thread), started before any timing; then, interleaved and
each checked, no-op tasks sent by the pool (beyond on Dask) with 1 and 4 workers, and by Dask's own
ways: submit + result one at a time, an as_completed window of 4 futures, and client.map of every
task at once (no bound). Prints the median and the range of milliseconds per task, and the load
average before and after, since a round trip through a scheduler on a busy machine waits for CPU.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from beyond import Pool, Task
from plots.implementations import check, no_op


def by_the_pool(client: Any, tasks: int, workers: int) -> list[int]:
    pool = Pool([Task(partial(no_op, job)) for job in range(1, tasks + 1)], workers, backend=client)
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
    futures = client.map(no_op, range(1, tasks + 1), pure=False)
    results: list[int] = client.gather(futures)
    client.cancel(futures)
    return results


Way = Callable[[Any, int, int], list[int]]
WAYS: list[tuple[str, Way, int]] = [
    ("the pool on Dask, 1 worker", by_the_pool, 1),
    ("the pool on Dask, 4 workers", by_the_pool, 4),
    ("Dask: submit + result, one at a time", one_at_a_time, 1),
    ("Dask: as_completed window of 4", window, 4),
    ("Dask: client.map, every task at once", map_all, 4),
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m plots.dask_overhead", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200, help="no-op tasks per run (200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (3)")
    args = parser.parse_args()
    if args.tasks < 1 or args.repeats < 1:
        parser.error("--tasks and --repeats must be at least 1")
    distributed: Any = importlib.import_module("distributed")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # The workers import the task's module before any timing.
        client.submit(no_op, 1, pure=False).result()
        milliseconds: dict[str, list[float]] = {name: [] for name, _, _ in WAYS}
        for _ in range(args.repeats):
            for name, way, workers in WAYS:
                start = time.perf_counter()
                results = way(client, args.tasks, workers)
                seconds = time.perf_counter() - start
                check(results, args.tasks, name)
                milliseconds[name].append(seconds / args.tasks * 1e3)
    for name, values in milliseconds.items():
        print(
            f"{name:40s} {statistics.median(values):7.2f} ms a task "
            f"({min(values):.2f} to {max(values):.2f})"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
