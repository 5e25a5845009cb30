"""Labeled share of all clients' pools, from the partition every client derives from the seed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from metals.common.data import partition_indices
from metals.common.data.partition import split_client_pools


@dataclass(frozen=True)
class PoolSizes:
    """Initial pool sizes of every client of a run, indexed by partition id.

    Attributes
    ----------
    labeled : np.ndarray
        int64 (num_clients,): records labeled before the first round.
    rows : np.ndarray
        int64 (num_clients,): records of the labeled and unlabeled pools
        together, without the local test split.
    """

    labeled: np.ndarray
    rows: np.ndarray


def initial_pool_sizes(
    y_train: np.ndarray, groups_train: np.ndarray | None, config: Mapping[str, Any]
) -> PoolSizes:
    """Return the pool sizes each client starts with, as the clients compute them.

    Parameters
    ----------
    y_train : np.ndarray
        int64 (n_train,): class of each training row of the prepared dataset.
    groups_train : np.ndarray | None
        (n_train,) device type per training row, or None.
    config : Mapping[str, Any]
        Validated run config; ``num-clients``, ``partition``,
        ``dirichlet-alpha``, ``seed``, ``initial-labeled-fraction``,
        ``local-test-fraction`` and ``mode`` are read.
    """
    seed = int(config["seed"])
    parts = partition_indices(
        y_train,
        int(config["num-clients"]),
        str(config["partition"]),
        alpha=float(config["dirichlet-alpha"]),
        seed=seed,
        groups=groups_train,
    )
    labeled = np.zeros(len(parts), dtype=np.int64)
    rows = np.zeros(len(parts), dtype=np.int64)
    for partition_id, part in enumerate(parts):
        initial, unlabeled, _ = split_client_pools(
            len(part),
            partition_id,
            seed=seed,
            labeled_fraction=float(config["initial-labeled-fraction"]),
            local_test_fraction=float(config["local-test-fraction"]),
        )
        rows[partition_id] = len(initial) + len(unlabeled)
        labeled[partition_id] = len(initial)
    if config["mode"] == "classical":
        # Every client labels its whole pool before round 1.
        labeled = rows.copy()
    return PoolSizes(labeled=labeled, rows=rows)


def labels_summary(
    sizes: PoolSizes, client_stats: Mapping[str, Mapping[str, float]]
) -> tuple[int, float]:
    """Return the labels bought so far and the labeled share of all clients' pools.

    The share is (labeled records of every client) / (pool records of every
    client). A client that has reported counts with the sizes of its last
    reply and the others with their initial sizes, so clients that were not
    sampled yet still count.

    Parameters
    ----------
    sizes : PoolSizes
        Output of :func:`initial_pool_sizes`.
    client_stats : Mapping[str, Mapping[str, float]]
        Latest reply per partition id (as a string) with
        ``labels-queried-total``, ``labeled-pool-size`` and ``pool-size``.
    """
    labeled = sizes.labeled.astype(np.float64)
    rows = sizes.rows.astype(np.float64)
    labels_bought = 0
    for key, stats in client_stats.items():
        labels_bought += int(stats["labels-queried-total"])
        partition_id = int(key)
        if 0 <= partition_id < len(rows):
            labeled[partition_id] = stats["labeled-pool-size"]
            rows[partition_id] = stats["pool-size"]
    total_rows = rows.sum()
    return labels_bought, (float(labeled.sum() / total_rows) if total_rows else float("nan"))
