"""The identity a node sends in reply to the server's query: its partition or its file's id."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metals.client.device_data import DATA_PATH_KEY, file_sha256
from metals.common.node_identity import NodeIdentity


def device_id_from_digest(content_sha256: str) -> int:
    """Return a device's id from its file's SHA-256 hex digest: the first 60 bits.

    It equals ``DeviceRecords.device_id`` of the same file, so the server
    orders a device by the id that its training replies report.
    """
    return int(content_sha256[:15], 16)


def node_identity(node_config: Mapping[str, Any]) -> NodeIdentity:
    """Return this node's identity from its node config.

    A device (node config ``data-path``) is identified by its file's
    content, so it keeps its identity when the file moves or the SuperNode
    restarts. The file is hashed on each call, which the server makes once
    per node and run.

    Raises
    ------
    ValueError
        When the node config has neither ``data-path`` nor a valid
        ``partition-id`` and ``num-partitions``, or the device's file is not
        found.
    """
    if DATA_PATH_KEY in node_config:
        path = Path(str(node_config[DATA_PATH_KEY])).expanduser().resolve()
        if not path.is_file():
            raise ValueError(
                f"node config '{DATA_PATH_KEY}' names {path}, which is not a file; "
                "restart the SuperNode with the path of the device's traffic file"
            )
        return NodeIdentity(device_id=device_id_from_digest(file_sha256(path)))

    partition_id, _ = read_partition(node_config)
    return NodeIdentity(partition_id=partition_id)


def read_partition(node_config: Mapping[str, Any]) -> tuple[int, int]:
    """Return ``(partition-id, num-partitions)`` from a node config.

    Raises
    ------
    ValueError
        When either key is missing or the partition id is out of range.
    """
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise ValueError(
            f"node config {dict(node_config)} is missing 'partition-id' or 'num-partitions'; "
            "start the node with --node-config 'partition-id=<i> num-partitions=<n>', "
            f"or with '{DATA_PATH_KEY}=<traffic file>' on a device"
        )
    partition_id = int(node_config["partition-id"])
    num_partitions = int(node_config["num-partitions"])
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"invalid partition-id {partition_id}: must be in 0..{num_partitions - 1} "
            f"for num-partitions {num_partitions}"
        )
    return partition_id, num_partitions
