"""A node's stable identity: its partition id, or the id of its own traffic file.

Flower gives each SuperNode a random node id when it connects, so node ids
differ between runs. The server therefore queries every node for this
identity with a query message, and orders nodes by it when it samples them and when
it sums their replies. The same seed then samples the same partitions and
adds their weights in the same order on every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord

#: Key of the ConfigRecord with the identity in a query reply.
IDENTITY_RECORD_KEY = "identity"
PARTITION_ID_FIELD = "partition-id"
DEVICE_ID_FIELD = "device-id"


@dataclass(frozen=True)
class NodeIdentity:
    """Data source of a node: one partition of the dataset, or one device's traffic file.

    Exactly one of the two ids is >= 0 and the other is -1, as in the
    ``partition-id`` and ``device-id`` metrics of a training reply.

    Attributes
    ----------
    partition_id : int
        Partition of the run's dataset, or -1 for a device.
    device_id : int
        60-bit number from the SHA-256 digest of the device's traffic file
        (``DeviceRecords.device_id``), or -1 for a partition.
    """

    partition_id: int = -1
    device_id: int = -1

    def __post_init__(self) -> None:
        if (self.partition_id >= 0) == (self.device_id >= 0):
            raise ValueError(
                f"invalid node identity: partition-id {self.partition_id} and device-id "
                f"{self.device_id}; exactly one of them must be >= 0 and the other -1"
            )

    @property
    def sort_key(self) -> tuple[int, int]:
        """Order of the node: partitions by id first, then devices by id."""
        if self.partition_id >= 0:
            return (0, self.partition_id)
        return (1, self.device_id)

    @property
    def name(self) -> str:
        """``partition-<id>`` or ``device-<id in hex>``, as the client names itself in logs."""
        if self.partition_id >= 0:
            return f"partition-{self.partition_id}"
        return f"device-{self.device_id:x}"

    def to_record(self) -> ConfigRecord:
        """Return the identity as the ConfigRecord of a query reply."""
        return ConfigRecord(
            {PARTITION_ID_FIELD: self.partition_id, DEVICE_ID_FIELD: self.device_id}
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NodeIdentity:
        """Read an identity from the ConfigRecord of a query reply.

        Raises
        ------
        ValueError
            When a field is missing or not an integer, or both or neither
            id is >= 0.
        """
        values = {}
        for field in (PARTITION_ID_FIELD, DEVICE_ID_FIELD):
            value = record.get(field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(
                    f"invalid node identity {dict(record)}: '{field}' must be an integer, "
                    f"got {value!r}"
                )
            values[field] = value
        return cls(values[PARTITION_ID_FIELD], values[DEVICE_ID_FIELD])
