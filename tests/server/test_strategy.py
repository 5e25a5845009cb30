import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from metals.server.strategy import (
    REQUIRED_TRAIN_METRICS,
    MetalsFedAvg,
    MetalsFedProx,
    RoundFailedError,
    build_strategy,
    reply_problem,
    weighted_average,
)

REFERENCE = ArrayRecord(
    {"w": Array(np.zeros((2, 3), np.float32)), "b": Array(np.zeros(2, np.float32))}
)


class _Grid:
    """Grid stand-in that only lists node ids: sampling needs nothing else."""

    def __init__(self, node_ids):
        self.node_ids = node_ids

    def get_node_ids(self):
        return self.node_ids


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


def _metrics(num_examples: int = 10) -> MetricRecord:
    values = {key: 1.0 for key in REQUIRED_TRAIN_METRICS}
    values["num-examples"] = num_examples
    return MetricRecord(values)


def _reply(node_id: int, value: float = 1.0, w_shape=(2, 3), num_examples: int = 10) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    arrays = ArrayRecord(
        {"w": Array(np.full(w_shape, value, np.float32)), "b": Array(np.full(2, value, np.float32))}
    )
    return Message(
        RecordDict({"arrays": arrays, "metrics": _metrics(num_examples)}), reply_to=request
    )


def _error_reply(node_id: int) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    return Message(Error(code=0, reason="client crashed"), reply_to=request)


def _strategy(min_valid_fraction: float = 0.5) -> MetalsFedAvg:
    return MetalsFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=1,
        reference_arrays=REFERENCE,
        min_valid_fraction=min_valid_fraction,
    )


def test_valid_reply_has_no_problem():
    assert reply_problem(_reply(1), REFERENCE) is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_error_reply, "client crashed"),
        (lambda node: _reply(node, value=np.nan), "NaN or Inf"),
        (lambda node: _reply(node, value=np.inf), "NaN or Inf"),
        (lambda node: _reply(node, w_shape=(3, 3)), "shape (3, 3), expected (2, 3)"),
        (lambda node: _reply(node, num_examples=0), "num-examples"),
    ],
    ids=["error", "nan", "inf", "shape", "no-examples"],
)
def test_bad_reply_problem_named(reply, expected, flower_identity):
    problem = reply_problem(reply(3), REFERENCE)

    assert problem is not None
    assert expected in problem


def test_aggregate_leaves_out_bad_replies_and_logs_node(caplog):
    # Prepare
    strategy = _strategy()
    strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([1, 2, 3, 4]))
    replies = [_reply(1, 1.0), _reply(2, 3.0), _reply(3, np.nan), _error_reply(4)]

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert
    assert np.allclose(arrays["w"].numpy(), 2.0)
    assert sorted(strategy.client_metrics) == [1, 2]
    assert "node 3" in caplog.text
    assert "node 4" in caplog.text


def test_weighted_average_same_bits_as_flower():
    # Prepare: uneven weights and values that round differently in float32.
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    generator = np.random.default_rng(3)
    contents = [
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {
                        "w": Array(generator.standard_normal((4, 5)).astype(np.float32)),
                        "b": Array(generator.standard_normal(4).astype(np.float32)),
                    }
                ),
                "metrics": _metrics(num_examples),
            }
        )
        for num_examples in (7, 130, 1, 42)
    ]

    # Execute
    ours = weighted_average(contents, "num-examples")
    flowers = aggregate_arrayrecords(contents, "num-examples")

    # Assert
    assert list(ours.keys()) == list(flowers.keys())
    for key in flowers:
        assert ours[key].numpy().tobytes() == flowers[key].numpy().tobytes()


def test_round_lines_match_deploy_patterns():
    # Prepare: `metals deploy` counts replies from these lines of Flower's logger.
    import logging

    from metals.deploy import _RECEIVED_LINE, _SAMPLED_LINE

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    flower_logger = logging.getLogger("flwr")
    flower_logger.addHandler(handler)
    previous_level = flower_logger.level
    flower_logger.setLevel(logging.INFO)
    strategy = _strategy()
    try:
        # Execute
        strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([1, 2, 3]))
        strategy.aggregate_train(1, [_reply(1), _reply(2), _error_reply(3)])
    finally:
        flower_logger.removeHandler(handler)
        flower_logger.setLevel(previous_level)

    # Assert
    sampled = [int(m.group(1)) for m in map(_SAMPLED_LINE.search, records) if m]
    received = [int(m.group(1)) for m in map(_RECEIVED_LINE.search, records) if m]
    assert sampled == [3]
    assert received == [2]


def test_aggregate_logs_missing_reply_as_timeout(caplog):
    strategy = _strategy(min_valid_fraction=0.5)
    strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([1, 2]))

    strategy.aggregate_train(1, [_reply(1)])

    assert "node 2 sent no reply" in caplog.text


def test_aggregate_fails_round_with_too_few_valid():
    strategy = _strategy(min_valid_fraction=0.75)
    strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([1, 2, 3, 4]))

    with pytest.raises(RoundFailedError, match="2 valid replies from 4 sampled clients, 3 needed"):
        strategy.aggregate_train(1, [_reply(1), _reply(2), _reply(3, np.nan)])


def test_aggregate_fails_round_with_no_reply():
    strategy = _strategy(min_valid_fraction=0.0)
    strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([1, 2]))

    with pytest.raises(RoundFailedError, match="0 valid replies"):
        strategy.aggregate_train(1, [])


def test_configure_train_samples_fraction():
    strategy = MetalsFedAvg(
        fraction_train=0.2,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=10,
        reference_arrays=REFERENCE,
        min_valid_fraction=0.5,
    )

    messages = list(strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid(list(range(10)))))

    assert len(messages) == 2
    assert strategy.sampled_nodes == [m.metadata.dst_node_id for m in messages]


def test_build_strategy_fedprox_sends_mu():
    config = {
        "num-clients": 2,
        "min-available-nodes": 0,
        "fraction-train": 1.0,
        "fraction-evaluate": 0.0,
        "min-valid-fraction": 0.5,
        "strategy": "fedprox",
        "proximal-mu": 0.3,
        "seed": 0,
        "round-timeout": 10.0,
    }
    strategy = build_strategy(config, REFERENCE)

    messages = list(strategy.configure_train(1, REFERENCE, ConfigRecord(), _Grid([5, 6])))

    assert isinstance(strategy, MetalsFedProx)
    assert messages[0].content["config"]["proximal-mu"] == 0.3


def _evaluate_reply(node_id: int, num_examples: int, accuracy: float) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="evaluate")
    metrics = MetricRecord({"num-examples": num_examples, "accuracy": accuracy})
    return Message(RecordDict({"metrics": metrics}), reply_to=request)


def test_aggregate_evaluate_skips_empty_test_split(caplog):
    # Prepare: node 1 has no local test records, so its accuracy is NaN.
    strategy = _strategy()
    replies = [
        _evaluate_reply(1, 0, float("nan")),
        _evaluate_reply(2, 10, 0.8),
        _evaluate_reply(3, 30, 0.4),
    ]
    caplog.set_level("INFO", logger="metals")

    # Execute
    metrics = strategy.aggregate_evaluate(1, replies)

    # Assert: (10 * 0.8 + 30 * 0.4) / 40
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert "node 1" in caplog.text
    assert "local test split is empty" in caplog.text


def test_aggregate_evaluate_all_empty_is_none(caplog):
    strategy = _strategy()
    replies = [_evaluate_reply(1, 0, float("nan")), _evaluate_reply(2, 0, float("nan"))]
    caplog.set_level("INFO", logger="metals")

    metrics = strategy.aggregate_evaluate(1, replies)

    assert metrics is None
    assert "no client evaluated any record" in caplog.text
