"""Developer tools that are not part of any stage: `python -m tools.mutate` (make mutate)."""
