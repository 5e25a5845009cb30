"""The stable identity of each connected node, and a grid view that lists nodes in that order.

Flower 1.42 gives each SuperNode a random 64-bit node id and returns
``Grid.get_node_ids()`` from a set, so the order of node ids, and with it
what ``random.sample`` picks from them, changes between runs even with a
seeded ``random``. The registry queries every node once for its
:class:`~metals.common.node_identity.NodeIdentity`, and
:class:`SortedNodeGrid` lists the connected nodes sorted by it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from metals.common.node_identity import IDENTITY_RECORD_KEY, NodeIdentity

logger = logging.getLogger(__name__)


class NodeRegistry:
    """Identities of the nodes of a run, keyed by Flower node id.

    :meth:`refresh` sends a ``query`` message to each node that has no
    identity yet. A node whose query fails is queried again on the next
    refresh, and until then it sorts after all identified nodes, by node id.
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
        new_nodes = sorted(set(grid.get_node_ids()) - set(self.identities))
        if not new_nodes:
            return
        messages = [
            Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
            for node_id in new_nodes
        ]
        replied = set()
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node_id = reply.metadata.src_node_id
            replied.add(node_id)
            identity = self._read_reply(reply)
            if identity is not None:
                self.identities[node_id] = identity
        for node_id in new_nodes:
            if node_id not in replied:
                logger.warning(
                    "node %d sent no identity within %g s, so it is sampled in node-id order "
                    "until it does and runs with this node are not reproducible",
                    node_id,
                    timeout,
                )
        self._warn_duplicates()
        logger.info(
            "node identities: %s",
            ", ".join(self.name(node_id) for node_id in self.sorted(self.identities)),
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

    def _warn_duplicates(self) -> None:
        """Log each identity that more than one node reports."""
        nodes_by_identity: dict[NodeIdentity, list[int]] = {}
        for node_id, identity in self.identities.items():
            nodes_by_identity.setdefault(identity, []).append(node_id)
        for identity, node_ids in nodes_by_identity.items():
            if len(node_ids) > 1:
                logger.warning(
                    "nodes %s all report %s, so they are ordered by their random node ids. "
                    "Give each node its own partition-id or data-path",
                    sorted(node_ids),
                    identity.name,
                )


class SortedNodeGrid(Grid):
    """A grid whose :meth:`get_node_ids` returns the connected nodes sorted by identity.

    Every other method is the wrapped grid's. Flower's ``sample_nodes`` then
    draws from a list in the same order on every run.

    Parameters
    ----------
    grid : Grid
        Grid to wrap.
    registry : NodeRegistry
        Identities to sort by.
    """

    def __init__(self, grid: Grid, registry: NodeRegistry) -> None:
        self.grid = grid
        self.registry = registry

    def get_node_ids(self) -> list[int]:
        """Return the wrapped grid's node ids sorted by :meth:`NodeRegistry.sorted`."""
        return self.registry.sorted(self.grid.get_node_ids())

    def set_run(self, run: Run) -> None:
        """Set the run of the wrapped grid."""
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        """Run of the wrapped grid."""
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message with the wrapped grid."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push messages with the wrapped grid."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull messages with the wrapped grid."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send messages and receive the replies with the wrapped grid."""
        return self.grid.send_and_receive(messages, timeout=timeout)
