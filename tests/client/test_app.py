"""The ClientApp's handlers called directly, with real NSL-KDD partitions."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from metals.client.app import app
from metals.client.pools import load_pools
from metals.common.data import prepare_dataset
from metals.common.model import build_model
from metals.common.runconfig import validate_run_config


@pytest.fixture(scope="module")
def run_config(data_dir):
    return validate_run_config(
        {
            "dataset": "nsl_kdd",
            "data-dir": str(data_dir),
            "num-clients": 4,
            "local-epochs": 1,
            "query-fraction": 0.1,
            "al-strategy": "margin",
        }
    )


@pytest.fixture(scope="module")
def global_arrays(run_config):
    prepared = prepare_dataset("nsl_kdd", run_config["data-dir"])
    model = build_model(prepared.x_train.shape[1], len(prepared.class_names), (90, 90), seed=0)
    return ArrayRecord(model.state_dict())


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


def _context(partition_id: int = 1) -> Context:
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )


def _train_message(arrays, config, server_round: int) -> Message:
    record = ConfigRecord({**config, "server-round": server_round})
    return Message(
        RecordDict({"arrays": arrays, "config": record}), dst_node_id=101, message_type="train"
    )


def test_train_reply_has_weights_and_metrics(run_config, global_arrays):
    reply = app(_train_message(global_arrays, run_config, 1), _context())

    metrics = reply.content["metrics"]
    assert set(reply.content["arrays"].keys()) == set(global_arrays.keys())
    assert metrics["labels-queried"] > 0
    assert metrics["labels-queried-total"] == metrics["labels-queried"]
    assert metrics["num-examples"] == metrics["labeled-pool-size"]
    assert 0.0 <= metrics["trained-accuracy"] <= 1.0


def test_labels_bought_kept_next_round(run_config, global_arrays):
    # Prepare
    context = _context()

    # Execute
    first = app(_train_message(global_arrays, run_config, 1), context)
    labeled_after_first = load_pools(context.state).labeled.copy()
    second = app(_train_message(first.content["arrays"], run_config, 2), context)
    labeled_after_second = load_pools(context.state).labeled

    # Assert
    assert np.isin(labeled_after_first, labeled_after_second).all()
    total = first.content["metrics"]["labels-queried"] + second.content["metrics"]["labels-queried"]
    assert second.content["metrics"]["labels-queried-total"] == total
    assert (
        len(labeled_after_second)
        == len(labeled_after_first) + second.content["metrics"]["labels-queried"]
    )


def test_classical_mode_queries_nothing(run_config, global_arrays):
    config = {**run_config, "mode": "classical"}

    reply = app(_train_message(global_arrays, config, 1), _context())

    metrics = reply.content["metrics"]
    assert metrics["labels-queried"] == 0
    assert metrics["labeled-pool-size"] == metrics["pool-size"]


def test_evaluate_reports_local_accuracy(run_config, global_arrays):
    record = ConfigRecord({**run_config, "server-round": 1})
    msg = Message(
        RecordDict({"arrays": global_arrays, "config": record}),
        dst_node_id=101,
        message_type="evaluate",
    )

    reply = app(msg, _context())

    assert reply.content["metrics"]["num-examples"] > 0
    assert 0.0 <= reply.content["metrics"]["accuracy"] <= 1.0


def test_train_without_partition_fails_clearly(run_config, global_arrays):
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})

    with pytest.raises(Exception, match="partition-id"):
        app(_train_message(global_arrays, run_config, 1), context)
