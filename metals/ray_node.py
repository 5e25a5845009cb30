"""A leaner start of the local Ray instance that a simulation runs on.

``ray.init`` starts a head node with processes that a one-machine
simulation never uses, and it checks that the raylet is up by querying
the GCS once a second. :func:`lean_local_node` changes both for one
``ray.init`` call, through Ray's private ``Node`` class. When that class has
other method signatures than the ones checked here, nothing changes and
Ray starts as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from metals.simulation import parameter_names

logger = logging.getLogger(__name__)

# Seconds between two queries of the GCS for the raylet's registration. Ray
# queries once a second, so a raylet that is ready after 0.8 s is seen at
# 1.1 s, and one that needs 1.2 s on a loaded machine at 2.1 s.
REGISTRATION_POLL_SECONDS = 0.01
# After this long, the wait gives up and leaves the error to Ray's own wait.
REGISTRATION_TIMEOUT_SECONDS = 30.0

# Parameter names of the Node methods this module replaces or wraps.
_NODE_METHODS = {
    "start_monitor": ["self"],
    "start_log_monitor": ["self"],
    "start_api_server": ["self", "include_dashboard", "raise_on_failure"],
    "start_ray_processes": ["self"],
}


def _skip_monitor(node: Any) -> None:
    """Skip ``Node.start_monitor``, because a one-machine instance never scales."""
    logger.debug("Ray's autoscaler monitor is not started")


def _skip_log_monitor(node: Any) -> None:
    """Skip ``Node.start_log_monitor`` when the workers' output stays in files."""
    logger.debug("Ray's log monitor is not started")


def _skip_api_server(node: Any, *, include_dashboard: bool | None, raise_on_failure: bool) -> None:
    """Skip ``Node.start_api_server``, so the node's dashboard URL stays None."""
    logger.debug("Ray's dashboard server is not started")


def wait_for_registration(node: Any, timeout: float = REGISTRATION_TIMEOUT_SECONDS) -> bool:
    """Wait until the GCS lists ``node`` as alive, querying every ``REGISTRATION_POLL_SECONDS``.

    Parameters
    ----------
    node : ray._private.node.Node
        A node whose GCS and raylet have been started.
    timeout : float, default=REGISTRATION_TIMEOUT_SECONDS
        Seconds to wait at most.

    Returns
    -------
    bool
        True once the node is listed, False when ``timeout`` passed first.
    """
    from ray.core.generated import gcs_pb2

    alive = gcs_pb2.GcsNodeInfo.ALIVE
    client = node.get_gcs_client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            nodes = client.get_all_node_info(timeout=1)
        except Exception as error:  # noqa: BLE001 - Ray's own wait then reports the failure
            logger.debug("GCS node query for node %s failed: %s", node.node_id, error)
            return False
        if any(
            node_id.hex() == node.node_id and info.state == alive for node_id, info in nodes.items()
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(REGISTRATION_POLL_SECONDS)


@contextmanager
def lean_local_node(*, keep_log_monitor: bool) -> Iterator[bool]:
    """Start no autoscaler monitor, dashboard server or log monitor in the block.

    A local Ray instance started inside the block also returns from
    ``ray.init`` as soon as its raylet has registered, instead of at the
    next full second of Ray's own wait.

    - The autoscaler monitor adds or removes nodes; one machine has no
      other nodes. ``ray.shutdown`` also waited 1 s for it to exit.
    - The dashboard server, without the dashboard, only reports usage
      statistics, and ``ray.init`` waited for it before it started the
      raylet.
    - The log monitor copies the workers' output to the driver. Without it,
      the output stays in the session's log files.

    On a 2-core machine these three Python processes took about 1.2 s of CPU
    while Ray started, beside the agents, the workers and the imports of the
    run.

    Parameters
    ----------
    keep_log_monitor : bool
        Start the log monitor as usual, for runs that show the workers' output.

    Yields
    ------
    bool
        True when the changes apply, False when Ray's ``Node`` has other
        method signatures and starts unchanged.
    """
    from ray._private import node as ray_node

    node_class = ray_node.Node
    originals = {name: getattr(node_class, name, None) for name in _NODE_METHODS}
    mismatched = [
        name
        for name, expected in _NODE_METHODS.items()
        if parameter_names(originals[name]) != expected
    ]
    if mismatched:
        logger.debug("Ray's Node methods %s differ here, so Ray starts unchanged", mismatched)
        yield False
        return

    start_ray_processes = originals["start_ray_processes"]

    def start_and_wait(node: Any) -> None:
        start_ray_processes(node)
        if not wait_for_registration(node):
            logger.debug("the raylet has not registered yet; Ray's own wait takes over")

    replacements: dict[str, Callable[..., None]] = {
        "start_monitor": _skip_monitor,
        "start_api_server": _skip_api_server,
        "start_ray_processes": start_and_wait,
    }
    if not keep_log_monitor:
        replacements["start_log_monitor"] = _skip_log_monitor
    for name, replacement in replacements.items():
        setattr(node_class, name, replacement)
    try:
        yield True
    finally:
        for name in replacements:
            setattr(node_class, name, originals[name])
