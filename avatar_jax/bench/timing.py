"""Honest wall-clock timing of jitted functions: compile first, block on results, report the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1) -> dict:
    """Run ``fn(*args)`` ``warmup`` times (compiles), then ``repeats`` timed runs.

    Returns seconds as ``{"median": ..., "min": ..., "runs": [...]}``; every run blocks until the
    device is done so asynchronous dispatch cannot flatter the number.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    return {"median": statistics.median(runs), "min": min(runs), "runs": runs}
