"""The ServerApp's grid in a metals simulation: interruptible, and woken by the runtime.

This module imports Flower, so it is kept apart from
:mod:`metals.simulation`, which ``metals run`` imports before Ray starts.
Flower then loads in the thread that imports while Ray starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from metals.common.node_identity import NodeIdentity
from metals.server.grid import SIMULATION_POLL_SECONDS, PollingGrid
from metals.simulation import (
    RUNTIME_QUEUE_WAIT_SECONDS,
    NodePartitions,
    PushedNodes,
    RunInterrupted,
)


class InterruptibleGrid(PollingGrid):
    """A grid that raises :class:`RunInterrupted` once ``stop`` is set.

    Flower's simulation runs the ServerApp in a non-daemon thread that waits
    for replies up to the round timeout, and it stops the simulation runtime
    only after that thread ends. Checking ``stop`` on every grid call ends the
    ServerApp thread within one poll interval, so Flower then stops the
    runtime and shuts Ray down in its usual order.

    Parameters
    ----------
    grid : Grid
        Grid that Flower passes to the ServerApp.
    stop : threading.Event
        Set when the run must end.
    run_dir : Path
        Run directory, named in the exception.
    poll_seconds : float, default=SIMULATION_POLL_SECONDS
        Seconds between two pulls of replies.
    pushed : PushedNodes | None, default=None
        Records the destination nodes of every push, so that
        :func:`forward_messages` hands the new messages to the clients at once.
    replied : threading.Event | None, default=None
        Set by :func:`store_replies` after each reply it stores. With it,
        the grid pulls replies as they come, and otherwise every
        ``RUNTIME_QUEUE_WAIT_SECONDS`` instead of every ``poll_seconds``.
    partitions : NodePartitions | None, default=None
        The runtime's partition of each node, which :meth:`local_identities`
        reads.
    """

    def __init__(
        self,
        grid: Grid,
        stop: threading.Event,
        run_dir: Path,
        poll_seconds: float = SIMULATION_POLL_SECONDS,
        pushed: PushedNodes | None = None,
        replied: threading.Event | None = None,
        partitions: NodePartitions | None = None,
    ) -> None:
        super().__init__(grid, poll_seconds)
        self._stop = stop
        self._run_dir = run_dir
        self._pushed = pushed
        self._replied = replied
        self._partitions = partitions

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunInterrupted(self._run_dir)

    def get_node_ids(self) -> Iterable[int]:
        """Return the connected node ids, or raise :class:`RunInterrupted`."""
        self._check_stop()
        return super().get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages``, or raise :class:`RunInterrupted`."""
        self._check_stop()
        messages = list(messages)
        message_ids = super().push_messages(messages)
        if self._pushed is not None:
            self._pushed.add(message.metadata.dst_node_id for message in messages)
        return message_ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull the replies to ``message_ids``, or raise :class:`RunInterrupted`."""
        self._check_stop()
        return super().pull_messages(message_ids)

    def local_identities(self, node_ids: Iterable[int], timeout: float) -> dict[int, NodeIdentity]:
        """Return the identity of each of ``node_ids`` that has a partition in the runtime.

        A simulated node's identity is its partition id, which its ClientApp
        reads from the node config that the runtime builds from the same
        mapping. Looking it up here spares round 1 a query message to every
        node: 100 messages through the actors, 0.2 to 0.3 s on the 2-core
        machine. Nodes missing from the mapping are left to the query.
        """
        if self._partitions is None:
            return {}
        partitions = self._partitions.get(timeout)
        return {
            node_id: NodeIdentity(partition_id=partitions[node_id])
            for node_id in node_ids
            if node_id in partitions
        }

    def wait(self, seconds: float) -> None:
        """Pause between two pulls.

        With ``replied``, the pause ends when a reply is stored, after at most
        ``RUNTIME_QUEUE_WAIT_SECONDS``. Without it, the pause ends when
        ``stop`` is set or after ``seconds``.
        """
        if self._replied is None:
            self._stop.wait(seconds)
        elif self._replied.wait(RUNTIME_QUEUE_WAIT_SECONDS):
            self._replied.clear()


def interruptible_server_app(
    server_app: ServerApp,
    stop: threading.Event,
    run_dir: Path,
    pushed: PushedNodes | None = None,
    on_finished: Callable[[], None] | None = None,
    replied: threading.Event | None = None,
    partitions: NodePartitions | None = None,
) -> ServerApp:
    """Wrap ``server_app`` so that its grid raises :class:`RunInterrupted` once ``stop`` is set.

    ``pushed``, ``replied`` and ``partitions`` go to :class:`InterruptibleGrid`,
    and ``on_finished`` is called once ``server_app`` has returned.
    """
    wrapper = ServerApp()

    @wrapper.main()
    def main(grid: Grid, context: Context) -> None:
        interruptible = InterruptibleGrid(
            grid, stop, run_dir, pushed=pushed, replied=replied, partitions=partitions
        )
        server_app(interruptible, context)
        if on_finished is not None:
            on_finished()

    return wrapper
