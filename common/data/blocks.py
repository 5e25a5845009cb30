"""Split numpy work into row blocks, and whole columns across threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

# 8,192 rows of 40 float64 columns are 2.5 MiB, so a block's temporaries
# stay in the CPU cache. On the 2.2M-row file of bench/bench_prepare.py
# (2-core Xeon), 65,536-row blocks took about 1.2x the CPU time.
BLOCK_ROWS = 1 << 13


def map_threads(function: Callable[[U], T], items: Iterable[U]) -> list[T]:
    """Return ``[function(item) for item in items]``, computed on one thread per core.

    numpy and pyarrow release the GIL while they copy or convert a column,
    so whole columns run in parallel. Small row blocks do not: there the
    threads mostly wait for the GIL, and on a loaded machine they took more
    time than one thread.
    """
    items = list(items)
    workers = min(os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metals-data") as pool:
        return list(pool.map(function, items))


def map_blocks(function: Callable[[int, int], T], n_rows: int) -> list[T]:
    """Return ``function(start, stop)`` for consecutive row blocks covering ``n_rows``, in order."""
    return [
        function(start, min(start + BLOCK_ROWS, n_rows)) for start in range(0, n_rows, BLOCK_ROWS)
    ]
