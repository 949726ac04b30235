"""Stage 4: the pool you would ship: max_errors, cancel, deadlines, streaming. See `pool.py`."""

from beyond.pool import (
    Cancelled,
    OverdueWarning,
    Pool,
    Stopped,
    StopReason,
    Task,
    Token,
    checkpoint,
    current_token,
)

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
