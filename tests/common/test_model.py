import numpy as np
import pytest
import torch

from metals.common.model import MLP, build_model, load_numpy_state, state_to_numpy
from metals.common.runconfig import validate_run_config
from metals.common.training import accuracy, embed, pick_queries, predict_proba, train_local


def _blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[0.1, 0.1, 0.1, 0.1], [0.9, 0.1, 0.9, 0.1], [0.1, 0.9, 0.1, 0.9]])
    x = centers[y] + rng.normal(0, 0.05, (n, 4))
    return x.astype(np.float32), y.astype(np.int64)


def _distance(model: MLP, anchor: dict[str, np.ndarray]) -> float:
    weights = state_to_numpy(model)
    return float(np.sqrt(sum(((weights[key] - anchor[key]) ** 2).sum() for key in anchor)))


def test_mlp_layers_and_output_shape():
    # Prepare
    model = MLP(num_features=7, num_classes=4, hidden_layers=(90, 90))

    # Execute
    logits = model(torch.zeros(5, 7))

    # Assert
    assert logits.shape == (5, 4)
    assert [layer.out_features for layer in model.body if isinstance(layer, torch.nn.Linear)] == [
        90,
        90,
    ]


def test_build_model_same_seed_same_weights():
    first = state_to_numpy(build_model(4, 3, (8,), seed=3))
    second = state_to_numpy(build_model(4, 3, (8,), seed=3))
    other = state_to_numpy(build_model(4, 3, (8,), seed=4))

    assert all(np.array_equal(first[key], second[key]) for key in first)
    assert not np.array_equal(first["head.weight"], other["head.weight"])


def test_predict_proba_rows_sum_to_one():
    model = build_model(4, 3, (8,), seed=0)
    x, _ = _blobs(50)

    probs = predict_proba(model, x, batch_size=16)

    assert probs.shape == (50, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_embed_shape_of_last_hidden_layer():
    model = build_model(4, 3, (8, 5), seed=0)
    x, _ = _blobs(10)

    assert embed(model, x).shape == (10, 5)


def test_train_local_learns_separable_blobs():
    model = build_model(4, 3, (16,), seed=0)
    x, y = _blobs()

    result = train_local(model, x, y, epochs=30, batch_size=32, learning_rate=0.01, seed=0)

    assert result.num_examples == 300
    assert accuracy(model, x, y) > 0.95


def test_train_local_same_seed_same_weights():
    x, y = _blobs()
    first, second = build_model(4, 3, (8,), seed=0), build_model(4, 3, (8,), seed=0)

    train_local(first, x, y, epochs=2, seed=5)
    train_local(second, x, y, epochs=2, seed=5)

    assert np.array_equal(
        state_to_numpy(first)["head.weight"], state_to_numpy(second)["head.weight"]
    )


def test_fedprox_term_keeps_weights_closer_to_global():
    # Prepare: the same start and data, with and without the proximal term.
    x, y = _blobs()
    start = build_model(4, 3, (16,), seed=1)
    anchor = state_to_numpy(start)
    plain, proximal = build_model(4, 3, (16,), seed=1), build_model(4, 3, (16,), seed=1)

    # Execute
    train_local(plain, x, y, epochs=10, learning_rate=0.01, proximal_mu=0.0, seed=2)
    train_local(proximal, x, y, epochs=10, learning_rate=0.01, proximal_mu=1.0, seed=2)

    # Assert
    assert _distance(proximal, anchor) < 0.8 * _distance(plain, anchor)


def test_weight_decay_shrinks_weights():
    x, y = _blobs()
    plain, decayed = build_model(4, 3, (16,), seed=1), build_model(4, 3, (16,), seed=1)

    train_local(plain, x, y, epochs=10, learning_rate=0.01, weight_decay=0.0, seed=2)
    train_local(decayed, x, y, epochs=10, learning_rate=0.01, weight_decay=0.5, seed=2)

    zero = {key: np.zeros_like(value) for key, value in state_to_numpy(plain).items()}
    assert _distance(decayed, zero) < _distance(plain, zero)


@pytest.mark.parametrize(
    ("rows", "labels", "message"),
    [
        (0, 0, "empty labeled pool"),
        (5, 4, "must match"),
    ],
)
def test_train_local_rejects_bad_pool(rows, labels, message):
    model = build_model(4, 3, (8,), seed=0)

    with pytest.raises(ValueError, match=message):
        train_local(model, np.zeros((rows, 4), np.float32), np.zeros(labels, np.int64), epochs=1)


def test_load_numpy_state_rejects_wrong_shape():
    model = build_model(4, 3, (8,), seed=0)
    weights = state_to_numpy(model)
    weights["head.weight"] = np.zeros((3, 9), np.float32)

    with pytest.raises(ValueError, match="head.weight"):
        load_numpy_state(model, weights)


def test_load_numpy_state_round_trip():
    source, target = build_model(4, 3, (8,), seed=0), build_model(4, 3, (8,), seed=1)

    load_numpy_state(target, state_to_numpy(source))

    assert np.array_equal(state_to_numpy(target)["head.bias"], state_to_numpy(source)["head.bias"])


def test_pick_queries_stops_at_label_budget():
    # Prepare: 20 records, 4 labeled; a 30% budget allows 6 labels in all.
    model = build_model(4, 2, (8,), seed=0)
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    config = validate_run_config(
        {"al-strategy": "margin", "query-fraction": 0.5, "label-budget": 0.3}
    )

    # Execute
    picked = pick_queries(model, x, np.arange(4), np.arange(4, 20), config, seed=1)

    # Assert
    assert len(picked) == 2
    assert set(picked.tolist()) <= set(range(4, 20))
