from __future__ import annotations

import logging

import numpy as np
import pytest

from metals.common.data import (
    DataError,
    PreparedData,
    Preprocessor,
    make_client_partition,
    oversample_smote,
    partition_indices,
)


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def _prepared(y: np.ndarray, groups: np.ndarray | None = None) -> PreparedData:
    x = np.random.default_rng(1).random((len(y), 4), dtype=np.float32)
    empty = np.zeros((0, 4), dtype=np.float32)
    return PreparedData(
        name="synthetic",
        x_train=x,
        y_train=y,
        x_val=empty,
        y_val=np.zeros(0, dtype=np.int64),
        x_test=empty,
        y_test=np.zeros(0, dtype=np.int64),
        groups_train=groups,
        feature_names=["a", "b", "c", "d"],
        class_names=[f"c{i}" for i in range(int(y.max()) + 1)],
        preprocessor=Preprocessor([], [], {}, []),
    )


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_partition_covers_every_row_once(method: str) -> None:
    # Prepare
    y = _labels([500, 300, 150, 40, 10])

    # Execute
    parts = partition_indices(y, 10, method, alpha=0.3, seed=3)

    # Assert
    joined = np.concatenate(parts)
    assert len(parts) == 10
    assert len(joined) == len(y)
    assert np.array_equal(np.sort(joined), np.arange(len(y)))
    assert all(len(part) > 0 for part in parts)
    assert all(part.dtype == np.int64 for part in parts)


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_partition_same_seed_same_result(method: str) -> None:
    # Prepare
    y = _labels([400, 100, 20])

    # Execute
    first = partition_indices(y, 7, method, seed=11)
    second = partition_indices(y, 7, method, seed=11)
    other = partition_indices(y, 7, method, seed=12)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_sizes_near_equal() -> None:
    # Execute
    parts = partition_indices(_labels([1000, 3]), 10, "iid")

    # Assert
    assert {len(part) for part in parts} <= {100, 101}


def test_dirichlet_small_alpha_skews_labels() -> None:
    # Prepare
    y = _labels([1000] * 5)

    # Execute
    skewed = partition_indices(y, 10, "dirichlet", alpha=0.05, seed=0)
    even = partition_indices(y, 10, "dirichlet", alpha=1000.0, seed=0)

    # Assert
    def top_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(y[p], minlength=5).max() / len(p) for p in parts]))

    assert top_share(skewed) > 0.6
    assert top_share(even) < 0.3


def test_dirichlet_fills_empty_clients() -> None:
    # Prepare
    y = _labels([6, 6])

    # Execute
    parts = partition_indices(y, 12, "dirichlet", alpha=0.001, seed=0)

    # Assert
    assert all(len(part) == 1 for part in parts)


def test_natural_one_device_per_client_group() -> None:
    # Prepare
    groups = np.array(["fridge"] * 600 + ["gps"] * 300 + ["modbus"] * 100)
    y = _labels([500, 500])

    # Execute
    parts = partition_indices(y, 10, "natural", groups=groups, seed=5)

    # Assert
    devices = [set(groups[part]) for part in parts]
    assert all(len(device) == 1 for device in devices)
    per_device = {name: sum(d == {name} for d in devices) for name in ("fridge", "gps", "modbus")}
    assert per_device == {"fridge": 6, "gps": 3, "modbus": 1}
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"num_clients": 0}, "num_clients 0"),
        ({"num_clients": 101}, "num_clients 101"),
        ({"method": "shards"}, "'shards'"),
        ({"method": "dirichlet", "alpha": 0.0}, "alpha 0.0"),
        ({"method": "natural"}, "natural"),
        ({"method": "natural", "groups": np.array(["a", "b", "c"] * 33 + ["a"])}, "3 device"),
    ],
)
def test_partition_bad_settings_rejected(kwargs: dict, expected: str) -> None:
    # Prepare
    arguments = {"num_clients": 2, "method": "iid", **kwargs}
    if "groups" in kwargs:
        arguments["num_clients"] = 2

    # Execute
    with pytest.raises(DataError) as error:
        partition_indices(_labels([50, 50]), **arguments)

    # Assert
    assert expected in str(error.value)


def test_client_pools_disjoint_and_complete() -> None:
    # Prepare
    prepared = _prepared(_labels([700, 250, 50]))

    # Execute
    client = make_client_partition(
        prepared, 2, 5, labeled_fraction=0.2, local_test_fraction=0.25, seed=9
    )

    # Assert
    pools = np.concatenate([client.labeled, client.unlabeled, client.test])
    assert len(client.x) == 200
    assert np.array_equal(np.sort(pools), np.arange(200))
    assert len(client.test) == 50
    assert len(client.labeled) == 30
    assert len(client.unlabeled) == 120
    assert client.x.dtype == np.float32
    assert client.y.dtype == np.int64


def test_client_rows_match_partition() -> None:
    # Prepare
    prepared = _prepared(_labels([300, 100]))
    parts = partition_indices(prepared.y_train, 4, "dirichlet", alpha=0.5, seed=2)

    # Execute
    clients = [
        make_client_partition(prepared, i, 4, method="dirichlet", alpha=0.5, seed=2)
        for i in range(4)
    ]

    # Assert
    for client, rows in zip(clients, parts, strict=True):
        assert np.array_equal(client.x, prepared.x_train[rows])
        assert np.array_equal(client.y, prepared.y_train[rows])


def test_client_partition_deterministic() -> None:
    # Prepare
    prepared = _prepared(_labels([300, 100]))

    # Execute
    first = make_client_partition(prepared, 1, 3, seed=4)
    second = make_client_partition(prepared, 1, 3, seed=4)

    # Assert
    assert np.array_equal(first.labeled, second.labeled)
    assert np.array_equal(first.unlabeled, second.unlabeled)
    assert np.array_equal(first.test, second.test)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"partition_id": 3}, "partition_id 3"),
        ({"partition_id": -1}, "partition_id -1"),
        ({"labeled_fraction": 1.5}, "labeled_fraction 1.5"),
        ({"local_test_fraction": 1.0}, "local_test_fraction 1.0"),
    ],
)
def test_client_partition_bad_settings(kwargs: dict, expected: str) -> None:
    # Prepare
    arguments = {"partition_id": 0, "num_partitions": 3, **kwargs}

    # Execute
    with pytest.raises(DataError) as error:
        make_client_partition(_prepared(_labels([30, 30])), **arguments)

    # Assert
    assert expected in str(error.value)


def test_smote_balances_classes() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    x = rng.random((130, 3))
    y = np.array([0] * 100 + [1] * 20 + [2] * 10)

    # Execute
    x_out, y_out = oversample_smote(x, y, k_neighbors=5, seed=1)

    # Assert
    assert np.bincount(y_out).tolist() == [100, 100, 100]
    assert np.allclose(x_out[:130], x)
    assert x_out.dtype == np.float32


def test_smote_rare_class_handled(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    x = rng.random((54, 2))
    y = np.array([0] * 50 + [1] * 3 + [2])
    caplog.set_level(logging.WARNING)

    # Execute
    x_out, y_out = oversample_smote(x, y, k_neighbors=5)

    # Assert
    counts = np.bincount(y_out)
    assert counts.tolist() == [50, 50, 1]
    assert "k_neighbors=2" in caplog.text
    assert "class 2 has 1 record" in caplog.text
    synthetic = x_out[54:]
    low, high = x[50:53].min(axis=0), x[50:53].max(axis=0)
    assert np.all((synthetic >= low - 1e-6) & (synthetic <= high + 1e-6))


def test_smote_shape_mismatch_rejected() -> None:
    # Execute
    with pytest.raises(DataError) as error:
        oversample_smote(np.zeros((5, 2)), np.zeros(4, dtype=np.int64))

    # Assert
    assert "(5, 2)" in str(error.value)


def test_tiny_client_warns(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: 20 rows over 5 clients leaves each client 4 rows.
    prepared = _prepared(_labels([10, 10]))

    # Execute
    with caplog.at_level(logging.WARNING, logger="metals.common.data.partition"):
        make_client_partition(prepared, 0, 5, seed=0)

    # Assert
    assert "client 0: only" in caplog.text
    assert "use fewer clients or another partition" in caplog.text
