"""Node identities, and seeded sampling and aggregation in their order whatever the node ids."""

import itertools
import logging
import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from metals.common.node_identity import IDENTITY_RECORD_KEY, NodeIdentity
from metals.server.grid import PollingGrid
from metals.server.node_registry import NodeRegistry
from metals.server.sampling import TooFewNodesError, connected_nodes, sample_node_ids
from metals.server.strategy import REQUIRED_TRAIN_METRICS, MetalsFedAvg, MetalsFedProx

REFERENCE = ArrayRecord({"w": Array(np.zeros(4, np.float32))})


class _Grid:
    """Grid stand-in whose nodes reply to a query with an identity, an error, or nothing.

    ``identities`` maps node id to a NodeIdentity, ``"error"`` or None (no reply).
    """

    def __init__(self, identities):
        self.identities = dict(identities)
        self.queried = []

    def get_node_ids(self):
        return set(self.identities)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            node_id = message.metadata.dst_node_id
            self.queried.append(node_id)
            identity = self.identities[node_id]
            if identity is None:
                continue
            if identity == "error":
                replies.append(Message(Error(code=0, reason="no query handler"), reply_to=message))
            else:
                content = RecordDict({IDENTITY_RECORD_KEY: identity.to_record()})
                replies.append(Message(content, reply_to=message))
        return replies


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


def _partitions(node_ids):
    return {node_id: NodeIdentity(partition_id=i) for i, node_id in enumerate(node_ids)}


def _random_node_ids(generator_seed, count):
    generator = random.Random(generator_seed)
    return [generator.getrandbits(63) for _ in range(count)]


def test_refresh_orders_partitions_devices_unknown():
    # Prepare: node ids in another order than the identities.
    grid = _Grid(
        {
            50: NodeIdentity(device_id=7),
            40: NodeIdentity(partition_id=1),
            30: NodeIdentity(partition_id=0),
            20: NodeIdentity(device_id=3),
            10: "error",
        }
    )
    registry = NodeRegistry()

    # Execute
    registry.refresh(grid, timeout=1.0)
    order = registry.sorted(grid.get_node_ids())

    # Assert
    assert order == [30, 40, 20, 50, 10]
    assert [registry.name(node_id) for node_id in order] == [
        "partition-0",
        "partition-1",
        "device-3",
        "device-7",
        "node-10",
    ]


class _KnowingGrid(PollingGrid):
    """A polling grid with the identities of some nodes at hand, as in a simulation."""

    def __init__(self, identities, known):
        super().__init__(_Grid(identities))
        self.known = dict(known)

    def local_identities(self, node_ids, timeout):
        return {node_id: self.known[node_id] for node_id in node_ids if node_id in self.known}

    def send_and_receive(self, messages, *, timeout=None):
        return self._grid.send_and_receive(messages, timeout=timeout)


def test_refresh_queries_unknown_nodes_only():
    # Prepare: the grid has the identities of nodes 7 and 9; node 8 needs a query.
    identities = {
        7: NodeIdentity(partition_id=0),
        8: NodeIdentity(partition_id=1),
        9: NodeIdentity(partition_id=2),
    }
    grid = _KnowingGrid(identities, {7: identities[7], 9: identities[9]})
    registry = NodeRegistry()

    # Execute
    registry.refresh(grid, timeout=1)

    # Assert
    assert grid._grid.queried == [8]
    assert registry.sorted({7, 8, 9}) == [7, 8, 9]


def test_refresh_queries_each_node_once():
    grid = _Grid({1: NodeIdentity(partition_id=0), 2: NodeIdentity(partition_id=1)})
    registry = NodeRegistry()
    registry.refresh(grid, timeout=1.0)
    first_queries = list(grid.queried)

    registry.refresh(grid, timeout=1.0)
    grid.identities[3] = NodeIdentity(partition_id=2)
    registry.refresh(grid, timeout=1.0)

    assert sorted(first_queries) == [1, 2]
    assert grid.queried[len(first_queries) :] == [3]
    assert registry.name(3) == "partition-2"


@pytest.mark.parametrize("failure", ["error", None], ids=["error-reply", "no-reply"])
def test_failed_query_retried_and_logged(failure, caplog):
    # Prepare: node 5 fails its first query.
    grid = _Grid({4: NodeIdentity(partition_id=0), 5: failure})
    registry = NodeRegistry()
    with caplog.at_level(logging.WARNING, logger="metals.server.node_registry"):
        registry.refresh(grid, timeout=1.0)

    # Execute: it replies on the next refresh.
    grid.identities[5] = NodeIdentity(partition_id=1)
    registry.refresh(grid, timeout=1.0)

    # Assert
    assert grid.queried.count(5) == 2
    assert registry.name(5) == "partition-1"
    assert any("node 5" in record.getMessage() for record in caplog.records)


def test_invalid_identity_record_logged(caplog):
    class _BadGrid(_Grid):
        def send_and_receive(self, messages, *, timeout=None):
            return [Message(RecordDict(), reply_to=message) for message in messages]

    registry = NodeRegistry()

    with caplog.at_level(logging.WARNING, logger="metals.server.node_registry"):
        registry.refresh(_BadGrid({9: None}), timeout=1.0)

    assert registry.name(9) == "node-9"
    assert any("no valid identity" in record.getMessage() for record in caplog.records)


def test_reconnected_node_no_duplicate(caplog):
    # Prepare: the node of partition 2 reconnects under a new node id.
    grid = _Grid({1: NodeIdentity(partition_id=2)})
    registry = NodeRegistry()
    registry.refresh(grid, timeout=1.0)
    grid.identities = {6: NodeIdentity(partition_id=2)}

    # Execute
    with caplog.at_level(logging.WARNING, logger="metals.server.node_registry"):
        registry.refresh(grid, timeout=1.0)

    # Assert
    assert registry.name(6) == "partition-2"
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_duplicate_identity_logged(caplog):
    grid = _Grid({1: NodeIdentity(partition_id=2), 2: NodeIdentity(partition_id=2)})

    with caplog.at_level(logging.WARNING, logger="metals.server.node_registry"):
        NodeRegistry().refresh(grid, timeout=1.0)

    assert any("partition-2" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "record",
    [
        {"partition-id": 1, "device-id": 5},
        {"partition-id": -1, "device-id": -1},
        {"partition-id": "1", "device-id": -1},
        {"device-id": 5},
    ],
    ids=["both", "neither", "text", "missing"],
)
def test_invalid_identity_rejected(record):
    with pytest.raises(ValueError, match="invalid node identity"):
        NodeIdentity.from_record(record)


def _strategy(registry, strategy_class=MetalsFedAvg, seed=0, fraction_train=0.3):
    extra = {"proximal_mu": 0.1} if strategy_class is MetalsFedProx else {}
    return strategy_class(
        fraction_train=fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=len(registry.identities),
        reference_arrays=REFERENCE,
        min_valid_fraction=0.5,
        node_registry=registry,
        seed=seed,
        node_timeout=0.0,
        **extra,
    )


def _sampled_partitions(seed, node_ids, strategy_class=MetalsFedAvg):
    """Return the names of the nodes one round samples, 3 of 10, for a strategy seed."""
    grid = _Grid(_partitions(node_ids))
    registry = NodeRegistry()
    registry.refresh(grid, timeout=1.0)
    strategy = _strategy(registry, strategy_class, seed)
    strategy.configure_train(1, REFERENCE, ConfigRecord(), grid)
    return [registry.name(node_id) for node_id in strategy.sampled_nodes]


@pytest.mark.parametrize("strategy_class", [MetalsFedAvg, MetalsFedProx])
def test_sampling_ignores_node_ids(strategy_class):
    # Prepare: two runs whose nodes got other random ids for the same partitions.
    first_ids = _random_node_ids(1, 10)
    second_ids = _random_node_ids(2, 10)

    # Execute
    first = _sampled_partitions(11, first_ids, strategy_class)
    second = _sampled_partitions(11, second_ids, strategy_class)

    # Assert
    assert len(first) == 3
    assert first == second


def test_sampling_ignores_global_random():
    node_ids = _random_node_ids(1, 10)
    random.seed(1)
    first = _sampled_partitions(11, node_ids)

    random.seed(2)
    second = _sampled_partitions(11, node_ids)

    assert first == second


def test_sampling_follows_seed():
    node_ids = _random_node_ids(1, 10)

    with_seed_11 = _sampled_partitions(11, node_ids)
    with_seed_12 = _sampled_partitions(12, node_ids)

    assert with_seed_11 != with_seed_12


@pytest.mark.parametrize(
    ("num_nodes", "fraction", "min_nodes", "expected"),
    [(10, 0.3, 1, 3), (10, 0.05, 2, 2), (3, 1.0, 1, 3), (4, 0.5, 1, 2)],
)
def test_sample_size_follows_fraction(num_nodes, fraction, min_nodes, expected):
    node_ids = list(range(num_nodes))

    sampled = sample_node_ids(node_ids, fraction, min_nodes, random.Random(0))

    assert len(sampled) == expected
    assert len(set(sampled)) == expected
    assert set(sampled) <= set(node_ids)


def test_sample_more_than_connected_rejected():
    with pytest.raises(TooFewNodesError, match="cannot sample 4 nodes from 3"):
        sample_node_ids([1, 2, 3], 0.5, 4, random.Random(0))


def test_too_few_connected_nodes_rejected():
    registry = NodeRegistry()

    with pytest.raises(TooFewNodesError, match="only 2 of 3 required nodes"):
        connected_nodes(_Grid(_partitions([5, 6])), registry, needed=3, timeout=0.0)


def test_connected_nodes_waits_for_late_node():
    # Prepare: the third node connects after the first check.
    class _LateGrid(_Grid):
        def __init__(self, identities):
            super().__init__(identities)
            self.checks = 0

        def get_node_ids(self):
            self.checks += 1
            return set(self.identities) if self.checks > 1 else {5, 6}

    registry = NodeRegistry()
    registry.refresh(_Grid(_partitions([7, 6, 5])), timeout=1.0)
    grid = _LateGrid(_partitions([7, 6, 5]))

    # Execute
    node_ids = connected_nodes(grid, registry, needed=3, timeout=10.0)

    # Assert: in partition order, whatever the node ids.
    assert node_ids == [7, 6, 5]


def test_fedprox_messages_carry_round_and_mu():
    # Prepare
    grid = _Grid(_partitions([5, 6, 7]))
    registry = NodeRegistry()
    registry.refresh(grid, timeout=1.0)
    strategy = _strategy(registry, MetalsFedProx, fraction_train=1.0)

    # Execute
    messages = list(strategy.configure_train(4, REFERENCE, ConfigRecord(), grid))

    # Assert
    assert sorted(message.metadata.dst_node_id for message in messages) == [5, 6, 7]
    assert all(message.metadata.message_type == "train" for message in messages)
    config = messages[0].content["config"]
    assert config["server-round"] == 4
    assert config["proximal-mu"] == 0.1
    assert messages[0].content["arrays"] is REFERENCE


def _train_reply(node_id, value):
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    metrics = MetricRecord({key: 1.0 for key in REQUIRED_TRAIN_METRICS})
    arrays = ArrayRecord({"w": Array(np.full(4, value, np.float32))})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request)


def test_aggregation_same_for_any_arrival_order():
    # Prepare: float32 sums of these values depend on the order of addition.
    values = {22: np.float32(1e8), 33: np.float32(-1e8), 11: np.float32(1.0)}
    registry = NodeRegistry()
    registry.refresh(
        _Grid(
            {
                22: NodeIdentity(partition_id=0),
                33: NodeIdentity(partition_id=1),
                11: NodeIdentity(partition_id=2),
            }
        ),
        timeout=1.0,
    )
    strategy = MetalsFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=1,
        reference_arrays=REFERENCE,
        min_valid_fraction=0.5,
        node_registry=registry,
    )
    strategy.sampled_nodes = list(values)
    orders = list(itertools.permutations(values))
    flower_sums = {
        aggregate_arrayrecords(
            [_train_reply(node_id, values[node_id]).content for node_id in order], "num-examples"
        )["w"].numpy()[0]
        for order in orders
    }

    # Execute
    results = []
    for order in orders:
        arrays, _ = strategy.aggregate_train(
            1, [_train_reply(node_id, values[node_id]) for node_id in order]
        )
        results.append(arrays["w"].numpy())

    # Assert: Flower's sum depends on the order, the strategy's does not.
    assert len(flower_sums) > 1
    for result in results[1:]:
        assert result.tobytes() == results[0].tobytes()
    assert list(strategy.client_metrics) == [22, 33, 11]
