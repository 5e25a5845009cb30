"""A device's own traffic file (node config data-path), read with real NSL-KDD records."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from metals.client.app import app
from metals.client.data import load_client_data
from metals.client.device_data import DeviceDataError, read_device_file
from metals.common.data import prepare_dataset
from metals.common.model import build_model
from metals.common.preprocessor_record import (
    DIGEST_FIELD,
    RECORD_KEY,
    STATE_FIELD,
    decode_preprocessor,
    encode_preprocessor,
)
from metals.common.runconfig import validate_run_config
from metals.common.traffic import TrafficFileError


@pytest.fixture(scope="module")
def prepared(data_dir):
    return prepare_dataset("nsl_kdd", str(data_dir))


@pytest.fixture(scope="module")
def run_config(data_dir):
    return validate_run_config(
        {"dataset": "nsl_kdd", "data-dir": str(data_dir), "local-epochs": 1, "query-size": 5}
    )


@pytest.fixture(scope="module")
def raw_lines(data_dir):
    with (data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt").open() as handle:
        return [next(handle).rstrip("\n") for _ in range(300)]


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _message(arrays, config, encoded, *, with_state: bool, kind: str = "train") -> Message:
    record = {DIGEST_FIELD: encoded.digest}
    if with_state:
        record[STATE_FIELD] = encoded.compressed
    content = RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord({**config, "server-round": 1}),
            RECORD_KEY: ConfigRecord(record),
        }
    )
    return Message(content, dst_node_id=5, message_type=kind)


def test_device_file_uses_server_scaling(tmp_path, prepared, raw_lines):
    # Prepare: 300 training records, one with a number that is not one.
    lines = list(raw_lines)
    fields = lines[9].split(",")
    fields[0] = "soon"
    lines[9] = ",".join(fields)
    path = _write(tmp_path / "traffic.csv", lines)

    # Execute
    records = read_device_file(path, "nsl_kdd", prepared.preprocessor)

    # Assert: the features are the server's columns, and line 10 is left out.
    assert records.x.shape == (299, len(prepared.preprocessor.feature_names))
    assert records.bad_records == 1
    assert 10 not in records.lines.tolist()
    assert records.lines[:3].tolist() == [1, 2, 3]
    assert records.x.min() >= 0.0
    assert records.x.max() <= 1.0


def test_device_file_labels_match_dataset(tmp_path, prepared, raw_lines):
    path = _write(tmp_path / "traffic.csv", raw_lines[:50])

    records = read_device_file(path, "nsl_kdd", prepared.preprocessor)

    expected = [prepared.preprocessor.label_map[line.split(",")[41]] for line in raw_lines[:50]]
    assert [prepared.class_names[index] for index in records.y] == expected


def test_device_file_unknown_label_left_out(tmp_path, prepared, raw_lines):
    lines = list(raw_lines[:20])
    fields = lines[4].split(",")
    fields[41] = "teleport"
    lines[4] = ",".join(fields)
    path = _write(tmp_path / "traffic.csv", lines)

    records = read_device_file(path, "nsl_kdd", prepared.preprocessor)

    assert len(records.y) == 19
    assert records.bad_records == 1
    assert 5 not in records.lines.tolist()


def test_device_file_missing(tmp_path, prepared):
    with pytest.raises(TrafficFileError, match="not found"):
        read_device_file(tmp_path / "none.csv", "nsl_kdd", prepared.preprocessor)


def test_device_file_without_labels(tmp_path, prepared, raw_lines):
    # The 41 features alone, as a capture without labels would have them.
    path = _write(tmp_path / "traffic.csv", [",".join(line.split(",")[:41]) for line in raw_lines])

    with pytest.raises(DeviceDataError, match="labelling oracle"):
        read_device_file(path, "nsl_kdd", prepared.preprocessor)


def test_device_file_missing_column_named(tmp_path, prepared, raw_lines):
    # A header row without the column 'service'.
    from metals.common.data import nsl_kdd

    names = [*nsl_kdd.FEATURES, "label", "difficulty"]
    drop = names.index("service")
    rows = [",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in raw_lines]
    header = ",".join(name for name in names if name != "service")
    path = _write(tmp_path / "traffic.csv", [header, *rows])

    with pytest.raises(TrafficFileError, match="missing columns the model needs: \\['service'\\]"):
        read_device_file(path, "nsl_kdd", prepared.preprocessor)


def test_device_file_unknown_column_named(tmp_path, prepared, raw_lines):
    from metals.common.data import nsl_kdd

    header = ",".join([*nsl_kdd.FEATURES, "label", "difficulty", "vlan"])
    path = _write(tmp_path / "traffic.csv", [header, *(line + ",7" for line in raw_lines)])

    with pytest.raises(TrafficFileError, match="never saw: \\['vlan'\\]"):
        read_device_file(path, "nsl_kdd", prepared.preprocessor)


def test_device_without_preprocessor_rejected(tmp_path, run_config, raw_lines):
    path = _write(tmp_path / "traffic.csv", raw_lines)

    with pytest.raises(ValueError, match="needs the preprocessor"):
        load_client_data(run_config, {"data-path": str(path)}, None)


def test_device_pools_follow_run_fractions(tmp_path, prepared, run_config, raw_lines):
    # Prepare
    path = _write(tmp_path / "traffic.csv", raw_lines)
    text = prepared.preprocessor.to_json()

    # Execute
    data = load_client_data(run_config, {"data-path": str(path)}, text)
    again = load_client_data({**run_config}, {"data-path": str(path)}, text)

    # Assert: 300 records, 20 % local test, 20 % of the rest labeled.
    partition = data.partition
    assert partition.partition_id == -1
    assert len(partition.test) == 60
    assert len(partition.labeled) == 48
    assert len(partition.unlabeled) == 192
    assert data.name == f"device-{data.device_id:x}"
    assert np.array_equal(again.partition.labeled, partition.labeled)


def test_preprocessor_round_trip_checks_digest(prepared):
    encoded = encode_preprocessor(prepared.preprocessor)

    decoded, _ = decode_preprocessor(encoded.compressed, encoded.digest)

    assert decoded.feature_names == prepared.preprocessor.feature_names
    assert len(encoded.compressed) < encoded.json_bytes
    with pytest.raises(ValueError, match="SHA-256"):
        decode_preprocessor(encoded.compressed, "0" * 64)


def test_device_trains_then_uses_cached_preprocessor(tmp_path, prepared, run_config, raw_lines):
    # Prepare
    path = _write(tmp_path / "traffic.csv", raw_lines)
    model = build_model(len(prepared.preprocessor.feature_names), 5, (90, 90), seed=0)
    arrays = ArrayRecord(model.state_dict())
    encoded = encode_preprocessor(prepared.preprocessor)
    context = Context(
        run_id=1,
        node_id=5,
        node_config={"data-path": str(path), "state-dir": str(tmp_path / "state")},
        state=RecordDict(),
        run_config={},
    )

    # Execute: the first message carries the preprocessor, the next only its digest.
    first = app(_message(arrays, run_config, encoded, with_state=True), context)
    second = app(
        _message(first.content["arrays"], run_config, encoded, with_state=False, kind="evaluate"),
        context,
    )

    # Assert
    metrics = first.content["metrics"]
    assert metrics["partition-id"] == -1
    assert metrics["device-id"] >= 0
    assert metrics["pool-size"] == 240
    assert metrics["labels-queried"] == 5
    assert metrics["num-examples"] == 53
    assert second.content["metrics"]["num-examples"] == 60
    assert (tmp_path / "state" / f"device-{metrics['device-id']:x}.npz").is_file()


def test_device_without_cached_preprocessor_fails(tmp_path, prepared, run_config, raw_lines):
    path = _write(tmp_path / "traffic.csv", raw_lines)
    model = build_model(len(prepared.preprocessor.feature_names), 5, (90, 90), seed=0)
    encoded = encode_preprocessor(prepared.preprocessor)
    context = Context(
        run_id=1, node_id=5, node_config={"data-path": str(path)}, state=RecordDict(), run_config={}
    )
    msg = _message(ArrayRecord(model.state_dict()), run_config, encoded, with_state=False)

    with pytest.raises(ValueError, match="none cached"):
        app(msg, context)
