"""SMOTE oversampling of a client's labeled pool."""

from __future__ import annotations

import logging

import numpy as np

from metals.common.data.errors import DataError

logger = logging.getLogger(__name__)


def oversample_smote(
    x: np.ndarray, y: np.ndarray, *, k_neighbors: int = 5, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Oversample every minority class up to the majority count with SMOTE.

    Use it on a labeled pool only, never on test rows. Each minority class is
    oversampled on its own, so a class with ``n`` records and
    ``n < k_neighbors + 1`` uses ``k = n - 1`` neighbours; a class with a
    single record cannot be interpolated and is left as is. Both cases are
    logged.

    Parameters
    ----------
    x : numpy.ndarray
        Features, shape (n_rows, n_features).
    y : numpy.ndarray
        Class indices, int64 shape (n_rows,).
    k_neighbors : int, default=5
        Neighbours SMOTE interpolates between, >= 1.
    seed : int, default=42
        Seed of SMOTE.

    Returns
    -------
    x_resampled : numpy.ndarray
        float32, shape (n_rows + n_new, n_features): the input rows first,
        then the synthetic ones.
    y_resampled : numpy.ndarray
        int64, shape (n_rows + n_new,).

    Raises
    ------
    DataError
        On mismatched shapes or ``k_neighbors < 1``.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(
            f"SMOTE needs x of shape (n_rows, n_features) and y of shape (n_rows,); "
            f"got {x.shape} and {y.shape}"
        )
    if k_neighbors < 1:
        raise DataError(f"invalid k_neighbors {k_neighbors!r}: must be >= 1")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        logger.info("SMOTE skipped: the labeled pool contains %s class(es)", len(classes))
        return x, y

    # Imported here: imbalanced-learn pulls in scikit-learn and SciPy (seconds
    # of start-up in every simulated client), and most runs never use SMOTE.
    from imblearn.over_sampling import SMOTE

    target = int(counts.max())
    new_x: list[np.ndarray] = [x]
    new_y: list[np.ndarray] = [y]
    for label, count in zip(classes, counts, strict=True):
        if count == target:
            continue
        if count < 2:
            logger.warning(
                "SMOTE: class %s has 1 record, too few to interpolate; left as is", label
            )
            continue
        k = min(k_neighbors, int(count) - 1)
        if k < k_neighbors:
            logger.warning(
                "SMOTE: class %s has %s records, fewer than k_neighbors + 1 = %s; "
                "using k_neighbors=%s for it",
                label,
                count,
                k_neighbors + 1,
                k,
            )
        sampler = SMOTE(sampling_strategy={int(label): target}, k_neighbors=k, random_state=seed)
        x_out, y_out = sampler.fit_resample(x, y)
        new_x.append(np.asarray(x_out[len(x) :], dtype=np.float32))
        new_y.append(np.asarray(y_out[len(y) :], dtype=np.int64))

    x_resampled = np.concatenate(new_x)
    y_resampled = np.concatenate(new_y)
    logger.info("SMOTE: %s labeled rows grown to %s", len(y), len(y_resampled))
    return x_resampled, y_resampled
