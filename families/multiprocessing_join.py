"""multiprocessing: joining a worker process before reading the queue it filled.

The hang: worker processes put their results on a `multiprocessing.Queue`; main waits for them to
end (`join()`), then reads the queue. That works while the results are small, and hangs for good
once they outgrow the pipe beneath the queue. The Python documentation warns about it ("Joining
processes that use queues", in the multiprocessing programming guidelines), and it still catches
people: every `put()` returned long ago, and so has the worker's function.

Who waits on whom:
- main waits in `Process.join()` (the `os.waitpid` system call) for a worker process to end;
- the worker's function has returned, but its process does not end yet. `put()` only hands an
  item to the queue's feeder thread, which pickles it and writes it into the pipe in the
  background, and a process that put items joins that thread before it exits (CPython:
  Process._bootstrap runs util._exit_function, which runs Queue._finalize_join);
- the feeder thread is blocked in `write()`: the pipe is full, and the only reader is main, which
  reads after `join()` returns. (A second worker's feeder waits for the queue's write lock, held
  by the first one's blocked write.)
Three waits in a circle, none with a timeout: the stage 2 deadlock again, with a pipe for the
errors queue and the operating system's buffer for its capacity.

The fix (`run_reading_first`): read, then join. Main knows how many items are coming, so it reads
exactly that many; each read makes room in the pipe, every feeder gets to write everything, every
worker process ends, and the joins return at once. (`Queue.cancel_join_thread()` would also let a
worker end, by throwing away whatever it had not written yet: a fix that loses results.)

Measured here (Linux 6.18 x86_64, CPython 3.11.7 and 3.13.0 alike, start method fork): a new pipe
holds 65,536 bytes (fcntl F_GETPIPE_SZ). Each item travels as its pickle plus a 4-byte length
header, in one write() up to 16 KiB and in two above (Connection._send_bytes). With one worker
(`--workers 1 --items N --item-bytes B`), the largest N that finished, and N + 1 still running
after 2.5 s:

    --item-bytes   bytes per item on the pipe   items that finish (bytes)   hangs from
             100                          125                512 (64,000)          513
           1,000                        1,028                 48 (49,344)           49
           2,000                        2,028                 32 (64,896)           33
           4,000                        4,028                 16 (64,448)           17
          10,000                       10,028                  6 (60,168)            7
          20,000                       20,028                  3 (60,084)            4
         100,000                      100,037                  0                     1

So the limit is not simply 64 KiB: 1,000-byte items hang at 49, after 50,372 bytes. Linux keeps a
pipe's data in 16 pages of 4 KiB and puts a small write into the last page only if it fits
whole (fs/pipe.c, pipe_write), so three 1,028-byte items fill a page and 16 pages hold 48. Two
workers share the same pipe: `--workers 2 --items 24` (48 items) finished, `--items 25` hung.

What the deadlock watchdog (`deadlock_watch/`) cannot see: main waits in `waitpid`,
C code below `Process.join()` that is not one of the Python waits the watchdog can read, so main
counts as awake; and the stuck feeder thread lives in another process, out of its sight. Started
before this hang, it stayed silent for the 5 s it was watched.

Ctrl-C ends the hang: SIGINT reaches main and the workers alike, and each process prints a
KeyboardInterrupt traceback; the items are lost.

Sample run (`python -m families multiprocessing-join`, then nothing, with no CPU used):

    main: 2 workers, 50 items each, 1,028 bytes apiece on the pipe; a new pipe holds 65,536 bytes
    main: joining the workers, then reading their items
    worker 1 put 50 items and returns
    worker 2 put 50 items and returns

and with `--fix`:

    main: 2 workers, 50 items each, 1,028 bytes apiece on the pipe; a new pipe holds 65,536 bytes
    main: reading the workers' items, then joining them
    worker 1 put 50 items and returns
    worker 2 put 50 items and returns
    finished: 100 items, 50 from each worker
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler

Log = Callable[[str], None]
# (worker id, index of the item within that worker's, payload)
Item = tuple[int, int, bytes]

# Connection._send_bytes (Lib/multiprocessing/connection.py) writes this length before each pickle.
HEADER_BYTES = 4


def item(worker_id: int, index: int, item_bytes: int) -> Item:
    return (worker_id, index, bytes(item_bytes))


def bytes_on_the_pipe(item_bytes: int, index: int = 0) -> int:
    """How many bytes an item takes in the pipe: its pickle, as the feeder makes it, and header."""
    return len(ForkingPickler.dumps(item(1, index, item_bytes))) + HEADER_BYTES


def produce(
    worker_id: int,
    item_count: int,
    item_bytes: int,
    results: multiprocessing.queues.Queue[Item],
    log: Log,
) -> None:
    """A worker process: put `item_count` items on `results`, then return."""
    for index in range(item_count):
        # Returns at once, full pipe or not: put() appends to this process's buffer, and the
        # queue's feeder thread writes it into the pipe in the background.
        results.put(item(worker_id, index, item_bytes))
    log(f"worker {worker_id} put {item_count} items and returns")
    # Returning is not ending: the process's exit waits for the feeder to write every item.


def start(
    worker_count: int, item_count: int, item_bytes: int, log: Log
) -> tuple[multiprocessing.queues.Queue[Item], list[multiprocessing.Process]]:
    """Start the worker processes; return the queue they fill and the processes."""
    if worker_count < 1:
        raise ValueError(f"worker_count must be at least 1, got {worker_count}")
    # Unbounded: put() never waits. The bound that matters is the pipe's, further down.
    results: multiprocessing.queues.Queue[Item] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=produce,
            args=(w, item_count, item_bytes, results, log),
            name=f"worker-{w}",
        )
        for w in range(1, worker_count + 1)
    ]
    for process in workers:
        process.start()
    return results, workers


def run_joining_first(worker_count: int, item_count: int, item_bytes: int, log: Log) -> list[Item]:
    """Join every worker, then read the queue. Hangs once the items outgrow the pipe."""
    results, workers = start(worker_count, item_count, item_bytes, log)
    log("main: joining the workers, then reading their items")
    for process in workers:
        # DEADLOCK: the worker's process ends only after its feeder has written every item into
        # the pipe, and once the pipe is full only main's reads below could make room.
        process.join()
    return [results.get() for _ in range(worker_count * item_count)]


def run_reading_first(worker_count: int, item_count: int, item_bytes: int, log: Log) -> list[Item]:
    """The fix: read every item, then join. Finishes at any size."""
    results, workers = start(worker_count, item_count, item_bytes, log)
    log("main: reading the workers' items, then joining them")
    # Each get() takes an item out of the pipe, so a blocked feeder can always write on.
    collected = [results.get() for _ in range(worker_count * item_count)]
    for process in workers:
        # Nothing is left to write, so each process is ending or has ended already.
        process.join()
    return collected
