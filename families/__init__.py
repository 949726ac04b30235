"""The post's deadlock in other Python tools: multiprocessing and concurrent.futures, each beside
its fix. asyncio's lives with stage 2 itself (`errors_channel/asyncio_pool.py`)."""
