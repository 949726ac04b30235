"""Stage 3: a pool of tasks that each keep their own error. See `pool.py`."""

from robust.pool import Pool, Task

__all__ = ["Pool", "Task"]
