from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detect_support import TrainedRun, build_run

from metals.cli import main
from metals.common import export
from metals.common.export import (
    ExportError,
    check_parity,
    export_model,
    predict_exported,
)
from metals.common.inference import load_detector


@pytest.fixture(scope="module")
def nsl_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> TrainedRun:
    return build_run(tmp_path_factory.getbasetemp() / "detect", data_dir, "nsl_kdd")


def test_torchscript_parity_on_test_set(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    detector = load_detector(nsl_run.run_dir)
    x_test = np.array(nsl_run.prepared.x_test)

    # Execute
    path = export_model(detector.model, detector.num_features, "torchscript", tmp_path / "m.pt")
    report = check_parity(detector.model, path, "torchscript", x_test)

    # Assert
    assert report.records == len(x_test)
    assert report.mismatches == 0
    assert report.max_abs_difference <= 1e-5
    assert report.passed


def test_onnx_parity_on_test_set(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    pytest.importorskip("onnxruntime")
    detector = load_detector(nsl_run.run_dir)
    x_test = np.array(nsl_run.prepared.x_test)

    # Execute
    path = export_model(detector.model, detector.num_features, "onnx", tmp_path / "m.onnx")
    probabilities = predict_exported(path, "onnx", x_test)
    report = check_parity(detector.model, path, "onnx", x_test)

    # Assert
    assert probabilities.shape == (len(x_test), len(detector.class_names))
    assert (probabilities.argmax(axis=1) == nsl_run.test_predictions).all()
    assert report.mismatches == 0
    assert report.passed


def test_parity_catches_other_model(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    detector = load_detector(nsl_run.run_dir)
    x_test = np.array(nsl_run.prepared.x_test)
    other = torch.nn.Sequential(torch.nn.Linear(detector.num_features, len(detector.class_names)))
    path = export_model(other, detector.num_features, "torchscript", tmp_path / "other.pt")

    # Execute
    report = check_parity(detector.model, path, "torchscript", x_test)

    # Assert
    assert report.mismatches > 0
    assert not report.passed
    assert "FAILED" in report.describe()


def test_export_command_writes_folder(nsl_run: TrainedRun, data_dir: Path, tmp_path, capsys):
    # Prepare
    out = tmp_path / "device"

    # Execute
    code = main(["export", "--model", str(nsl_run.run_dir), "--out", str(out),
                 "--format", "torchscript", "--data-dir", str(data_dir)])  # fmt: skip

    # Assert
    printed = capsys.readouterr().out
    metadata = json.loads((out / "export.json").read_text())
    assert code == 0
    assert "parity passed on 22544 records" in printed
    assert (out / "model.torchscript.pt").is_file()
    assert (out / "preprocessor" / "preprocessor.json").is_file()
    assert metadata["class_names"] == nsl_run.prepared.class_names
    assert metadata["parity"][0]["passed"] is True
    assert metadata["input"]["shape"] == ["records", nsl_run.prepared.x_test.shape[1]]


def test_export_parity_on_traffic_file(nsl_run: TrainedRun, data_dir: Path, tmp_path, capsys):
    # Prepare
    traffic = data_dir / "nsl-kdd" / "KDDTest+.txt"

    # Execute
    code = main(["export", "--model", str(nsl_run.run_dir), "--out", str(tmp_path / "e"),
                 "--format", "torchscript", "--data", str(traffic)])  # fmt: skip

    # Assert
    printed = capsys.readouterr().out
    assert code == 0
    assert f"parity records: 22544 readable records of {traffic}" in printed


def test_onnx_without_extra_is_usage_error(nsl_run: TrainedRun, monkeypatch, capsys):
    # Prepare
    monkeypatch.setattr(export, "onnx_available", lambda: False)

    # Execute
    code = main(["export", "--model", str(nsl_run.run_dir), "--format", "onnx"])

    # Assert
    assert code == 2
    assert "pip install 'metals[onnx]'" in capsys.readouterr().err


def test_unknown_format_rejected(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    detector = load_detector(nsl_run.run_dir)

    # Execute / Assert
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(detector.model, detector.num_features, "tflite", tmp_path / "m")


def test_empty_parity_set_rejected(nsl_run: TrainedRun, tmp_path: Path):
    # Prepare
    detector = load_detector(nsl_run.run_dir)
    path = export_model(detector.model, detector.num_features, "torchscript", tmp_path / "m.pt")
    empty = np.zeros((0, detector.num_features), dtype=np.float32)

    # Execute / Assert
    with pytest.raises(ExportError, match="needs at least one record"):
        check_parity(detector.model, path, "torchscript", empty)


def test_export_all_formats(nsl_run: TrainedRun, data_dir: Path, tmp_path, capsys):
    # Prepare
    pytest.importorskip("onnxruntime")
    out = tmp_path / "both"

    # Execute
    code = main(["export", "--model", str(nsl_run.run_dir), "--out", str(out),
                 "--data-dir", str(data_dir)])  # fmt: skip

    # Assert
    printed = capsys.readouterr().out
    metadata = json.loads((out / "export.json").read_text())
    assert code == 0
    assert [entry["format"] for entry in metadata["parity"]] == ["torchscript", "onnx"]
    assert all(entry["passed"] for entry in metadata["parity"])
    assert (out / "model.onnx").is_file()
    assert "onnx: " in printed
