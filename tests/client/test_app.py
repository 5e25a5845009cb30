"""The ClientApp's handlers called directly, with real NSL-KDD partitions."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from metals.client.app import app
from metals.client.data import load_client_partition
from metals.client.pool_file import load_pool_file, pool_file_identity
from metals.client.pools import load_pools
from metals.common.data import make_client_partition, prepare_dataset
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


def _context(partition_id: int = 1, **node_config) -> Context:
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": 4, **node_config},
        state=RecordDict(),
        run_config={},
    )


def _client_partition(config, partition_id):
    node_config = {"partition-id": partition_id, "num-partitions": 4}
    return load_client_partition(config, node_config)[0]


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


def test_label_budget_stops_buying(run_config, global_arrays):
    # Prepare: 20% initial labels and 10% of the unlabeled pool queried per
    # round reach 28% in round 1, so the 30% budget cuts round 2 short.
    config = {**run_config, "label-budget": 0.3}
    context = _context()
    arrays = global_arrays

    # Execute
    bought = []
    for server_round in range(1, 5):
        reply = app(_train_message(arrays, config, server_round), context)
        arrays = reply.content["arrays"]
        bought.append(reply.content["metrics"]["labels-queried"])
    metrics = reply.content["metrics"]

    # Assert
    assert bought[0] > bought[1] > 0
    assert bought[2:] == [0, 0]
    assert metrics["labeled-pool-size"] == int(0.3 * metrics["pool-size"])
    assert metrics["num-examples"] == metrics["labeled-pool-size"]


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


def test_evaluate_empty_test_split_has_no_examples(run_config, global_arrays):
    config = {**run_config, "local-test-fraction": 0.0}
    record = ConfigRecord({**config, "server-round": 1})
    msg = Message(
        RecordDict({"arrays": global_arrays, "config": record}),
        dst_node_id=101,
        message_type="evaluate",
    )

    reply = app(msg, _context())

    assert reply.content["metrics"]["num-examples"] == 0
    assert np.isnan(reply.content["metrics"]["accuracy"])


def test_train_writes_pool_file_in_run_dir(run_config, global_arrays, tmp_path):
    # Prepare
    config = {**run_config, "run-dir": str(tmp_path)}
    context = _context()

    # Execute
    app(_train_message(global_arrays, config, 1), context)

    # Assert
    in_memory = load_pools(context.state)
    path = tmp_path / "client-state" / "partition-1.npz"
    partition = _client_partition(config, 1)
    on_disk = load_pool_file(path, pool_file_identity(config, context.node_config, 1), partition)
    assert on_disk is not None
    assert on_disk.labeled.tolist() == in_memory.labeled.tolist()
    assert on_disk.labels.tolist() == in_memory.labels.tolist()
    assert on_disk.unlabeled.tolist() == in_memory.unlabeled.tolist()
    assert on_disk.labels_queried_total == in_memory.labels_queried_total
    assert on_disk.trained_round == 1


def test_restarted_client_keeps_bought_labels(run_config, global_arrays, tmp_path):
    # Prepare: two rounds, then a new process (empty context.state) gets round 3.
    config = {**run_config, "run-dir": str(tmp_path)}
    first_context = _context()
    app(_train_message(global_arrays, config, 1), first_context)
    app(_train_message(global_arrays, config, 2), first_context)
    before = load_pools(first_context.state)

    # Execute
    restarted = _context()
    reply = app(_train_message(global_arrays, config, 3), restarted)

    # Assert
    after = load_pools(restarted.state)
    metrics = reply.content["metrics"]
    assert before.labels_queried_total > 0
    assert (
        metrics["labels-queried-total"] == before.labels_queried_total + metrics["labels-queried"]
    )
    assert np.isin(before.labeled, after.labeled).all()
    assert len(after.unlabeled) == len(before.unlabeled) - metrics["labels-queried"]


def test_repeated_round_queries_same_records(run_config, global_arrays, tmp_path):
    # Prepare: round 2 ran, but the server restarts from its round-1 checkpoint.
    config = {**run_config, "run-dir": str(tmp_path)}
    context = _context()
    app(_train_message(global_arrays, config, 1), context)
    app(_train_message(global_arrays, config, 2), context)
    first_attempt = load_pools(context.state)

    # Execute
    restarted = _context()
    reply = app(_train_message(global_arrays, config, 2), restarted)

    # Assert
    second_attempt = load_pools(restarted.state)
    assert reply.content["metrics"]["labels-queried-total"] == first_attempt.labels_queried_total
    assert second_attempt.labeled.tolist() == first_attempt.labeled.tolist()
    assert second_attempt.unlabeled.tolist() == first_attempt.unlabeled.tolist()


def test_state_dir_node_config_moves_pool_file(run_config, global_arrays, tmp_path):
    config = {**run_config, "run-dir": str(tmp_path / "run")}

    app(_train_message(global_arrays, config, 1), _context(**{"state-dir": str(tmp_path / "dev")}))

    assert (tmp_path / "dev" / "partition-1.npz").is_file()
    assert not (tmp_path / "run" / "client-state").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"initial-labeled-fraction": 0.3}, "initial-labeled-fraction: 0.2 -> 0.3"),
        ({"mode": "classical"}, "mode: 'metals' -> 'classical'"),
    ],
    ids=["labeled-fraction", "mode"],
)
def test_pool_file_of_other_run_rejected(run_config, global_arrays, tmp_path, change, expected):
    # Prepare
    config = {**run_config, "run-dir": str(tmp_path)}
    app(_train_message(global_arrays, config, 1), _context())

    # Execute / Assert
    with pytest.raises(ValueError, match="belongs to another run") as raised:
        app(_train_message(global_arrays, {**config, **change}, 2), _context())
    assert expected in str(raised.value)


def test_pool_file_of_other_partition_rejected(run_config, global_arrays, tmp_path):
    # Prepare: partition 1's file copied to partition 2's name.
    config = {**run_config, "run-dir": str(tmp_path)}
    app(_train_message(global_arrays, config, 1), _context(1))
    folder = tmp_path / "client-state"
    (folder / "partition-2.npz").write_bytes((folder / "partition-1.npz").read_bytes())

    # Execute / Assert
    with pytest.raises(ValueError, match="partition-id: 1 -> 2"):
        app(_train_message(global_arrays, config, 2), _context(2))


def test_unreadable_pool_file_rejected(run_config, global_arrays, tmp_path):
    config = {**run_config, "run-dir": str(tmp_path)}
    (tmp_path / "client-state").mkdir()
    (tmp_path / "client-state" / "partition-1.npz").write_bytes(b"not a zip file")

    with pytest.raises(ValueError, match="partition-1.npz is unreadable"):
        app(_train_message(global_arrays, config, 1), _context())


def test_loaded_partitions_match_direct_cut(run_config):
    # Prepare: the client process keeps the rows of all partitions, and a direct cut computes them.
    prepared = prepare_dataset("nsl_kdd", run_config["data-dir"])

    for partition_id in range(4):
        # Execute
        loaded = _client_partition(run_config, partition_id)
        direct = make_client_partition(
            prepared,
            partition_id,
            4,
            seed=int(run_config["seed"]),
            labeled_fraction=float(run_config["initial-labeled-fraction"]),
            local_test_fraction=float(run_config["local-test-fraction"]),
        )

        # Assert
        np.testing.assert_array_equal(loaded.x, direct.x)
        np.testing.assert_array_equal(loaded.y, direct.y)
        np.testing.assert_array_equal(loaded.labeled, direct.labeled)
        np.testing.assert_array_equal(loaded.test, direct.test)
