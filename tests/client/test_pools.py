import numpy as np
import pytest
from flwr.app import RecordDict

from metals.client.pools import Pools, load_pools, save_pools


def _pools() -> Pools:
    return Pools(
        labeled=np.array([0, 1], dtype=np.int64),
        labels=np.array([2, 0], dtype=np.int64),
        unlabeled=np.array([2, 3, 4, 5], dtype=np.int64),
    )


def test_add_labels_moves_records():
    pools = _pools()

    pools.add_labels(np.array([4, 2]), np.array([1, 1]), server_round=1)

    assert pools.labeled.tolist() == [0, 1, 4, 2]
    assert pools.labels.tolist() == [2, 0, 1, 1]
    assert pools.unlabeled.tolist() == [3, 5]
    assert pools.labels_queried_total == 2
    assert pools.size == 6


@pytest.mark.parametrize("indices", [[0], [3, 3], [9]])
def test_add_labels_rejects_records_outside_unlabeled_pool(indices):
    pools = _pools()

    with pytest.raises(ValueError, match="unlabeled pool"):
        pools.add_labels(np.array(indices), np.zeros(len(indices)), server_round=1)


def test_state_round_trip_keeps_pools():
    state = RecordDict()
    pools = _pools()
    pools.add_labels(np.array([3]), np.array([2]), server_round=1)
    pools.trained_round = 1

    save_pools(state, pools)
    restored = load_pools(state)

    assert restored is not None
    assert restored.labeled.tolist() == pools.labeled.tolist()
    assert restored.labels.tolist() == pools.labels.tolist()
    assert restored.unlabeled.tolist() == pools.unlabeled.tolist()
    assert restored.labels_queried_total == 1
    assert restored.label_rounds.tolist() == [0, 0, 1]
    assert restored.trained_round == 1


def test_load_pools_empty_state_is_none():
    assert load_pools(RecordDict()) is None


def test_discard_rounds_restores_earlier_pools():
    # Prepare: labels bought in rounds 1 and 2.
    pools = _pools()
    pools.add_labels(np.array([4]), np.array([1]), server_round=1)
    pools.add_labels(np.array([2, 5]), np.array([0, 2]), server_round=2)
    pools.trained_round = 2

    # Execute: round 2 is sent again.
    dropped = pools.discard_rounds_from(2)

    # Assert
    assert dropped == 2
    assert pools.labeled.tolist() == [0, 1, 4]
    assert pools.labels.tolist() == [2, 0, 1]
    assert pools.label_rounds.tolist() == [0, 0, 1]
    assert pools.unlabeled.tolist() == [2, 3, 5]
    assert pools.labels_queried_total == 1
    assert pools.trained_round == 1


def test_discard_rounds_after_last_keeps_pools():
    pools = _pools()
    pools.add_labels(np.array([4]), np.array([1]), server_round=1)
    pools.trained_round = 1

    dropped = pools.discard_rounds_from(2)

    assert dropped == 0
    assert pools.labeled.tolist() == [0, 1, 4]
    assert pools.trained_round == 1


def test_pools_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        Pools(
            labeled=np.array([0, 1], dtype=np.int64),
            labels=np.array([2], dtype=np.int64),
            unlabeled=np.array([2], dtype=np.int64),
        )
