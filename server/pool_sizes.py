"""Labeled share of all clients' pools, from the partition every client derives from the seed.

Clients with a ``partition-id`` are counted from the start, with the initial
pool sizes the server computes like they do. A device that reads its own
traffic file (node config ``data-path``) is counted from the sizes in its
replies only.
"""

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


def client_stats_key(metrics: Mapping[str, Any], node_id: int) -> str:
    """Return the key under which a client's latest training reply is kept.

    A client with a partition reports ``partition-id`` >= 0, which is the
    key. A device that reads its own file reports ``partition-id`` -1 and a
    ``device-id`` >= 0 derived from its file's content, so it keeps its key
    when its SuperNode restarts with another node id. The key is then
    ``device-<device-id in hex>``, and ``node-<node_id>`` for a reply with
    neither id.
    """
    partition_id = int(metrics["partition-id"])
    if partition_id >= 0:
        return str(partition_id)
    device_id = int(metrics.get("device-id", -1))
    if device_id >= 0:
        return f"device-{device_id:x}"
    return f"node-{node_id}"


def labels_summary(
    sizes: PoolSizes, client_stats: Mapping[str, Mapping[str, float]]
) -> tuple[int, float]:
    """Return the labels bought so far and the labeled share of all clients' pools.

    The share is (labeled records of every client) / (pool records of every
    client). A client that has reported counts with the sizes of its last
    reply and the others with their initial sizes, so clients that were not
    sampled yet still count. A device (a key that is not a partition id)
    adds the sizes of its last reply. Once a device has replied, partitions
    that have not replied are left out, because a site of devices alone
    still has ``num-clients`` >= 1 partitions that no SuperNode serves.

    NOTE: with devices the share is an estimate until every node has
    replied once: the server cannot know a device's pool sizes, or which
    partitions some SuperNode serves, before that.

    Parameters
    ----------
    sizes : PoolSizes
        Output of :func:`initial_pool_sizes`.
    client_stats : Mapping[str, Mapping[str, float]]
        Latest reply per :func:`client_stats_key` with
        ``labels-queried-total``, ``labeled-pool-size`` and ``pool-size``.
    """
    labeled = sizes.labeled.astype(np.float64)
    rows = sizes.rows.astype(np.float64)
    reported = np.zeros(len(rows), dtype=bool)
    device_labeled = 0.0
    device_rows = 0.0
    labels_bought = 0
    for key, stats in client_stats.items():
        labels_bought += int(stats["labels-queried-total"])
        if key.isdigit() and int(key) < len(rows):
            labeled[int(key)] = stats["labeled-pool-size"]
            rows[int(key)] = stats["pool-size"]
            reported[int(key)] = True
        else:
            device_labeled += stats["labeled-pool-size"]
            device_rows += stats["pool-size"]
    if device_rows:
        labeled[~reported] = 0.0
        rows[~reported] = 0.0
    total_rows = rows.sum() + device_rows
    total_labeled = labeled.sum() + device_labeled
    return labels_bought, (float(total_labeled / total_rows) if total_rows else float("nan"))
