"""Hand counts of the clients' pools, for checking the labeled share a run records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metals.common.data import make_client_partition, prepare_dataset


def expected_labeled_fraction(
    data_dir: Path, num_clients: int, labels_bought: np.ndarray
) -> np.ndarray:
    """Return (initial labels of all clients + ``labels_bought``) / all clients' pool records.

    Every client is cut with the default NSL-KDD settings of the run config,
    so the counts cover clients that never replied as well.
    """
    prepared = prepare_dataset("nsl_kdd", data_dir)
    initial = pool_records = 0
    for partition_id in range(num_clients):
        partition = make_client_partition(prepared, partition_id, num_clients)
        initial += len(partition.labeled)
        pool_records += len(partition.labeled) + len(partition.unlabeled)
    return (initial + np.asarray(labels_bought, dtype=np.float64)) / pool_records
