"""The ``metals detect`` and ``metals export`` commands: use a trained run on new traffic.

``metals detect`` streams a traffic file through the run's fitted
preprocessing and model in chunks, writes one prediction row per record and
prints a summary. ``metals export`` writes the model as TorchScript (and
ONNX with the ``onnx`` extra) and checks that the export predicts what the
PyTorch model predicts on the test set.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

if TYPE_CHECKING:
    from metals.common.inference import Detector
    from metals.common.traffic import BadRecord

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILED = 1
#: Unreadable records listed in the printed summary; the rejected-records file has all.
SHOWN_BAD_RECORDS = 20
#: Distinct unseen category values named per column in the printed summary.
SHOWN_UNSEEN_VALUES = 5
#: glibc mallopt parameter numbers (malloc.h), then the thresholds that
#: :func:`reuse_freed_memory` sets, in bytes.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 512 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


@dataclass
class DetectionSummary:
    """Counts of one ``metals detect`` run.

    Parameters
    ----------
    class_names : list[str]
        Classes in the model's order.
    benign_class : int or None
        Index of the benign class, None when the model has none.
    per_class : numpy.ndarray
        int64 (num_classes,): records predicted per class.
    bad : list[BadRecord]
        Unreadable records with their line numbers.
    correct, labelled : int
        Records whose prediction matches the file's own label, and records
        whose label maps to one of the model's classes.
    seconds : float
        Wall time of reading, preprocessing, predicting and writing.
    unseen : dict[str, int]
        Per categorical column, predicted records whose value the training
        rows never had; the model saw them as all-zero one-hot blocks.
    unseen_examples : dict[str, list[str]]
        Per categorical column, the first :data:`SHOWN_UNSEEN_VALUES` such values.
    """

    class_names: list[str]
    benign_class: int | None
    per_class: np.ndarray
    bad: list[BadRecord] = field(default_factory=list)
    correct: int = 0
    labelled: int = 0
    seconds: float = 0.0
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        """Records that received a prediction."""
        return int(self.per_class.sum())

    @property
    def records(self) -> int:
        """Records in the file: predicted plus unreadable."""
        return self.predicted + len(self.bad)

    @property
    def attacks(self) -> int | None:
        """Records predicted as any class but the benign one, or None without a benign class."""
        if self.benign_class is None:
            return None
        return self.predicted - int(self.per_class[self.benign_class])


def build_detect_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``metals detect``."""
    parser = argparse.ArgumentParser(
        prog="metals detect",
        description=(
            "Label each record of a traffic file with a trained model. The file is read "
            "in the layout of the dataset the model was trained on, with the run's fitted "
            "preprocessing (nothing is refitted)."
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="run directory written by 'metals run' (model.pt, summary.json, "
        "config.json, preprocessor/)",
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="TRAFFIC.csv", help="traffic CSV file to label"
    )
    parser.add_argument(
        "--out",
        type=str,
        default=None,
        metavar="PREDICTIONS.csv",
        help="write one row per record (line, predicted_class, probability); "
        "'-' writes to stdout and the summary to stderr",
    )
    parser.add_argument(
        "--rejected",
        type=Path,
        default=None,
        metavar="REJECTED.csv",
        help="write every unreadable record (line, reason); default "
        "PREDICTIONS.rejected.csv beside --out when some records are unreadable",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=100_000,
        metavar="N",
        help="lines read and predicted at a time (default 100000); memory "
        "grows with N, not with the file size",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    return parser  # fmt: skip


def detect_command(argv: list[str]) -> int:
    """Run ``metals detect`` with the arguments after the subcommand name."""
    args = build_detect_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.chunk_size < 1:
        sys.stderr.write(f"metals detect: invalid --chunk-size {args.chunk_size}: must be >= 1\n")
        return EXIT_USAGE

    from metals.common.data.errors import DataError
    from metals.common.inference import RunDirError, load_detector
    from metals.common.traffic import TrafficFileError

    reuse_freed_memory()
    to_stdout = args.out == "-"
    report = sys.stderr if to_stdout else sys.stdout
    out: Path | BinaryIO | None = None
    if to_stdout:
        sys.stdout.flush()
        out = sys.stdout.buffer
    elif args.out is not None:
        out = Path(args.out)
    try:
        detector = load_detector(args.model)
        summary = run_detection(detector, args.data, out=out, chunk_size=args.chunk_size)
    except (RunDirError, TrafficFileError, DataError) as error:
        sys.stderr.write(f"metals detect: {error}\n")
        return EXIT_FAILED

    rejected = args.rejected
    if rejected is None and summary.bad and args.out not in (None, "-"):
        out = Path(args.out)
        rejected = out.with_name(f"{out.stem}.rejected.csv")
    if rejected is not None:
        write_rejected(summary.bad, rejected)
    report.write(format_summary(summary, detector.run_dir, args.data, args.out, rejected))
    if summary.predicted == 0:
        reason = (
            f"all {summary.records} records are unreadable (reasons above)"
            if summary.records
            else "the file has no records"
        )
        sys.stderr.write(f"metals detect: no record of {args.data} was predicted: {reason}\n")
        return EXIT_FAILED
    return 0


def reuse_freed_memory() -> None:
    """Make glibc's malloc keep freed blocks of up to 512 MiB for reuse in this process.

    Every chunk allocates arrays of a few to tens of MiB (parsed columns, the model
    input, the activations of each forward batch). glibc serves blocks above its
    mmap threshold (128 KiB to 32 MiB, adjusted at run time) with fresh mappings
    and unmaps them on free, so each chunk paid a page fault per 4 KiB page. On 1M
    NSL-KDD records (2-core Xeon, glibc 2.36, other jobs running) that was about
    170,000 faults and 0.4 to 1 s of system time. With these thresholds it
    was about 30,000. Peak memory still depends on the chunk size only. Elsewhere than
    Linux with glibc this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        logger.info("no glibc mallopt; freed memory is returned to the system as usual")
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    ):
        logger.info("glibc rejected the malloc thresholds; freed memory is returned as usual")


def run_detection(
    detector: Detector, data: Path, *, out: Path | BinaryIO | None, chunk_size: int
) -> DetectionSummary:
    """Predict every record of ``data`` and write the predictions.

    Parameters
    ----------
    detector : metals.common.inference.Detector
        Loaded run directory.
    data : pathlib.Path
        Traffic CSV.
    out : pathlib.Path, binary stream or None
        Where to write the prediction rows; None writes none.
    chunk_size : int
        Lines per chunk.

    Returns
    -------
    DetectionSummary
        Counts per predicted class, unreadable records and timing.
    """
    from metals.common.inference import detect_chunks

    summary = DetectionSummary(
        class_names=list(detector.class_names),
        benign_class=detector.benign_class,
        per_class=np.zeros(len(detector.class_names), dtype=np.int64),
    )
    start = time.perf_counter()
    writer = PredictionWriter(out, detector.class_names) if out is not None else None
    try:
        for chunk in detect_chunks(detector, data, chunk_size=chunk_size):
            summary.per_class += np.bincount(chunk.predicted, minlength=len(detector.class_names))
            summary.bad.extend(chunk.bad)
            for column, (count, values) in chunk.unseen.items():
                summary.unseen[column] = summary.unseen.get(column, 0) + count
                examples = summary.unseen_examples.setdefault(column, [])
                for value in values:
                    if len(examples) < SHOWN_UNSEEN_VALUES and value not in examples:
                        examples.append(value)
            if chunk.true is not None:
                summary.labelled += len(chunk.true)
                summary.correct += int(np.count_nonzero(chunk.true == chunk.predicted))
            if writer is not None:
                writer.write(chunk.lines, chunk.predicted, chunk.probability)
            logger.info("predicted %s records so far", summary.predicted)
        if writer is not None:
            writer.mark_complete()
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = time.perf_counter() - start
    return summary


class PredictionWriter:
    """Stream prediction rows ``line,predicted_class,probability`` to a CSV file.

    Parameters
    ----------
    out : pathlib.Path or binary stream
        Destination. A path is written through a temporary file and renamed
        on :meth:`close`, so an interrupted run leaves no partial file.
    class_names : Sequence[str]
        Class names in the model's order.
    """

    HEADER = b"line,predicted_class,probability\n"

    def __init__(self, out: Path | BinaryIO, class_names: Sequence[str]) -> None:
        self._names = pa.array(list(class_names), type=pa.string())
        # pyarrow quotes every string under "needed"; plain names need no quotes.
        plain = not any(set(name) & set(',"\n\r') for name in class_names)
        self._options = pacsv.WriteOptions(
            include_header=False, quoting_style="none" if plain else "needed"
        )
        self._target: Path | None = None
        self._stream: BinaryIO | pa.NativeFile
        if isinstance(out, Path):
            out.parent.mkdir(parents=True, exist_ok=True)
            self._target = out
            self._temporary = out.with_name(f".{out.name}.partial")
            # A pyarrow stream: write_csv then writes without taking the GIL back per block.
            self._stream = pa.output_stream(
                str(self._temporary), compression=None, buffer_size=1 << 20
            )
        else:
            self._stream = out
        self._stream.write(self.HEADER)
        self._complete = False

    def write(self, lines: np.ndarray, predicted: np.ndarray, probability: np.ndarray) -> None:
        """Append one row per record: line number, class name, probability (6 decimals)."""
        if len(lines) == 0:
            return
        classes = pa.DictionaryArray.from_arrays(pa.array(predicted, type=pa.int32()), self._names)
        table = pa.table(
            {
                "line": pa.array(lines, type=pa.int64()),
                "predicted_class": classes,
                "probability": np.round(probability.astype(np.float64), 6),
            }
        )
        pacsv.write_csv(table, self._stream, write_options=self._options)

    def mark_complete(self) -> None:
        """Record that every chunk was written, so :meth:`close` keeps the file."""
        self._complete = True

    def close(self) -> None:
        """Finish the file: rename it into place, or delete it after an error."""
        if self._target is None:
            self._stream.flush()
            return
        self._stream.close()
        if self._complete:
            self._temporary.replace(self._target)
        else:
            self._temporary.unlink(missing_ok=True)


def _csv_field(text: str) -> str:
    """Quote a value for CSV when it contains a comma, quote or line break."""
    if any(character in text for character in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_rejected(bad: Sequence[BadRecord], path: Path) -> None:
    """Write every unreadable record as ``line,reason`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("line,reason\n")
        for record in bad:
            handle.write(f"{record.line},{_csv_field(record.reason)}\n")


def format_summary(
    summary: DetectionSummary,
    run_dir: Path,
    data: Path,
    out: str | None,
    rejected: Path | None,
) -> str:
    """Return the text ``metals detect`` prints after a run."""
    lines = [
        f"model: {run_dir}",
        f"traffic file: {data}",
        f"records read: {summary.records} ({summary.predicted} predicted, "
        f"{len(summary.bad)} unreadable)",
    ]
    if summary.bad:
        lines.append("unreadable records (line: reason):")
        for record in summary.bad[:SHOWN_BAD_RECORDS]:
            lines.append(f"  line {record.line}: {record.reason}")
        hidden = len(summary.bad) - SHOWN_BAD_RECORDS
        if hidden > 0:
            where = f"see {rejected}" if rejected else "pass --rejected FILE to list them all"
            lines.append(f"  ... and {hidden} more ({where})")

    if summary.unseen:
        lines.append(
            "records with a category not seen in training (predicted with an all-zero "
            "encoding of that column, so treat their class with care):"
        )
        for column, count in summary.unseen.items():
            examples = ", ".join(repr(value) for value in summary.unseen_examples[column])
            lines.append(f"  column {column}: {count} records, values such as {examples}")

    width = max([len("predicted class")] + [len(name) for name in summary.class_names])
    lines.append(f"{'predicted class':<{width}}  {'records':>10}  {'share':>7}")
    for name, count in zip(summary.class_names, summary.per_class, strict=True):
        share = count / summary.predicted if summary.predicted else 0.0
        lines.append(f"{name:<{width}}  {int(count):>10}  {share:>7.1%}")

    attacks = summary.attacks
    if attacks is None:
        lines.append("flagged as attacks: unknown (the model has no 'normal' class)")
    else:
        share = attacks / summary.predicted if summary.predicted else 0.0
        lines.append(f"flagged as attacks: {attacks} of {summary.predicted} ({share:.1%})")
    if summary.labelled:
        accuracy = summary.correct / summary.labelled
        lines.append(
            f"accuracy against the file's own labels: {accuracy:.4f} "
            f"({summary.correct} of {summary.labelled})"
        )
    rate = summary.predicted / summary.seconds if summary.seconds > 0 else 0.0
    lines.append(f"time: {summary.seconds:.2f} s ({rate:,.0f} records/s)")
    if out is not None and out != "-":
        lines.append(f"predictions: {out}")
    if rejected is not None:
        lines.append(f"unreadable records: {rejected}")
    return "\n".join(lines) + "\n"


def build_export_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``metals export``."""
    parser = argparse.ArgumentParser(
        prog="metals export",
        description=(
            "Export a trained run's model for small devices (softmax probabilities out) "
            "and check that the export predicts the same classes as the PyTorch model."
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="run directory written by 'metals run'",
    )
    parser.add_argument(
        "--format",
        choices=("torchscript", "onnx", "all"),
        default="all",
        help="torchscript, onnx, or all (default): TorchScript, plus ONNX "
        "when the onnx extra is installed",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the exported files (default RUN_DIR/export)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="TRAFFIC.csv",
        help="check parity on the readable records of this traffic file "
        "instead of the run's test set",
    )
    parser.add_argument(
        "--data-dir",
        type=str,
        default=None,
        metavar="DIR",
        help="folder with the dataset files for the test set (default: the "
        "run's data-dir, else METALS_DATA_DIR)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="largest accepted difference of a class probability (default 1e-5)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    return parser  # fmt: skip


def export_command(argv: list[str]) -> int:
    """Run ``metals export`` with the arguments after the subcommand name."""
    args = build_export_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.tolerance >= 0:
        sys.stderr.write(f"metals export: invalid --tolerance {args.tolerance}: must be >= 0\n")
        return EXIT_USAGE

    from metals.common.data.errors import DataError
    from metals.common.export import ExportError, export_run, onnx_available
    from metals.common.inference import RunDirError, load_detector
    from metals.common.traffic import TrafficFileError

    if args.format == "onnx" and not onnx_available():
        sys.stderr.write(
            "metals export: ONNX export needs the onnx extra: pip install 'metals[onnx]'\n"
        )
        return EXIT_USAGE
    formats = ["torchscript", "onnx"] if args.format == "all" else [args.format]
    if args.format == "all" and not onnx_available():
        formats = ["torchscript"]
        sys.stdout.write("onnx extra not installed: exporting TorchScript only\n")

    try:
        detector = load_detector(args.model)
        x, source = parity_records(detector, args.data, args.data_dir)
        out_dir = args.out if args.out is not None else detector.run_dir / "export"
        reports = export_run(detector, out_dir, formats, x, tolerance=args.tolerance)
    except (RunDirError, TrafficFileError, DataError, ExportError) as error:
        sys.stderr.write(f"metals export: {error}\n")
        return EXIT_FAILED

    sys.stdout.write(f"parity records: {source}\n")
    for report in reports:
        sys.stdout.write(report.describe() + "\n")
    sys.stdout.write(f"export folder: {out_dir}\n")
    return 0 if all(report.passed for report in reports) else EXIT_FAILED


def parity_records(
    detector: Detector, data: Path | None, data_dir: str | None
) -> tuple[np.ndarray, str]:
    """Return the preprocessed records for the parity check and where they came from.

    Parameters
    ----------
    detector : metals.common.inference.Detector
        Loaded run directory.
    data : pathlib.Path or None
        Traffic file whose readable records are used; None uses the run's
        global test set, prepared with the run's dataset settings.
    data_dir : str or None
        Dataset folder for the test set; None uses the run's ``data-dir``,
        else ``METALS_DATA_DIR``.

    Returns
    -------
    x : numpy.ndarray
        float32 (n, num_features).
    source : str
        Description for the command output.
    """
    if data is not None:
        from metals.common.traffic import iter_traffic_chunks

        parts = [
            detector.features(chunk.frame) for chunk in iter_traffic_chunks(data, detector.layout)
        ]
        x = np.concatenate(parts) if parts else np.zeros((0, detector.num_features), np.float32)
        return x, f"{len(x)} readable records of {data}"

    from metals.common.data import prepare_dataset

    config = detector.config
    prepared = prepare_dataset(
        str(config["dataset"]),
        data_dir if data_dir is not None else (config.get("data-dir") or None),
        labels=str(config.get("labels", "default")),
        seed=int(config.get("seed", 42)),
        val_fraction=float(config.get("val-fraction", 0.1)),
        test_fraction=float(config.get("test-fraction", 0.2)),
    )
    fitted = detector.preprocessor
    same_scaling = (
        prepared.feature_names == fitted.feature_names
        and np.allclose(prepared.preprocessor.min_, fitted.min_)
        and np.allclose(prepared.preprocessor.scale_, fitted.scale_)
    )
    if not same_scaling:
        from metals.common.export import ExportError

        raise ExportError(
            f"the {config['dataset']} test set prepared from the current files is encoded "
            f"differently from the run's preprocessor in {detector.run_dir}; point "
            "--data-dir at the files the run was trained on, or pass --data TRAFFIC.csv"
        )
    # The cache hands out read-only memory maps, which torch.from_numpy rejects.
    return np.array(
        prepared.x_test
    ), f"the {config['dataset']} test set ({len(prepared.x_test)} records)"
