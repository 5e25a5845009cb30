import numpy as np
import pytest

from metals.common.al import (
    STRATEGIES,
    budget_remaining,
    entropy_scores,
    kcenter_greedy,
    least_confidence_scores,
    margin_scores,
    query_count,
    rank_by_utility,
    select_queries,
)
from metals.common.oracle import SimulatedOracle


def _pool_inputs(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pool = rng.choice(1000, size=n, replace=False).astype(np.int64)
    embeddings = rng.normal(size=(n, 3))
    labeled_embeddings = rng.normal(size=(5, 3))
    return probs, pool, embeddings, labeled_embeddings


def _select(strategy, probs, pool, count, seed, embeddings, labeled_embeddings):
    return select_queries(
        strategy,
        probs,
        pool,
        count,
        seed=seed,
        embeddings=embeddings,
        labeled_embeddings=labeled_embeddings,
    )


# Contract every strategy passes.


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_returns_unique_pool_indices(strategy):
    probs, pool, embeddings, labeled = _pool_inputs()

    result = _select(strategy, probs, pool, 12, 7, embeddings, labeled)

    assert len(result.indices) == 12
    assert len(np.unique(result.indices)) == 12
    assert np.isin(result.indices, pool).all()
    assert len(result.scores) == 12


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_deterministic_for_seed(strategy):
    probs, pool, embeddings, labeled = _pool_inputs()

    first = _select(strategy, probs, pool, 10, 3, embeddings, labeled)
    second = _select(strategy, probs, pool, 10, 3, embeddings, labeled)

    assert np.array_equal(first.indices, second.indices)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_count_capped_by_pool(strategy):
    probs, pool, embeddings, labeled = _pool_inputs(n=6)

    result = _select(strategy, probs, pool, 50, 0, embeddings, labeled)

    assert sorted(result.indices.tolist()) == sorted(pool.tolist())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_empty_pool_queries_nothing(strategy):
    empty = np.zeros(0, dtype=np.int64)

    result = _select(strategy, np.zeros((0, 3)), empty, 5, 0, np.zeros((0, 2)), None)

    assert len(result.indices) == 0


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "random"])
def test_scores_follow_records_when_pool_is_permuted(strategy):
    # Prepare: the same records in another order, rows moved with them.
    probs, pool, embeddings, labeled = _pool_inputs()
    order = np.random.default_rng(1).permutation(len(pool))

    # Execute
    plain = _select(strategy, probs, pool, 8, 0, embeddings, labeled)
    shuffled = _select(strategy, probs[order], pool[order], 8, 0, embeddings[order], labeled)

    # Assert
    assert set(plain.indices.tolist()) == set(shuffled.indices.tolist())


@pytest.mark.parametrize("strategy", ["entropy", "margin", "least_confidence"])
def test_picked_scores_belong_to_picked_records(strategy):
    probs, pool, embeddings, labeled = _pool_inputs()
    scorer = {
        "entropy": entropy_scores,
        "margin": margin_scores,
        "least_confidence": least_confidence_scores,
    }[strategy]
    by_record = dict(zip(pool.tolist(), scorer(probs).tolist(), strict=True))

    result = _select(strategy, probs, pool, 10, 0, embeddings, labeled)

    assert [by_record[index] for index in result.indices.tolist()] == result.scores.tolist()
    assert result.scores.min() >= np.sort(scorer(probs))[-10]


# Hand-built probabilities where the right pick is known.

HAND_PROBS = np.array(
    [
        [0.98, 0.01, 0.01],  # confident
        [0.50, 0.49, 0.01],  # smallest margin
        [0.34, 0.33, 0.33],  # flattest: highest entropy, least confidence
        [0.70, 0.20, 0.10],
    ]
)
HAND_POOL = np.array([10, 11, 12, 13])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("margin", 11), ("entropy", 12), ("least_confidence", 12)],
)
def test_hand_built_probabilities_first_pick(strategy, expected):
    result = select_queries(strategy, HAND_PROBS, HAND_POOL, 1, seed=0)

    assert result.indices.tolist() == [expected]


def test_margin_is_top_one_minus_top_two():
    scores = margin_scores(HAND_PROBS)

    assert np.allclose(-scores, [0.97, 0.01, 0.01, 0.5])


def test_zero_probabilities_give_finite_scores():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])

    for scorer in (entropy_scores, margin_scores, least_confidence_scores):
        assert np.isfinite(scorer(probs)).all()


def test_entropy_of_one_hot_row_is_zero():
    assert entropy_scores(np.array([[0.0, 1.0]]))[0] == 0.0


def test_ties_broken_by_seed():
    equal = np.zeros(50)

    first = rank_by_utility(equal, seed=1)
    again = rank_by_utility(equal, seed=1)
    other = rank_by_utility(equal, seed=2)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_kcenter_spreads_picks_over_clusters():
    # Prepare: three tight clusters; the first ten candidates lie in one.
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat([0, 1, 2], 10)
    candidates = centers[labels] + rng.normal(0, 0.01, (30, 2))

    # Execute
    picked = kcenter_greedy(candidates, 3)

    # Assert
    assert sorted(labels[picked].tolist()) == [0, 1, 2]


def test_kcenter_skips_region_already_labeled():
    candidates = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])

    picked = kcenter_greedy(candidates, 1, centers=np.array([[0.0, 0.05]]))

    assert picked.tolist() == [2]


def test_kcenter_with_duplicates_picks_unique_rows():
    picked = kcenter_greedy(np.zeros((5, 2)), 5)

    assert sorted(picked.tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("pool_size", "fraction", "size", "expected"),
    [
        (100, 0.2, 0, 20),
        (7, 0.2, 0, 2),
        (100, 0.2, 30, 30),
        (10, 0.2, 30, 10),
        (0, 0.2, 0, 0),
        (0, 0.0, 5, 0),
        (100, 0.0, 0, 0),
    ],
)
def test_query_count(pool_size, fraction, size, expected):
    assert query_count(pool_size, fraction=fraction, size=size) == expected


@pytest.mark.parametrize(
    ("labeled", "pool_size", "budget", "expected"),
    [
        (20, 100, 0.5, 30),
        (50, 100, 0.5, 0),
        (60, 100, 0.5, 0),
        (2, 10, 0.3, 1),
        (45, 181, 0.5, 45),
        (0, 0, 0.5, 0),
        (10, 100, 1.0, 90),
        (0, 100, 0.0, 0),
    ],
)
def test_budget_remaining(labeled, pool_size, budget, expected):
    assert budget_remaining(labeled, pool_size, budget) == expected


@pytest.mark.parametrize(
    ("labeled", "pool_size", "budget", "message"),
    [
        (0, 10, 1.5, "invalid label budget 1.5"),
        (0, 10, -0.5, "invalid label budget -0.5"),
        (11, 10, 0.5, "invalid labeled count 11"),
        (-1, 10, 0.5, "invalid labeled count -1"),
    ],
)
def test_budget_remaining_rejects_bad_input(labeled, pool_size, budget, message):
    with pytest.raises(ValueError, match=message):
        budget_remaining(labeled, pool_size, budget)


@pytest.mark.parametrize(("fraction", "size"), [(1.5, 0), (-0.1, 0), (0.2, -1)])
def test_query_count_rejects_bad_settings(fraction, size):
    with pytest.raises(ValueError, match="invalid query"):
        query_count(10, fraction=fraction, size=size)


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        (np.array([[np.nan, 1.0], [0.5, 0.5]]), "finite"),
        (np.array([0.5, 0.5]), "shape"),
        (np.array([[0.5, 0.5]]), "rows"),
    ],
)
def test_select_rejects_bad_probabilities(probs, message):
    with pytest.raises(ValueError, match=message):
        select_queries("entropy", probs, np.array([1, 2]), 1, seed=0)


def test_select_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="unknown AL strategy 'bald'"):
        select_queries("bald", HAND_PROBS, HAND_POOL, 1, seed=0)


def test_kcenter_requires_embeddings():
    with pytest.raises(ValueError, match="embeddings"):
        select_queries("kcenter", HAND_PROBS, HAND_POOL, 1, seed=0)


def test_simulated_oracle_reveals_and_counts():
    oracle = SimulatedOracle(np.array([3, 1, 4, 1, 5]))

    first = oracle.label(np.array([0, 2]))
    second = oracle.label(np.array([4]))

    assert first.tolist() == [3, 4]
    assert second.tolist() == [5]
    assert oracle.labels_given == 3


def test_simulated_oracle_rejects_unknown_record():
    oracle = SimulatedOracle(np.array([0, 1]))

    with pytest.raises(IndexError, match="outside 0..1"):
        oracle.label(np.array([2]))
