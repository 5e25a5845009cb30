"""Split numpy work on the rows of a table into blocks, run on one thread per core."""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.typing import DTypeLike

T = TypeVar("T")

# 8,192 rows of 40 float64 columns are 2.5 MiB, so a block's temporaries
# stay in the CPU cache. On the 2.2M-row file of bench/bench_prepare.py
# (2-core Xeon), 65,536-row blocks took about 1.2x the CPU time.
BLOCK_ROWS = 1 << 13


def map_blocks(function: Callable[[int, int], T], n_rows: int) -> list[T]:
    """Return ``function(start, stop)`` for consecutive row blocks covering ``n_rows``, in order.

    The rows are cut into one contiguous span per usable core, and each
    thread calls ``function`` on the blocks of its span. numpy releases the
    GIL while it computes on a block, so the threads run in parallel.
    ``function`` may run in several threads at once and must write only
    rows ``start:stop`` of any shared output.
    """
    n_blocks = -(-n_rows // BLOCK_ROWS)
    workers = min(_usable_cores(), n_blocks)
    if workers <= 1:
        return [
            function(start, min(start + BLOCK_ROWS, n_rows))
            for start in range(0, n_rows, BLOCK_ROWS)
        ]

    # Spans are whole numbers of blocks, so the blocks are the same as on one thread.
    span = -(-n_blocks // workers) * BLOCK_ROWS

    def map_span(first: int) -> list[T]:
        last = min(first + span, n_rows)
        return [
            function(start, min(start + BLOCK_ROWS, last))
            for start in range(first, last, BLOCK_ROWS)
        ]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metals-data") as pool:
        spans = list(pool.map(map_span, range(0, n_rows, span)))
    return [result for results in spans for result in results]


def _usable_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


#: Smallest array, in bytes, that :func:`empty_array` puts in a mapping of its own.
OWN_MAPPING_MIN_BYTES = 64 * 2**20


def empty_array(
    shape: tuple[int, ...], dtype: DTypeLike = np.float64, order: str = "C"
) -> np.ndarray:
    """Return an uninitialised array in an anonymous memory mapping of its own.

    numpy requests transparent huge pages (madvise) for large arrays unless
    NUMPY_MADVISE_HUGEPAGE=0 is set. The kernel may compact memory to serve
    such a request (when ``/sys/kernel/mm/transparent_hugepage/defrag`` is
    ``madvise``, a common default). Then the first write into a fresh
    750 MiB array spent 2 to 5 times the system time of ordinary pages on
    the 2-core VM of bench/bench_prepare.py. This mapping requests no huge
    pages.

    Arrays under ``OWN_MAPPING_MIN_BYTES`` come from ``np.empty``: a fresh
    mapping per call made every 100,000-line chunk of ``metals detect``
    fault its pages in again (about 110,000 faults per 1M records), where
    malloc reuses the memory freed by the chunk before.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size < OWN_MAPPING_MIN_BYTES:
        return np.empty(shape, dtype=dtype, order=order)
    # MAP_POPULATE maps every page in one call, which took half the time of
    # faulting them in one by one on the first write (0.17 s against 0.35 s
    # for 750 MiB on that VM).
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    buffer = mmap.mmap(-1, size, flags=flags)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
