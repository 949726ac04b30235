"""Stage 1: the Go-by-Example worker pool. See `naive/pool.py`."""
