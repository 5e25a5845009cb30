"""Waiting for replies on a PollingGrid: every reply, the timeout, the interval, and stopping."""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from metals.common.node_identity import NodeIdentity
from metals.server.grid import PollingGrid
from metals.simulation import NodePartitions, PushedNodes, RunInterrupted
from metals.simulation_grid import InterruptibleGrid


class _Grid:
    """Grid stand-in: message ``i`` gets its reply on the ``delays[i]``-th pull, or never (None)."""

    def __init__(self, delays):
        self.delays = list(delays)
        self.pulls = 0
        self.pushed = []

    def push_messages(self, messages):
        self.pushed = [f"m{i}" for i, _ in enumerate(messages)]
        return list(self.pushed)

    def pull_messages(self, message_ids):
        self.pulls += 1
        ready = []
        for i, message_id in enumerate(self.pushed):
            if message_id in message_ids and self.delays[i] is not None:
                if self.delays[i] <= self.pulls:
                    ready.append(
                        SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=message_id))
                    )
        return ready


def test_send_and_receive_returns_every_reply_once():
    # Prepare: three messages get their replies on the first, second and fourth pull.
    grid = _Grid([1, 2, 4])
    polling = PollingGrid(grid, poll_seconds=0.001)

    # Execute
    replies = list(polling.send_and_receive(["a", "b", "c"], timeout=5))

    # Assert: each reply once, in arrival order, and no pull after the last one.
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0", "m1", "m2"]
    assert grid.pulls == 4


def test_timeout_returns_replies_so_far():
    # Prepare: the second message never gets a reply.
    grid = _Grid([1, None])
    polling = PollingGrid(grid, poll_seconds=0.01)

    # Execute
    started = time.monotonic()
    replies = list(polling.send_and_receive(["a", "b"], timeout=0.2))
    elapsed = time.monotonic() - started

    # Assert
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0"]
    assert 0.2 <= elapsed < 5


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="poll_seconds must be positive, got 0"):
        PollingGrid(_Grid([]), poll_seconds=0)


def test_interruptible_grid_stops_waiting_when_stop_is_set(tmp_path: Path):
    # Prepare: no reply ever comes; stop is set from another thread.
    stop = threading.Event()
    grid = InterruptibleGrid(_Grid([None]), stop, tmp_path, poll_seconds=0.01)
    threading.Timer(0.1, stop.set).start()

    # Execute and assert: the wait ends with RunInterrupted long before the timeout.
    started = time.monotonic()
    with pytest.raises(RunInterrupted):
        grid.send_and_receive(["a"], timeout=60)
    assert time.monotonic() - started < 30


def test_interruptible_grid_records_pushed_nodes(tmp_path: Path):
    # Prepare
    pushed = PushedNodes()
    grid = InterruptibleGrid(_Grid([1, 1]), threading.Event(), tmp_path, pushed=pushed)
    messages = (SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node)) for node in (7, 9))

    # Execute
    message_ids = grid.push_messages(messages)

    # Assert
    assert list(message_ids) == ["m0", "m1"]
    assert pushed.take(timeout=0) == {7, 9}
    assert pushed.take(timeout=0) == set()


def test_interruptible_grid_pulls_when_replied(tmp_path: Path):
    # Prepare: replies come on the second pull, and the reply signal is set,
    # so the grid pulls again without waiting out its hour-long interval.
    replied = threading.Event()
    replied.set()
    grid = InterruptibleGrid(
        _Grid([2]), threading.Event(), tmp_path, poll_seconds=3600, replied=replied
    )

    # Execute
    replies = grid.send_and_receive(["a"], timeout=60)

    # Assert
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0"]
    assert not replied.is_set()


def test_grid_identities_from_partitions(tmp_path: Path):
    # Prepare: the runtime gave node 11 partition 0 and node 42 partition 1.
    partitions = NodePartitions()
    partitions.set({11: 0, 42: 1})
    grid = InterruptibleGrid(_Grid([]), threading.Event(), tmp_path, partitions=partitions)

    # Execute
    identities = grid.local_identities([42, 11, 99], timeout=1)

    # Assert: node 99 has no partition, so it is left to the query.
    assert identities == {11: NodeIdentity(partition_id=0), 42: NodeIdentity(partition_id=1)}


def test_grid_without_partitions_has_none(tmp_path: Path):
    # Prepare
    simulation_grid = InterruptibleGrid(_Grid([]), threading.Event(), tmp_path)
    deployment_grid = PollingGrid(_Grid([]))

    # Execute
    known = [
        grid.local_identities([1, 2], timeout=1) for grid in (simulation_grid, deployment_grid)
    ]

    # Assert
    assert known == [{}, {}]
