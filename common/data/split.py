"""Deduplication and seeded, stratified train / validation / test splits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.blocks import map_blocks
from metals.common.data.errors import DataError

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)


def drop_duplicates(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """Remove rows equal in every one of ``columns``, keeping the first.

    Returns
    -------
    frame : pandas.DataFrame
        The distinct rows with a fresh 0-based index.
    removed : int
        Number of rows removed.
    """
    # Hash each row first and compare exactly only the rows whose hash repeats,
    # because pandas' exact check factorizes every column of every row.
    candidates = _repeated(row_hashes(frame, columns))
    duplicated = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        subset = frame.loc[candidates, columns]
        duplicated[candidates] = subset.duplicated(keep="first").to_numpy()
    removed = int(np.count_nonzero(duplicated))
    if removed:
        frame = frame.loc[~duplicated]
    return frame.reset_index(drop=True), removed


def _repeated(hashes: np.ndarray) -> np.ndarray:
    """Return a bool mask, shape (n_rows,), of the hashes that occur more than once."""
    ordered = np.sort(hashes)
    repeats = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    candidates = np.zeros(len(hashes), dtype=bool)
    if len(repeats) == 0:
        return candidates

    def mark_block(start: int, stop: int) -> None:
        block = hashes[start:stop]
        position = np.minimum(np.searchsorted(repeats, block), len(repeats) - 1)
        candidates[start:stop] = repeats[position] == block

    map_blocks(mark_block, len(hashes))
    return candidates


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Return a 64-bit hash per row of ``columns``, uint64 shape (n_rows,).

    Equal rows get equal hashes, with 0.0 and -0.0 alike and every NaN
    alike. Unequal rows may collide, so a repeated hash only marks candidates.
    Each column's 64-bit key is multiplied by its own odd constant, mixed
    with a xor-shift and summed modulo 2**64. Rows are hashed in blocks on
    every core. float64 columns are read from one (n_rows, n_columns) array,
    which is a view, not a copy, when they form one block of the frame.
    """
    import pandas as pd

    hashes = np.empty(len(frame), dtype=np.uint64)
    floats = [column for column in columns if frame[column].dtype == np.float64]
    others = [column for column in columns if column not in floats]
    multipliers = _odd_constants(len(columns))

    values = frame[floats].to_numpy() if floats else np.zeros((len(frame), 0))
    # Categorical columns are keyed by their codes, other columns by pandas' hash.
    other_keys = []
    for column in others:
        series = frame[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            other_keys.append(series.cat.codes.to_numpy())
        else:
            other_keys.append(pd.util.hash_array(series.to_numpy()))

    def hash_block(start: int, stop: int) -> None:
        # Adding 0.0 turns -0.0 into 0.0, and every NaN payload becomes one value.
        block = values[start:stop] + 0.0
        block[np.isnan(block)] = np.nan
        block_hashes = _mix(block.view(np.uint64), multipliers[: len(floats)]).sum(axis=1)
        for position, keys in enumerate(other_keys, start=len(floats)):
            block_hashes += _mix(keys[start:stop].astype(np.uint64), multipliers[position])
        hashes[start:stop] = block_hashes

    map_blocks(hash_block, len(frame))
    return hashes


def _odd_constants(count: int) -> np.ndarray:
    """Return ``count`` fixed odd 64-bit multipliers."""
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _mix(keys: np.ndarray, multipliers: np.ndarray | np.uint64) -> np.ndarray:
    """Return ``keys`` multiplied and xor-shifted, uint64 with wrap-around."""
    mixed = keys * multipliers
    mixed ^= mixed >> np.uint64(29)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    return mixed


def stratified_split(y: np.ndarray, fractions: list[float], *, seed: int) -> list[np.ndarray]:
    """Split row indices into parts with the class proportions of ``y``.

    Each class is shuffled with ``seed`` and cut by ``fractions``; the first
    part takes the remainder, so every row lands in exactly one part. A class
    with too few rows for a part gives that part none of it.

    Parameters
    ----------
    y : numpy.ndarray
        Class index per row, shape (n_rows,).
    fractions : list[float]
        Share of each later part, for example ``[0.1, 0.2]`` for validation
        and test; the first part (training) gets ``1 - sum(fractions)``.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    list[numpy.ndarray]
        ``len(fractions) + 1`` sorted int64 index arrays, training first.

    Raises
    ------
    DataError
        If the fractions are negative or leave no training share.
    """
    if any(fraction < 0 for fraction in fractions) or sum(fractions) >= 1:
        raise DataError(
            f"invalid split fractions {fractions}: each must be >= 0 and their sum "
            "below 1 so that training rows remain"
        )
    rng = np.random.default_rng(seed)
    # Part number of each row. Rows left at 0 are training rows.
    row_part = np.zeros(len(y), dtype=np.min_scalar_type(len(fractions)))
    for rows in _rows_by_label(y):
        rows = rows[rng.permutation(len(rows))]
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            # Keep at least one row of the class for training.
            size = min(int(round(fraction * len(rows))), len(rows) - start - 1)
            size = max(size, 0)
            row_part[rows[start : start + size]] = part
            start += size
    # flatnonzero lists each part's rows in ascending order.
    return [np.flatnonzero(row_part == part).astype(np.int64) for part in range(len(fractions) + 1)]


def _rows_by_label(y: np.ndarray) -> list[np.ndarray]:
    """Return the ascending positions of each label's rows, labels in ascending order.

    One stable sort groups the rows, in place of a comparison of every row
    per label. Small non-negative integer labels are sorted as uint8, for
    which numpy 2.4's stable sort is a radix sort.
    """
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) == 0:
        return []
    keys = y
    if labels.dtype.kind in "iu" and labels[0] >= 0 and labels[-1] < 256:
        keys = y.astype(np.uint8)
    grouped = np.argsort(keys, kind="stable")
    return np.split(grouped, np.cumsum(counts)[:-1])
