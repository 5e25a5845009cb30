"""Run numpy work on row blocks or columns in a thread pool.

numpy releases the GIL inside its loops over float and integer arrays, so
threads share the cores for the copy, scaling and hashing steps of the
preparation that pyarrow does not parallelise itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

# 65,536 rows of 40 float64 columns are 20 MiB, so a block's temporaries
# stay small while the per-block Python overhead stays negligible.
BLOCK_ROWS = 1 << 16


def map_threads(function: Callable[[U], T], items: Iterable[U]) -> list[T]:
    """Return ``[function(item) for item in items]``, computed on one thread per core."""
    items = list(items)
    workers = min(os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metals-data") as pool:
        return list(pool.map(function, items))


def map_blocks(function: Callable[[int, int], T], n_rows: int) -> list[T]:
    """Return ``function(start, stop)`` for consecutive row blocks covering ``n_rows``.

    Blocks run in threads, so ``function`` must only write to its own rows.
    """
    bounds = [(start, min(start + BLOCK_ROWS, n_rows)) for start in range(0, n_rows, BLOCK_ROWS)]
    return map_threads(lambda bound: function(*bound), bounds)
