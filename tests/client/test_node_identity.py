"""The ClientApp's query handler: the identity by which the server orders nodes."""

from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from metals.client.app import app
from metals.client.device_data import read_device_file
from metals.client.node_identity import node_identity
from metals.common.data import prepare_dataset
from metals.common.node_identity import IDENTITY_RECORD_KEY, NodeIdentity


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


def _query(node_config: dict) -> Message:
    context = Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
    )
    request = Message(RecordDict(), dst_node_id=7, message_type="query")
    return app(request, context)


def _device_file(data_dir: Path, path: Path, num_lines: int = 50) -> Path:
    with (data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt").open() as handle:
        lines = [next(handle) for _ in range(num_lines)]
    path.write_text("".join(lines))
    return path


def test_query_returns_partition_id():
    reply = _query({"partition-id": 3, "num-partitions": 4})

    identity = NodeIdentity.from_record(reply.content.config_records[IDENTITY_RECORD_KEY])

    assert not reply.has_error()
    assert identity == NodeIdentity(partition_id=3)


def test_query_device_id_matches_training(data_dir, tmp_path):
    # Prepare: the id a device's training replies report for the same file.
    path = _device_file(data_dir, tmp_path / "traffic.csv")
    preprocessor = prepare_dataset("nsl_kdd", data_dir).preprocessor
    trained_id = read_device_file(path, "nsl_kdd", preprocessor).device_id

    # Execute
    reply = _query({"data-path": str(path)})

    # Assert
    identity = NodeIdentity.from_record(reply.content.config_records[IDENTITY_RECORD_KEY])
    assert identity == NodeIdentity(device_id=trained_id)


def test_device_id_follows_content_not_path(data_dir, tmp_path):
    first = _device_file(data_dir, tmp_path / "a.csv")
    moved = _device_file(data_dir, tmp_path / "b.csv")
    other = _device_file(data_dir, tmp_path / "c.csv", num_lines=60)

    assert node_identity({"data-path": str(first)}) == node_identity({"data-path": str(moved)})
    assert node_identity({"data-path": str(first)}) != node_identity({"data-path": str(other)})


@pytest.mark.parametrize(
    ("node_config", "expected"),
    [
        ({}, "missing 'partition-id'"),
        ({"partition-id": 4, "num-partitions": 4}, "invalid partition-id 4"),
        ({"data-path": "/nonexistent/traffic.csv"}, "not a file"),
    ],
    ids=["empty", "out-of-range", "missing-file"],
)
def test_invalid_node_config_rejected(node_config, expected):
    with pytest.raises(ValueError, match=expected):
        node_identity(node_config)
