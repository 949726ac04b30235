"""Stage 2: an errors queue and a WaitGroup, and the deadlock they bring. See `pool.py`."""
