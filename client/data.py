"""Loading a client's partition once per process, keyed by the data settings of the run."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from metals.common.data import (
    ClientPartition,
    PreparedData,
    make_client_partition,
    prepare_dataset,
)

logger = logging.getLogger(__name__)

# Run-config keys that decide which records a client has.
DATA_KEYS = (
    "dataset",
    "data-dir",
    "labels",
    "seed",
    "val-fraction",
    "test-fraction",
    "partition",
    "dirichlet-alpha",
    "initial-labeled-fraction",
    "local-test-fraction",
)


def load_client_partition(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> tuple[ClientPartition, list[str]]:
    """Return this node's partition and the dataset's class names.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Validated run config, as sent by the server.
    node_config : Mapping[str, Any]
        The node's own config: ``partition-id`` and ``num-partitions``.

    Raises
    ------
    ValueError
        When the node config lacks a partition or names one out of range.
    """
    if "data-path" in node_config:
        # TODO: read a device's own traffic file through the saved preprocessor.
        raise NotImplementedError(
            f"node config 'data-path' ({node_config['data-path']!r}) is not supported yet; "
            "start the node with 'partition-id=<i> num-partitions=<n>' instead"
        )
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError(
            f"node config {dict(node_config)} is missing 'partition-id' or 'num-partitions'; "
            "start the node with --node-config 'partition-id=<i> num-partitions=<n>'"
        )
    partition_id = int(node_config["partition-id"])
    num_partitions = int(node_config["num-partitions"])
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"invalid partition-id {partition_id}: must be in 0..{num_partitions - 1} "
            f"for num-partitions {num_partitions}"
        )
    settings = tuple((key, run_config[key]) for key in DATA_KEYS)
    return _cached_partition(settings, partition_id, num_partitions)


# Keys of DATA_KEYS that decide the prepared dataset (the rest only the partition).
_PREPARE_KEYS = ("dataset", "data-dir", "labels", "seed", "val-fraction", "test-fraction")


@functools.lru_cache(maxsize=2)
def _cached_prepared(settings: tuple[tuple[str, Any], ...]) -> PreparedData:
    """Prepare the dataset (from the disk cache after the first time); cached per process.

    One simulated client process serves many partitions in turn, so the
    prepared arrays (memory-mapped from the disk cache) are kept here
    rather than re-read, re-hashed and re-wrapped for every partition.
    """
    config = dict(settings)
    return prepare_dataset(
        str(config["dataset"]),
        str(config["data-dir"]) or None,
        labels=str(config["labels"]),
        seed=int(config["seed"]),
        val_fraction=float(config["val-fraction"]),
        test_fraction=float(config["test-fraction"]),
    )


@functools.lru_cache(maxsize=4)
def _cached_partition(
    settings: tuple[tuple[str, Any], ...], partition_id: int, num_partitions: int
) -> tuple[ClientPartition, list[str]]:
    """Cut this client's partition of the prepared dataset; cached per process."""
    config = dict(settings)
    prepared = _cached_prepared(tuple((key, config[key]) for key in _PREPARE_KEYS))
    partition = make_client_partition(
        prepared,
        partition_id,
        num_partitions,
        method=str(config["partition"]),
        alpha=float(config["dirichlet-alpha"]),
        seed=int(config["seed"]),
        labeled_fraction=float(config["initial-labeled-fraction"]),
        local_test_fraction=float(config["local-test-fraction"]),
    )
    logger.info(
        "partition %d/%d of %s: %d records, %d labeled, %d unlabeled, %d local test",
        partition_id,
        num_partitions,
        prepared.name,
        len(partition.x),
        len(partition.labeled),
        len(partition.unlabeled),
        len(partition.test),
    )
    return partition, list(prepared.class_names)
