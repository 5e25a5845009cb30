"""Node sampling that picks the same nodes for the same seed on every run.

Flower 1.42's strategies sample with ``random.sample`` on the global
``random`` generator, from ``Grid.get_node_ids()``, which lists random node
ids in set order. Seeding the global generator does not fix the sample
either, because other code in the server process draws from it at times
that vary. In Flower 1.42 that is the heartbeat and retry jitter, and in
Ray 2.55 the search for a free port. Here the nodes are listed in the order of their
identities and sampled with a generator that only the strategy uses.
"""

from __future__ import annotations

import logging
import random
import time

from flwr.serverapp import Grid

from metals.server.node_registry import NodeRegistry

logger = logging.getLogger(__name__)

# Seconds between two checks for more connected nodes.
_POLL_SECONDS = 0.5


class TooFewNodesError(RuntimeError):
    """Fewer nodes are connected than sampling needs."""


def connected_nodes(grid: Grid, registry: NodeRegistry, needed: int, timeout: float) -> list[int]:
    """Wait until ``needed`` nodes are connected and return them in registry order.

    Parameters
    ----------
    grid : Grid
        Grid connecting to the SuperNodes.
    registry : NodeRegistry
        Identities to sort the node ids by.
    needed : int
        Nodes that must be connected.
    timeout : float
        Seconds to wait for them.

    Raises
    ------
    TooFewNodesError
        When fewer than ``needed`` nodes are connected after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    logged_count = -1
    while True:
        node_ids = registry.sorted(grid.get_node_ids())
        if len(node_ids) >= needed:
            return node_ids
        if time.monotonic() >= deadline:
            raise TooFewNodesError(
                f"only {len(node_ids)} of {needed} required nodes connected within "
                f"{timeout:g} s; start more SuperNodes or lower min-available-nodes"
            )
        if len(node_ids) != logged_count:
            logger.info("waiting for nodes: %d of %d connected", len(node_ids), needed)
            logged_count = len(node_ids)
        time.sleep(_POLL_SECONDS)


def sample_node_ids(
    node_ids: list[int], fraction: float, min_nodes: int, generator: random.Random
) -> list[int]:
    """Sample ``max(int(len(node_ids) * fraction), min_nodes)`` nodes, as Flower 1.42's FedAvg does.

    Parameters
    ----------
    node_ids : list[int]
        Connected nodes in a fixed order (:meth:`NodeRegistry.sorted`).
    fraction : float
        Share of the nodes to sample, in [0, 1].
    min_nodes : int
        Nodes to sample at least.
    generator : random.Random
        Seeded generator that nothing else draws from.

    Returns
    -------
    list[int]
        The sampled node ids, in the order ``generator`` drew them.

    Raises
    ------
    TooFewNodesError
        When ``min_nodes`` exceeds the connected nodes.
    """
    sample_size = max(int(len(node_ids) * fraction), min_nodes)
    if sample_size > len(node_ids):
        raise TooFewNodesError(
            f"cannot sample {sample_size} nodes from {len(node_ids)} connected; "
            "start more SuperNodes or lower the minimum number of nodes"
        )
    return generator.sample(node_ids, sample_size)
