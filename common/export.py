"""Export a trained MLP as TorchScript or ONNX for small devices, and check the export.

The exported model takes preprocessed records, float32 of shape
(n, num_features), and returns class probabilities of shape (n, num_classes):
the softmax is part of the export, so a device needs no PyTorch code of ours.
The fitted preprocessor and the class names stay in the run directory
(``preprocessor/``, ``summary.json``) and are copied beside the export.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metals.common.inference import PREPROCESSOR_DIR, Detector
from metals.common.training import predict_proba

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 17
DEFAULT_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """An export that cannot be written, or that disagrees with the PyTorch model."""


class _WithSoftmax(nn.Module):
    """The classifier followed by a softmax over the class axis."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


@dataclass(frozen=True)
class ParityReport:
    """Comparison of an exported model with the PyTorch model on the same records.

    Parameters
    ----------
    format : str
        ``"torchscript"`` or ``"onnx"``.
    path : pathlib.Path
        Exported file.
    records : int
        Records compared.
    mismatches : int
        Records whose predicted class differs.
    max_abs_difference : float
        Largest absolute difference of any class probability.
    tolerance : float
        Largest probability difference accepted.
    """

    format: str
    path: Path
    records: int
    mismatches: int
    max_abs_difference: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """True when every predicted class agrees and probabilities are within tolerance."""
        return self.mismatches == 0 and self.max_abs_difference <= self.tolerance

    def describe(self) -> str:
        """Return one line for the command output."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.format}: {self.path} parity {verdict} on {self.records} records "
            f"({self.mismatches} class mismatches, max probability difference "
            f"{self.max_abs_difference:.2e}, tolerance {self.tolerance:.0e})"
        )


def onnx_available() -> bool:
    """Return True when the ``onnx`` extra (onnx and onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def export_model(model: nn.Module, num_features: int, fmt: str, path: str | Path) -> Path:
    """Write ``model`` with a softmax output in format ``fmt``.

    Parameters
    ----------
    model : torch.nn.Module
        Trained classifier returning logits of shape (n, num_classes).
    num_features : int
        Input width of the model.
    fmt : str
        ``"torchscript"`` or ``"onnx"``.
    path : str or pathlib.Path
        File to write; its folder is created.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ExportError
        On an unknown format, or ONNX without the ``onnx`` extra installed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and not onnx_available():
        raise ExportError(
            "ONNX export needs the onnx extra: pip install 'metals[onnx]' (onnx and onnxruntime)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _WithSoftmax(model).eval()
    example = torch.zeros(1, num_features, dtype=torch.float32)

    # Both exporters below are marked deprecated in PyTorch 2.13 but are still
    # the ones that need no package beyond torch (and onnx for ONNX).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            scripted = torch.jit.trace(wrapped, example)
            scripted.save(str(path))
        else:
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "records"}, OUTPUT_NAME: {0: "records"}},
                opset_version=ONNX_OPSET,
            )
    logger.info("exported the model as %s to %s", fmt, path)
    return path


def predict_exported(
    path: str | Path, fmt: str, x: np.ndarray, *, batch_size: int = 65_536
) -> np.ndarray:
    """Run an exported model on preprocessed records.

    Parameters
    ----------
    path : str or pathlib.Path
        File written by :func:`export_model`.
    fmt : str
        ``"torchscript"`` or ``"onnx"``.
    x : numpy.ndarray
        float32 (n, num_features).
    batch_size : int, default=65536
        Records per call.

    Returns
    -------
    numpy.ndarray
        float32 (n, num_classes) class probabilities.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    outputs: list[np.ndarray] = []
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loaded = torch.jit.load(str(path))
        loaded.eval()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outputs.append(loaded(torch.from_numpy(x[start : start + batch_size])).numpy())
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for start in range(0, len(x), batch_size):
            outputs.append(
                session.run([OUTPUT_NAME], {INPUT_NAME: x[start : start + batch_size]})[0]
            )
    else:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not outputs:
        raise ExportError("no records to run the exported model on")
    return np.concatenate(outputs)


def check_parity(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    x: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    """Compare an exported model's predictions with the PyTorch model's on ``x``.

    Parameters
    ----------
    model : torch.nn.Module
        The PyTorch classifier that was exported (logits out).
    path : str or pathlib.Path
        Exported file.
    fmt : str
        ``"torchscript"`` or ``"onnx"``.
    x : numpy.ndarray
        float32 (n, num_features) preprocessed records, for example the test set.
    tolerance : float, default=1e-5
        Largest accepted absolute difference of a class probability.

    Returns
    -------
    ParityReport
        Class mismatches and the largest probability difference.
    """
    if len(x) == 0:
        raise ExportError("the parity check needs at least one record; the test set is empty")
    expected = predict_proba(model, x, batch_size=65_536)
    exported = predict_exported(path, fmt, x)
    if exported.shape != expected.shape:
        raise ExportError(
            f"{path}: exported model returns shape {exported.shape}, the PyTorch model "
            f"{expected.shape}; export again from the same run directory"
        )
    mismatches = int(np.count_nonzero(expected.argmax(axis=1) != exported.argmax(axis=1)))
    difference = float(np.max(np.abs(expected - exported)))
    report = ParityReport(fmt, Path(path), len(x), mismatches, difference, tolerance)
    logger.info("%s", report.describe())
    return report


def export_run(
    detector: Detector,
    out_dir: str | Path,
    formats: Sequence[str],
    x: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[ParityReport]:
    """Export a loaded run's model in each format, check parity and copy its metadata.

    The folder receives one model file per format, ``preprocessor/`` (the
    fitted preprocessing, copied from the run) and ``export.json``: class
    names, feature names, input and output names, the run's format version
    and each parity result.

    Parameters
    ----------
    detector : Detector
        Loaded run directory.
    out_dir : str or pathlib.Path
        Folder to write; created if missing.
    formats : Sequence[str]
        Formats from :data:`FORMATS`.
    x : numpy.ndarray
        float32 (n, num_features) preprocessed records for the parity check.
    tolerance : float, default=1e-5
        Largest accepted probability difference.

    Returns
    -------
    list[ParityReport]
        One per format, in the order given.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for fmt in formats:
        path = export_model(detector.model, detector.num_features, fmt, out_dir / FILE_NAMES[fmt])
        reports.append(check_parity(detector.model, path, fmt, x, tolerance=tolerance))

    shutil.copytree(
        detector.run_dir / PREPROCESSOR_DIR, out_dir / PREPROCESSOR_DIR, dirs_exist_ok=True
    )
    metadata = {
        "format_version": detector.format_version,
        "class_names": detector.class_names,
        "feature_names": detector.preprocessor.feature_names,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["records", detector.num_features],
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["records", len(detector.class_names)],
        },
        "parity": [
            {
                "format": report.format,
                "file": report.path.name,
                "records": report.records,
                "mismatches": report.mismatches,
                "max_abs_difference": report.max_abs_difference,
                "tolerance": report.tolerance,
                "passed": report.passed,
            }
            for report in reports
        ],
    }
    (out_dir / "export.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return reports
