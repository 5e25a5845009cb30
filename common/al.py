"""Active-learning query strategies: pure utility scores and one selection step.

Every scoring function maps class probabilities of shape (n, num_classes) to
utilities of shape (n,), where a higher utility means the record is queried
earlier. :func:`select_queries` turns utilities into pool indices.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "entropy", "margin", "least_confidence", "kcenter")


@dataclass(frozen=True)
class QueryResult:
    """Records chosen by one query.

    Attributes
    ----------
    indices : np.ndarray
        int64 of shape (k,): entries of the pool, in the order picked.
    scores : np.ndarray
        float64 of shape (k,): the utility of each picked record (for
        ``kcenter``, its margin utility), aligned with ``indices``.
    """

    indices: np.ndarray
    scores: np.ndarray


def _check_probs(probs: np.ndarray) -> np.ndarray:
    """Return ``probs`` as float64 (n, c) or raise ``ValueError`` naming the problem."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (n, num_classes >= 2), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0:
        raise ValueError("probabilities must be finite and >= 0; check the model output")
    return probs


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    r"""Return the predictive entropy :math:`-\sum_c p_c \log p_c` of each row (nats).

    Probabilities of 0 contribute 0, never NaN: their logarithm is taken of 1.
    """
    probs = _check_probs(probs)
    return -(probs * np.log(np.where(probs > 0, probs, 1.0))).sum(axis=1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Return the negated margin, minus (top-1 minus top-2 probability), of each row.

    The smallest margin has the highest utility, so it is queried first.
    """
    probs = _check_probs(probs)
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return -(top_two[:, 1] - top_two[:, 0])


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """Return one minus the top-1 probability of each row."""
    return 1.0 - _check_probs(probs).max(axis=1)


def random_scores(num_records: int, seed: int) -> np.ndarray:
    """Return uniform random utilities of shape (num_records,) drawn from ``seed``."""
    return np.random.default_rng(seed).random(num_records)


def query_count(pool_size: int, *, fraction: float = 0.0, size: int = 0) -> int:
    """Return how many records to query from a pool of ``pool_size``.

    ``size`` > 0 requests that many records; otherwise ``ceil(fraction *
    pool_size)``. The result is capped by the pool size, so an empty pool
    queries nothing.

    Raises
    ------
    ValueError
        On a negative size or a fraction outside [0, 1].
    """
    if size < 0 or not 0 <= fraction <= 1:
        raise ValueError(
            f"invalid query size {size} or fraction {fraction}: need size >= 0 and "
            "0 <= fraction <= 1"
        )
    wanted = size if size > 0 else math.ceil(fraction * pool_size)
    return min(wanted, pool_size)


def budget_remaining(labeled: int, pool_size: int, budget: float) -> int:
    """Return how many more labels a client may buy under a label budget.

    The budget is the maximum labeled share of the client's pool (labeled
    and unlabeled records together), so a client has at most
    ``floor(budget * pool_size)`` labels. A client that starts above that,
    because its initial labels already exceed the budget, may buy none.

    Raises
    ------
    ValueError
        On a budget outside [0, 1] or a labeled count outside [0, pool_size].
    """
    if not 0 <= budget <= 1:
        raise ValueError(f"invalid label budget {budget}: must be between 0 and 1")
    if not 0 <= labeled <= pool_size:
        raise ValueError(
            f"invalid labeled count {labeled} for a pool of {pool_size} records: "
            "it must be between 0 and the pool size"
        )
    # The small tolerance keeps products such as 0.3 * 10 = 2.9999999999999996 at 3.
    allowed = math.floor(budget * pool_size + 1e-9)
    return max(0, allowed - labeled)


def rank_by_utility(utilities: np.ndarray, seed: int) -> np.ndarray:
    """Return positions of ``utilities`` (n,) from highest to lowest utility.

    Equal utilities are ordered by a random permutation drawn from ``seed``,
    so ties never favour the records that happen to come first.
    """
    tie_breaker = np.random.default_rng(seed).permutation(len(utilities))
    # np.lexsort sorts by the last key first.
    return np.lexsort((tie_breaker, -np.asarray(utilities, dtype=np.float64)))


def kcenter_greedy(
    candidates: np.ndarray, count: int, centers: np.ndarray | None = None
) -> np.ndarray:
    """Pick ``count`` rows of ``candidates`` that cover it best, by greedy k-center.

    Each step picks the candidate farthest (Euclidean) from its nearest
    center, then adds it to the centers. Source: Sener and Savarese, "Active
    Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR
    2018 (the greedy 2-approximation of k-center).

    Parameters
    ----------
    candidates : np.ndarray
        Embeddings of shape (m, d), in priority order: among equally far
        candidates the earlier row wins.
    count : int
        Rows to pick, at most m.
    centers : np.ndarray | None, default=None
        Embeddings of shape (l, d) already covered (the labeled pool). Without
        centers the first candidate is picked first.

    Returns
    -------
    np.ndarray
        int64 positions into ``candidates`` of shape (count,), in pick order.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    picked: list[int] = []
    if count <= 0:
        return np.zeros(0, dtype=np.int64)

    nearest = np.full(len(candidates), np.inf)
    if centers is not None and len(centers) > 0:
        centers = np.asarray(centers, dtype=np.float64)
        for start in range(0, len(centers), 1024):
            block = centers[start : start + 1024]
            distances = _pairwise_distances(candidates, block).min(axis=1)
            nearest = np.minimum(nearest, distances)
    else:
        picked.append(0)
        nearest = _pairwise_distances(candidates, candidates[:1])[:, 0]
        nearest[0] = -np.inf

    # A picked row gets distance -inf, so it is never picked twice, even
    # when duplicates leave every distance at 0.
    while len(picked) < count:
        choice = int(np.argmax(nearest))
        picked.append(choice)
        distances = _pairwise_distances(candidates, candidates[choice : choice + 1])[:, 0]
        nearest = np.minimum(nearest, distances)
        nearest[choice] = -np.inf
    return np.asarray(picked, dtype=np.int64)


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return Euclidean distances of shape (len(a), len(b))."""
    squared = (a**2).sum(axis=1)[:, None] - 2 * a @ b.T + (b**2).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


def select_queries(
    strategy: str,
    probs: np.ndarray,
    pool: np.ndarray,
    count: int,
    *,
    seed: int,
    embeddings: np.ndarray | None = None,
    labeled_embeddings: np.ndarray | None = None,
    prefilter_factor: int = 10,
) -> QueryResult:
    """Pick ``count`` records of the unlabeled ``pool`` to send to the oracle.

    ``random``, ``entropy``, ``margin`` and ``least_confidence`` pick the
    records with the highest utility. ``kcenter`` accounts for diversity in a
    batch: it keeps the ``prefilter_factor * count`` records with the
    smallest margin, then picks ``count`` of them by greedy k-center on the
    model's last hidden layer, with the labeled pool as the first centers.
    Uncertainty pre-filtering before a diversity step follows Zhdanov,
    "Diverse mini-batch Active Learning", arXiv:1901.05954 (2019), there with
    k-means; the k-center step follows Sener and Savarese (ICLR 2018).

    Parameters
    ----------
    strategy : str
        One of :data:`STRATEGIES`.
    probs : np.ndarray
        Probabilities of shape (len(pool), num_classes); row i belongs to
        record ``pool[i]``.
    pool : np.ndarray
        int64 indices of the unlabeled records, shape (n,).
    count : int
        Records to pick; capped by the pool size.
    seed : int
        Seed for random utilities and tie breaking.
    embeddings : np.ndarray | None, default=None
        Shape (len(pool), d), row-aligned with ``pool``; required by ``kcenter``.
    labeled_embeddings : np.ndarray | None, default=None
        Shape (l, d), embeddings of the labeled pool, used by ``kcenter``.
    prefilter_factor : int, default=10
        Candidates per query kept by ``kcenter``'s uncertainty pre-filter.

    Returns
    -------
    QueryResult
        Unique entries of ``pool`` and their utilities.

    Raises
    ------
    ValueError
        On an unknown strategy, misaligned arrays or a negative count.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown AL strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    pool = np.asarray(pool, dtype=np.int64)
    if count < 0:
        raise ValueError(f"invalid query count {count}: must be >= 0")
    if len(np.unique(pool)) != len(pool):
        raise ValueError("the unlabeled pool contains duplicate indices; pass each record once")
    count = min(count, len(pool))
    if count == 0:
        return QueryResult(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))

    if strategy == "random":
        utilities = random_scores(len(pool), seed)
    else:
        if probs is None or len(probs) != len(pool):
            raise ValueError(
                f"probabilities have {0 if probs is None else len(probs)} rows but the pool "
                f"has {len(pool)} records: pass one row per pool record"
            )
        if strategy == "entropy":
            utilities = entropy_scores(probs)
        elif strategy == "least_confidence":
            utilities = least_confidence_scores(probs)
        else:
            utilities = margin_scores(probs)

    order = rank_by_utility(utilities, seed)
    if strategy != "kcenter":
        chosen = order[:count]
        return QueryResult(pool[chosen], utilities[chosen])

    if embeddings is None or len(embeddings) != len(pool):
        raise ValueError(
            "kcenter needs embeddings with one row per pool record; pass the model's "
            "last hidden layer activations of the pool"
        )
    candidates = order[: min(len(pool), max(count, prefilter_factor * count))]
    picked = candidates[kcenter_greedy(embeddings[candidates], count, labeled_embeddings)]
    return QueryResult(pool[picked], utilities[picked])
