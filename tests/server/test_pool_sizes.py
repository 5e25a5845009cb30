import numpy as np
import pytest

from metals.server.pool_sizes import (
    PoolSizes,
    client_stats_key,
    initial_pool_sizes,
    labels_summary,
)

CONFIG = {
    "num-clients": 4,
    "partition": "iid",
    "dirichlet-alpha": 0.5,
    "seed": 3,
    "initial-labeled-fraction": 0.2,
    "local-test-fraction": 0.2,
    "mode": "metals",
}


def test_initial_sizes_match_hand_count():
    # Prepare: 100 rows over 4 iid clients are 25 rows each; 5 go to the
    # local test split, and 4 of the other 20 start labeled.
    y_train = np.arange(100) % 3

    # Execute
    sizes = initial_pool_sizes(y_train, None, CONFIG)

    # Assert
    assert sizes.rows.tolist() == [20, 20, 20, 20]
    assert sizes.labeled.tolist() == [4, 4, 4, 4]


def test_initial_sizes_classical_all_labeled():
    sizes = initial_pool_sizes(np.arange(100) % 3, None, {**CONFIG, "mode": "classical"})

    assert sizes.labeled.tolist() == sizes.rows.tolist()


def test_labeled_fraction_counts_unreported_clients():
    # Prepare: only client 0 has reported, with 6 labels bought.
    sizes = PoolSizes(labeled=np.array([4, 4, 4, 4]), rows=np.array([20, 20, 20, 20]))
    stats = {"0": {"labels-queried-total": 6, "labeled-pool-size": 10, "pool-size": 20}}

    # Execute
    labels, fraction = labels_summary(sizes, stats)

    # Assert: (16 initial + 6 bought) / 80 pool rows
    assert labels == 6
    assert fraction == pytest.approx(22 / 80)


def test_labeled_fraction_before_any_reply():
    sizes = PoolSizes(labeled=np.array([4, 4, 4, 4]), rows=np.array([20, 20, 20, 20]))

    labels, fraction = labels_summary(sizes, {})

    assert labels == 0
    assert fraction == pytest.approx(16 / 80)


def test_labeled_fraction_sums_every_client():
    sizes = PoolSizes(labeled=np.array([4, 4, 4, 4]), rows=np.array([20, 20, 20, 20]))
    stats = {
        "0": {"labels-queried-total": 6, "labeled-pool-size": 10, "pool-size": 20},
        "3": {"labels-queried-total": 2, "labeled-pool-size": 6, "pool-size": 20},
    }

    labels, fraction = labels_summary(sizes, stats)

    assert labels == 8
    assert fraction == pytest.approx(24 / 80)


def test_labeled_fraction_adds_device_replies():
    # Prepare: partition 0 and a device with 10 of 40 records labeled have
    # reported; partition 1 has not, so no SuperNode may serve it.
    sizes = PoolSizes(labeled=np.array([4, 4]), rows=np.array([20, 20]))
    stats = {
        "0": {"labels-queried-total": 6, "labeled-pool-size": 10, "pool-size": 20},
        "device-1f": {"labels-queried-total": 2, "labeled-pool-size": 10, "pool-size": 40},
    }

    # Execute
    labels, fraction = labels_summary(sizes, stats)

    # Assert: (10 + 10) / (20 + 40)
    assert labels == 8
    assert fraction == pytest.approx(20 / 60)


def test_labeled_fraction_devices_alone():
    sizes = PoolSizes(labeled=np.array([4]), rows=np.array([20]))
    stats = {"device-1f": {"labels-queried-total": 2, "labeled-pool-size": 10, "pool-size": 40}}

    labels, fraction = labels_summary(sizes, stats)

    assert labels == 2
    assert fraction == pytest.approx(10 / 40)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"partition-id": 3, "device-id": -1}, "3"),
        ({"partition-id": -1, "device-id": 31}, "device-1f"),
        ({"partition-id": -1}, "node-77"),
    ],
)
def test_client_stats_key(metrics, expected):
    assert client_stats_key(metrics, 77) == expected
