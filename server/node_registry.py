"""The stable identity of each connected node, by which the server orders nodes.

Flower 1.42 gives each SuperNode a random 64-bit node id and returns
``Grid.get_node_ids()`` from a set, so neither the ids nor their order are
the same in two runs. The registry queries every node once for its
:class:`~metals.common.node_identity.NodeIdentity` and sorts node ids by it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from metals.common.node_identity import IDENTITY_RECORD_KEY, NodeIdentity
from metals.server.grid import PollingGrid

logger = logging.getLogger(__name__)


class NodeRegistry:
    """Identities of the nodes of a run, keyed by Flower node id.

    :meth:`refresh` takes the identities that the grid provides itself (a
    simulation's grid has each node's partition) and sends a ``query``
    message to each other node that has no identity yet. A node whose query fails is
    queried again on the next refresh, and until then it sorts after all
    identified nodes, by node id.
    """

    def __init__(self) -> None:
        self.identities: dict[int, NodeIdentity] = {}

    def refresh(self, grid: Grid, timeout: float) -> None:
        """Query the connected nodes that have no identity yet and store their replies.

        Parameters
        ----------
        grid : Grid
            Grid connecting to the SuperNodes.
        timeout : float
            Seconds to wait for the replies.
        """
        connected = set(grid.get_node_ids())
        new_nodes = sorted(connected - set(self.identities))
        if not new_nodes:
            return
        if isinstance(grid, PollingGrid):
            self.identities.update(grid.local_identities(new_nodes, timeout))
            new_nodes = [node_id for node_id in new_nodes if node_id not in self.identities]
        if new_nodes:
            self._query(grid, new_nodes, timeout)
        self._warn_duplicates(connected)
        logger.info(
            "connected nodes by identity: %s",
            ", ".join(self.name(node_id) for node_id in self.sorted(connected)),
        )

    def _query(self, grid: Grid, node_ids: list[int], timeout: float) -> None:
        """Send a ``query`` message to each of ``node_ids`` and store the identities replied."""
        messages = [
            Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
            for node_id in node_ids
        ]
        replied = set()
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node_id = reply.metadata.src_node_id
            replied.add(node_id)
            identity = self._read_reply(reply)
            if identity is not None:
                self.identities[node_id] = identity
        for node_id in node_ids:
            if node_id not in replied:
                logger.warning(
                    "node %d sent no identity within %g s, so it is sampled in node-id order "
                    "until it does and runs with this node are not reproducible",
                    node_id,
                    timeout,
                )

    def sort_key(self, node_id: int) -> tuple[int, int]:
        """Return the node's place: its identity's sort key, or after all of them by node id."""
        identity = self.identities.get(node_id)
        if identity is None:
            return (2, node_id)
        return identity.sort_key

    def name(self, node_id: int) -> str:
        """Return ``partition-<id>``, ``device-<hex id>``, or ``node-<node id>`` when unknown."""
        identity = self.identities.get(node_id)
        if identity is None:
            return f"node-{node_id}"
        return identity.name

    def sorted(self, node_ids: Iterable[int]) -> list[int]:
        """Return ``node_ids`` sorted by identity; equal identities are ordered by node id."""
        return sorted(node_ids, key=lambda node_id: (self.sort_key(node_id), node_id))

    def _read_reply(self, reply: Message) -> NodeIdentity | None:
        """Return the identity in a query reply, or None after logging why there is none."""
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning(
                "node %d failed to send its identity (%s), so it is sampled in node-id order "
                "until it does and runs with this node are not reproducible",
                node_id,
                reply.error.reason,
            )
            return None
        try:
            return NodeIdentity.from_record(reply.content.config_records[IDENTITY_RECORD_KEY])
        except (KeyError, ValueError) as error:
            logger.warning(
                "node %d sent no valid identity (%s), so it is sampled in node-id order "
                "until it does. Update its ClientApp if it is older than the server",
                node_id,
                error,
            )
            return None

    def _warn_duplicates(self, connected: set[int]) -> None:
        """Log each identity that more than one connected node reports.

        A node that reconnected under a new node id is not a duplicate of
        its old id, which is no longer connected.
        """
        nodes_by_identity: dict[NodeIdentity, list[int]] = {}
        for node_id in connected & set(self.identities):
            nodes_by_identity.setdefault(self.identities[node_id], []).append(node_id)
        for identity, node_ids in nodes_by_identity.items():
            if len(node_ids) > 1:
                logger.warning(
                    "nodes %s all report %s, so they are ordered by their random node ids. "
                    "Give each node its own partition-id or data-path",
                    sorted(node_ids),
                    identity.name,
                )
