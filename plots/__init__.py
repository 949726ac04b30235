"""Benchmarks of the three stages against the pools Python users reach for, and their plots."""
