"""Label-efficiency measures: accuracy against the labeled share of the clients' pools."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check_curve(shares: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Return the curve as float arrays or raise ``ValueError`` naming the problem."""
    x = np.asarray(shares, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
        raise ValueError(
            f"need one accuracy per labeled share, at least one point: got {x.shape} shares "
            f"and {y.shape} accuracies"
        )
    if np.any(np.diff(x) < 0):
        raise ValueError(f"labeled shares must not decrease from round to round, got {x.tolist()}")
    return x, y


def area_under_curve(
    shares: Sequence[float], accuracies: Sequence[float], low: float, high: float
) -> float:
    """Return the mean accuracy over the labeled shares ``[low, high]`` (normalised area).

    The curve is the piecewise-linear interpolation of the points
    ``(shares[i], accuracies[i])``, one per round; it is held flat outside
    its first and last point. The area under it between ``low`` and
    ``high`` is divided by ``high - low``, so the result is an accuracy in
    [0, 1] and curves over the same range compare directly.

    Parameters
    ----------
    shares : Sequence[float]
        Labeled share of all clients' pools after each round, shape (rounds,),
        non-decreasing.
    accuracies : Sequence[float]
        Global accuracy after each round, shape (rounds,).
    low, high : float
        Share range to integrate over, ``low < high``.

    Raises
    ------
    ValueError
        On mismatched or empty inputs, decreasing shares or ``low >= high``.
    """
    x, y = _check_curve(shares, accuracies)
    if not low < high:
        raise ValueError(f"invalid share range [{low}, {high}]: low must be below high")
    grid = np.unique(np.concatenate([[low, high], x[(x > low) & (x < high)]]))
    values = np.interp(grid, x, y)
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)))
    return area / (high - low)


def first_share_reaching(
    shares: Sequence[float], accuracies: Sequence[float], target: float
) -> float:
    """Return the labeled share of the first round whose accuracy is >= ``target``, else NaN.

    No interpolation: a run reaches the target at a round it completed.
    """
    x, y = _check_curve(shares, accuracies)
    reached = np.flatnonzero(y >= target)
    return float(x[reached[0]]) if len(reached) else math.nan


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (ddof 1) of the finite values.

    NaN values are left out; an empty input gives (NaN, NaN) and a single
    value gives a standard deviation of NaN.
    """
    finite = np.asarray([value for value in values if not math.isnan(value)], dtype=np.float64)
    if len(finite) == 0:
        return math.nan, math.nan
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return float(np.mean(finite)), std


def compare_to_random(strategy: Sequence[float], random: Sequence[float]) -> str:
    """Return ``"beats random"``, ``"below random"`` or ``"no clear difference"``.

    The AL strategy beats random when its mean area exceeds random's by
    more than the larger of the two seed standard deviations. It is below
    random when it trails by more than that. Otherwise the difference is
    within the spread over seeds. With one seed per side, any difference counts.

    Parameters
    ----------
    strategy, random : Sequence[float]
        Areas under the label-efficiency curve, one per seed.
    """
    strategy_mean, strategy_std = mean_std(strategy)
    random_mean, random_std = mean_std(random)
    if math.isnan(strategy_mean) or math.isnan(random_mean):
        return "no clear difference"
    spread = max(
        0.0 if math.isnan(strategy_std) else strategy_std,
        0.0 if math.isnan(random_std) else random_std,
    )
    difference = strategy_mean - random_mean
    if difference > spread:
        return "beats random"
    if difference < -spread:
        return "below random"
    return "no clear difference"
