"""Stage 4: the pool you would ship: max_errors, cancel, deadlines, streaming. See `pool.py`."""

from beyond.backends.protocol import Stopped, StopReason
from beyond.cancellation import Cancelled, OverdueWarning, Token, checkpoint, current_token
from beyond.pool import Pool
from beyond.task import Task

__all__ = [
    "Cancelled",
    "OverdueWarning",
    "Pool",
    "StopReason",
    "Stopped",
    "Task",
    "Token",
    "checkpoint",
    "current_token",
]
