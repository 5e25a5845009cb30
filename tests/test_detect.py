from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from detect_support import TrainedRun, build_run

from metals.cli import main
from metals.common.data import ton_iot
from metals.common.data.nsl_kdd import FEATURES
from metals.common.data.table import LoadReport
from metals.common.data.ton_iot import read_device_file
from metals.common.inference import MAX_FORMAT_VERSION, RunDirError, load_detector
from metals.detect import run_detection
from metals.server.results import FORMAT_VERSION


@pytest.fixture(scope="module")
def nsl_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> TrainedRun:
    return build_run(tmp_path_factory.getbasetemp() / "detect", data_dir, "nsl_kdd")


@pytest.fixture(scope="module")
def kdd_test(data_dir: Path) -> Path:
    return data_dir / "nsl-kdd" / "KDDTest+.txt"


def kdd_lines(path: Path, count: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_kddtest_predictions_match_model(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path):
    # Prepare
    out = tmp_path / "predictions.csv"

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(kdd_test),
                 "--out", str(out)])  # fmt: skip

    # Assert
    assert code == 0
    predictions = pd.read_csv(out)
    names = np.array(nsl_run.prepared.class_names)
    assert list(predictions.columns) == ["line", "predicted_class", "probability"]
    assert len(predictions) == 22544
    assert predictions["line"].tolist() == list(range(1, 22545))
    assert (predictions["predicted_class"].to_numpy() == names[nsl_run.test_predictions]).all()
    assert predictions["probability"].between(0.2, 1.0).all()


def test_kddtest_summary_counts(nsl_run: TrainedRun, kdd_test: Path, capsys):
    # Prepare
    predicted = nsl_run.test_predictions
    attacks = int(np.count_nonzero(predicted != nsl_run.prepared.class_names.index("normal")))

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(kdd_test)])

    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "records read: 22544 (22544 predicted, 0 unreadable)" in out
    assert f"flagged as attacks: {attacks} of 22544" in out
    assert "accuracy against the file's own labels" in out


def test_chunk_size_changes_nothing(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path):
    # Prepare
    detector = load_detector(nsl_run.run_dir)
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"

    # Execute
    first = run_detection(detector, kdd_test, out=whole, chunk_size=100_000)
    second = run_detection(detector, kdd_test, out=chunked, chunk_size=997)

    # Assert
    assert whole.read_bytes() == chunked.read_bytes()
    assert first.per_class.tolist() == second.per_class.tolist()


def test_header_row_mirror_accepted(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path):
    # Prepare
    lines = kdd_lines(kdd_test, 200)
    plain = write_lines(tmp_path / "plain.csv", lines)
    header = ",".join([*FEATURES, "label", "difficulty"])
    with_header = write_lines(tmp_path / "header.csv", [header, *lines])
    detector = load_detector(nsl_run.run_dir)

    # Execute
    run_detection(detector, plain, out=tmp_path / "plain-out.csv", chunk_size=64)
    run_detection(detector, with_header, out=tmp_path / "header-out.csv", chunk_size=64)

    # Assert
    plain_out = pd.read_csv(tmp_path / "plain-out.csv")
    header_out = pd.read_csv(tmp_path / "header-out.csv")
    assert (header_out["line"] == plain_out["line"] + 1).all()
    assert (header_out["predicted_class"] == plain_out["predicted_class"]).all()


def test_features_only_file_predicted(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path):
    # Prepare
    lines = [",".join(line.split(",")[:41]) for line in kdd_lines(kdd_test, 100)]
    traffic = write_lines(tmp_path / "unlabeled.csv", lines)
    detector = load_detector(nsl_run.run_dir)

    # Execute
    summary = run_detection(detector, traffic, out=tmp_path / "out.csv", chunk_size=1000)

    # Assert
    names = np.array(nsl_run.prepared.class_names)
    predicted = pd.read_csv(tmp_path / "out.csv")["predicted_class"].to_numpy()
    assert summary.predicted == 100
    assert summary.labelled == 0
    assert (predicted == names[nsl_run.test_predictions[:100]]).all()


def test_unreadable_records_reported_by_line(
    nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys
):
    # Prepare
    lines = kdd_lines(kdd_test, 60)
    lines[4] = ",".join(lines[4].split(",")[:-1])  # line 5: a field short
    fields = lines[9].split(",")
    fields[4] = "12x"  # line 10: src_bytes is not a number
    lines[9] = ",".join(fields)
    fields = lines[19].split(",")
    fields[0] = ""  # line 20: duration is missing
    lines[19] = ",".join(fields)
    lines[29] = lines[29] + ",extra"  # line 30: a field too many
    traffic = write_lines(tmp_path / "damaged.csv", lines)
    out = tmp_path / "out.csv"

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic),
                 "--out", str(out), "--chunk-size", "8"])  # fmt: skip

    # Assert
    printed = capsys.readouterr().out
    rejected = pd.read_csv(tmp_path / "out.rejected.csv")
    predicted_lines = pd.read_csv(out)["line"].tolist()
    assert code == 0
    assert "records read: 60 (56 predicted, 4 unreadable)" in printed
    assert rejected["line"].tolist() == [5, 10, 20, 30]
    assert rejected["reason"][0] == "wrong number of fields (expected 43)"
    assert rejected["reason"][2] == "missing value in column 'duration'"
    assert "line 10: invalid number '12x' in column 'src_bytes'" in printed
    assert predicted_lines == [n for n in range(1, 61) if n not in (5, 10, 20, 30)]


def test_unknown_columns_rejected(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys):
    # Prepare
    header = ",".join([*FEATURES, "label", "difficulty", "packet_hash"])
    lines = [line + ",ab12" for line in kdd_lines(kdd_test, 5)]
    traffic = write_lines(tmp_path / "extra.csv", [header, *lines])

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "columns the model never saw: ['packet_hash']" in err


def test_missing_columns_rejected(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys):
    # Prepare
    without_service = [name for name in FEATURES if name != "service"]
    header = ",".join([*without_service, "label", "difficulty"])
    lines = []
    for line in kdd_lines(kdd_test, 5):
        fields = line.split(",")
        del fields[2]
        lines.append(",".join(fields))
    traffic = write_lines(tmp_path / "missing.csv", [header, *lines])

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "missing columns the model needs: ['service']" in err
    assert "the dataset the model was trained on (nsl_kdd)" in err


def test_headerless_field_count_rejected(
    nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys
):
    # Prepare
    lines = [",".join(line.split(",")[:40]) for line in kdd_lines(kdd_test, 5)]
    traffic = write_lines(tmp_path / "short.csv", lines)

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "line 1 has 40 fields" in err
    assert "needs 41 fields (41 features) or 42 fields (41 features, label) or 43 fields" in err


def test_removed_column_rejected_up_front(
    nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys
):
    # Prepare: without src_bytes a line has 42 fields, the count of the layout
    # "features, label", so the field count alone does not show the problem.
    lines = []
    for line in kdd_lines(kdd_test, 30):
        fields = line.split(",")
        del fields[4]
        lines.append(",".join(fields))
    traffic = write_lines(tmp_path / "no-src-bytes.csv", lines)

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    captured = capsys.readouterr()
    assert code == 1
    assert "records read" not in captured.out
    assert "line 1 has 42 fields and no header row" in captured.err
    assert "43 fields (41 features, label, difficulty)" in captured.err
    assert "in numeric column 'dst_host_srv_rerror_rate'" in captured.err
    assert "one of 'src_bytes' to 'dst_host_srv_rerror_rate' (37 columns)" in captured.err


def test_no_predicted_record_exits_one(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys):
    # Prepare
    lines = []
    for line in kdd_lines(kdd_test, 30):
        fields = line.split(",")
        fields[0] = ""  # duration is missing on every line
        lines.append(",".join(fields))
    traffic = write_lines(tmp_path / "all-bad.csv", lines)

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    captured = capsys.readouterr()
    assert code == 1
    assert "records read: 30 (0 predicted, 30 unreadable)" in captured.out
    assert f"no record of {traffic} was predicted" in captured.err
    assert "all 30 records are unreadable" in captured.err


def test_unseen_category_counted(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys):
    # Prepare
    lines = kdd_lines(kdd_test, 40)
    for index in (3, 17, 18):
        fields = lines[index].split(",")
        fields[1] = "zzz"  # protocol_type never seen in training
        lines[index] = ",".join(fields)
    fields = lines[30].split(",")
    fields[2] = "gopher2"  # service never seen in training
    lines[30] = ",".join(fields)
    traffic = write_lines(tmp_path / "unseen.csv", lines)
    detector = load_detector(nsl_run.run_dir)

    # Execute
    summary = run_detection(detector, traffic, out=None, chunk_size=10)
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    printed = capsys.readouterr().out
    assert summary.predicted == 40
    assert summary.unseen == {"protocol_type": 3, "service": 1}
    assert summary.unseen_examples == {"protocol_type": ["zzz"], "service": ["gopher2"]}
    assert code == 0
    assert "column protocol_type: 3 records, values such as 'zzz'" in printed
    assert "column service: 1 records, values such as 'gopher2'" in printed


def test_empty_file_rejected(nsl_run: TrainedRun, tmp_path: Path, capsys):
    # Prepare
    traffic = tmp_path / "empty.csv"
    traffic.write_bytes(b"")

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "empty.csv: the file is empty" in err


def test_missing_traffic_file_rejected(nsl_run: TrainedRun, tmp_path: Path, capsys):
    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(tmp_path / "no.csv")])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "traffic file not found" in err


def test_newer_format_version_rejected(nsl_run: TrainedRun, kdd_test: Path, tmp_path: Path, capsys):
    # Prepare
    newer = shutil.copytree(nsl_run.run_dir, tmp_path / "newer")
    summary = json.loads((newer / "summary.json").read_text())
    summary["format_version"] = MAX_FORMAT_VERSION + 1
    (newer / "summary.json").write_text(json.dumps(summary))

    # Execute
    code = main(["detect", "--model", str(newer), "--data", str(kdd_test)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert f"format_version {MAX_FORMAT_VERSION + 1} is newer" in err
    assert "upgrade metals" in err


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ("model.pt", "model.pt not found"),
        ("summary.json", "summary.json not found"),
        ("preprocessor", "cannot load the fitted preprocessor"),
    ],
)
def test_incomplete_run_dir_rejected(nsl_run: TrainedRun, tmp_path: Path, removed, message):
    # Prepare
    incomplete = shutil.copytree(nsl_run.run_dir, tmp_path / "incomplete")
    target = incomplete / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()

    # Execute / Assert
    with pytest.raises(RunDirError, match=message):
        load_detector(incomplete)


def test_weights_of_other_shape_rejected(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    changed = shutil.copytree(nsl_run.run_dir, tmp_path / "changed")
    config = json.loads((changed / "config.json").read_text())
    config["hidden-layers"] = "64,64"
    (changed / "config.json").write_text(json.dumps(config))

    # Execute / Assert
    with pytest.raises(RunDirError, match=r"weights do not fit an MLP .* hidden layers \[64, 64\]"):
        load_detector(changed)


def test_reads_what_the_server_writes():
    # Assert
    assert FORMAT_VERSION <= MAX_FORMAT_VERSION


def test_out_dash_writes_csv_to_stdout(nsl_run: TrainedRun, kdd_test: Path, tmp_path, capsys):
    # Prepare
    traffic = write_lines(tmp_path / "few.csv", kdd_lines(kdd_test, 3))

    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(traffic), "--out", "-"])

    # Assert
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.splitlines()[0] == "line,predicted_class,probability"
    assert len(captured.out.splitlines()) == 4
    assert "records read: 3" in captured.err


def test_invalid_chunk_size_is_usage_error(nsl_run: TrainedRun, kdd_test: Path, capsys):
    # Execute
    code = main(["detect", "--model", str(nsl_run.run_dir), "--data", str(kdd_test),
                 "--chunk-size", "0"])  # fmt: skip

    # Assert
    assert code == 2
    assert "invalid --chunk-size 0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ton_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> TrainedRun:
    if not (data_dir / "ton-iot-telemetry").is_dir():
        pytest.skip(f"TON_IoT files not found in {data_dir / 'ton-iot-telemetry'}")
    return build_run(tmp_path_factory.getbasetemp() / "detect", data_dir, "ton_iot", epochs=1)


@pytest.mark.parametrize("device", ["Garage_Door", "Fridge"])
def test_ton_iot_device_file_as_in_training(
    ton_run: TrainedRun, data_dir: Path, tmp_path: Path, device: str
):
    # Prepare
    path = data_dir / "ton-iot-telemetry" / f"Train_Test_IoT_{device}.csv"
    detector = load_detector(ton_run.run_dir)
    preprocessor = detector.preprocessor
    loaded = read_device_file(path, device, LoadReport())
    for column in preprocessor.numeric:
        if column not in loaded:
            loaded[column] = 0.0
    for column in preprocessor.categorical:
        if column not in loaded:
            loaded[column] = ton_iot.ABSENT
    expected = detector.predict_proba(preprocessor.transform_features(loaded)).argmax(axis=1)
    expected_lines = loaded.index.to_numpy() + 2  # data row 0 is on line 2, after the header
    out = tmp_path / "predictions.csv"

    # Execute
    summary = run_detection(detector, path, out=out, chunk_size=20_000)

    # Assert
    predictions = pd.read_csv(out).set_index("line")
    names = np.array(detector.class_names)
    assert summary.records == sum(1 for _ in path.open(encoding="utf-8")) - 1
    assert summary.labelled == summary.predicted
    assert set(expected_lines) <= set(predictions.index)
    assert (predictions.loc[expected_lines, "predicted_class"].to_numpy() == names[expected]).all()


def test_ton_iot_file_without_device_columns_rejected(ton_run: TrainedRun, tmp_path: Path, capsys):
    # Prepare
    traffic = write_lines(
        tmp_path / "no-sensors.csv",
        ["ts,date,time,label,type", "1556245180,25-Apr-19, 19:19:40 ,1,ddos"],
    )

    # Execute
    code = main(["detect", "--model", str(ton_run.run_dir), "--data", str(traffic)])

    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "missing columns the model needs" in err
    assert "(fridge_temperature, temp_condition)" in err


def test_unknown_label_stops_scoring(nsl_run: TrainedRun, kdd_test: Path, tmp_path, caplog):
    # Prepare
    lines = kdd_lines(kdd_test, 30)
    fields = lines[24].split(",")
    fields[41] = "zeroday"  # line 25: an attack name no mapping has
    lines[24] = ",".join(fields)
    traffic = write_lines(tmp_path / "zeroday.csv", lines)
    detector = load_detector(nsl_run.run_dir)

    # Execute
    summary = run_detection(detector, traffic, out=None, chunk_size=10)

    # Assert
    assert summary.predicted == 30
    assert summary.labelled == 20
    assert "labels from line 21 on are not scored" in caplog.text
    assert "zeroday" in caplog.text


def test_unfinished_run_dir_names_resume(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare: an interrupted run has its checkpoint but no summary.json yet.
    unfinished = shutil.copytree(nsl_run.run_dir, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    (unfinished / "checkpoint").mkdir(exist_ok=True)

    # Execute / Assert
    with pytest.raises(
        RunDirError,
        match=rf"has not finished; resume it with 'metals run hydra.run.dir={unfinished}'",
    ):
        load_detector(unfinished)
