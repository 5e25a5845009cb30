"""A grid wrapper that waits for replies with a pull interval metals chooses.

Flower's own ``send_and_receive`` sleeps between two pulls of replies: 0.1 s
on the simulation's in-memory grid and 3 s on the grid of a deployed
ServerApp. A round's replies are then seen up to that long after the last
client finished, which added 0.05 s to 0.1 s to every simulated round of
about 0.3 s, and up to 3 s to every deployed round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from metals.common.node_identity import NodeIdentity

# Pulls from the in-memory grid of a simulation are a dictionary look-up
# under a lock; pulls of a deployed ServerApp are calls to the SuperLink.
SIMULATION_POLL_SECONDS = 0.005
DEPLOYMENT_POLL_SECONDS = 0.1


class PollingGrid(Grid):
    """Delegate to ``grid``; in ``send_and_receive``, pull replies every ``poll_seconds``.

    Parameters
    ----------
    grid : Grid
        Grid that Flower passes to the ServerApp.
    poll_seconds : float, default=DEPLOYMENT_POLL_SECONDS
        Seconds between two pulls of replies.
    """

    def __init__(self, grid: Grid, poll_seconds: float = DEPLOYMENT_POLL_SECONDS) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds!r}")
        self._grid = grid
        self.poll_seconds = poll_seconds

    def set_run(self, run: object) -> None:
        """Set the run on the wrapped grid."""
        self._grid.set_run(run)  # type: ignore[arg-type]

    @property
    def run(self) -> object:
        """Run information of the wrapped grid."""
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message on the wrapped grid."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Return the ids of the connected nodes."""
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages`` and return their ids."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies to ``message_ids`` that have arrived."""
        return self._grid.pull_messages(message_ids)

    def wait(self, seconds: float) -> None:
        """Pause between two pulls; subclasses may end the pause early."""
        time.sleep(seconds)

    def local_identities(self, node_ids: Iterable[int], timeout: float) -> dict[int, NodeIdentity]:
        """Return the identities of ``node_ids`` that the grid provides without a query.

        A deployed grid has no identities of its own, so this returns an
        empty mapping. The simulation's grid overrides it.
        """
        return {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and pull replies until all arrive or ``timeout`` s pass.

        Returns
        -------
        Iterable[Message]
            The replies that arrived, in arrival order.
        """
        message_ids = list(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.receive(message_ids, deadline=deadline)

    def receive(self, message_ids: Iterable[str], *, deadline: float | None) -> list[Message]:
        """Pull the replies to pushed messages until all arrive or ``deadline`` passes.

        Parameters
        ----------
        message_ids : Iterable[str]
            Ids that :meth:`push_messages` returned.
        deadline : float | None
            ``time.monotonic()`` value after which to stop waiting; None waits
            for every reply.

        Returns
        -------
        list[Message]
            The replies that arrived, in arrival order.
        """
        waiting = set(message_ids)
        replies: list[Message] = []
        while waiting:
            for reply in self.pull_messages(waiting):
                replies.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            self.wait(self.poll_seconds)
        return replies
