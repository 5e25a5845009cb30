"""Writers and readers of a run directory: metrics.csv, summary.json, config.json, model.pt."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metals.common.files import temporary_beside

if TYPE_CHECKING:
    import pandas as pd
    import torch

FORMAT_VERSION = 1

#: Columns of ``metrics.csv``, one row per round.
METRICS_COLUMNS = (
    "round",
    "accuracy",
    "macro_f1",
    "best_client_accuracy",
    "worst_client_accuracy",
    "labels_queried_total",
    "labeled_fraction",
    "round_seconds",
)


@dataclass(frozen=True)
class RoundProgress:
    """Progress record passed to the callback after each completed round.

    Attributes
    ----------
    round, num_rounds : int
        Completed round (from 1) and the rounds of the run.
    sampled_clients, valid_replies : int
        Clients asked to train and replies aggregated.
    labels_queried_total : int
        Labels bought from the oracles since the start of the run.
    labeled_fraction : float
        Labeled share of all clients' pools (labeled and unlabeled records,
        without the local test splits).
    accuracy, macro_f1 : float
        Global model on the held-out test set.
    elapsed_seconds : float
        Wall-clock seconds of this round.
    """

    round: int
    num_rounds: int
    sampled_clients: int
    valid_replies: int
    labels_queried_total: int
    labeled_fraction: float
    accuracy: float
    macro_f1: float
    elapsed_seconds: float


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_beside(path)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_metrics(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write one row per completed round to ``run_dir/metrics.csv`` and return its path."""
    lines = [",".join(METRICS_COLUMNS)]
    for row in rows:
        lines.append(",".join(_format_cell(row[column]) for column in METRICS_COLUMNS))
    path = Path(run_dir) / "metrics.csv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _format_cell(value: Any) -> str:
    """Return a CSV cell: integers as such, floats with full precision, NaN as empty."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    number = float(value)
    return "" if np.isnan(number) else repr(number)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """Return ``run_dir/metrics.csv`` as a DataFrame with the columns of :data:`METRICS_COLUMNS`.

    Raises
    ------
    FileNotFoundError
        When the run directory has no metrics.csv.
    ValueError
        When the file's columns differ from :data:`METRICS_COLUMNS`.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}: is it a metals run directory?")
    with path.open(encoding="utf-8", newline="") as stream:
        header = next(csv.reader(stream), [])
    if tuple(header) != METRICS_COLUMNS:
        raise ValueError(
            f"{path} has columns {header}, expected {list(METRICS_COLUMNS)}; it was not written "
            "by this version of metals"
        )
    import pandas as pd

    return pd.read_csv(path)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` with ``format_version`` to ``run_dir/summary.json`` and return its path.

    An undefined metric (NaN or infinite, such as the recall of a class
    without test records) is written as JSON ``null``, because NaN is not
    valid JSON and strict parsers reject the file.
    """
    content = json_safe({"format_version": FORMAT_VERSION, **summary})
    path = Path(run_dir) / "summary.json"
    atomic_write_text(path, json.dumps(content, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def json_safe(value: Any) -> Any:
    """Return ``value`` with every NaN or infinite float replaced by None, recursively.

    Mappings become dicts, and lists, tuples and numpy arrays become lists.
    numpy scalars become Python numbers, so ``json.dumps`` accepts them.
    """
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if np.isfinite(number) else None
    return value


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Return the content of ``run_dir/summary.json``.

    An undefined metric is None (JSON ``null``). Files written before
    undefined metrics became ``null`` contain bare ``NaN``, which this
    reader also accepts and returns as ``float('nan')``.

    Raises
    ------
    FileNotFoundError
        When the run has no summary (it did not finish).
    ValueError
        When the file has another ``format_version``.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no summary.json in {run_dir}: the run has not finished")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {summary.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}; read it with the metals version that wrote it"
        )
    return summary


def write_config(run_dir: Path, config: Mapping[str, Any]) -> Path:
    """Write the resolved run config to ``run_dir/config.json`` and return its path."""
    path = Path(run_dir) / "config.json"
    atomic_write_text(path, json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return path


def save_model(run_dir: Path, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Save the final global weights as a torch state_dict to ``run_dir/model.pt``."""
    path = Path(run_dir) / "model.pt"
    temporary = path.with_name(".model.pt.tmp")
    # Imported here so that the run-directory checks of metals run stay free of torch.
    import torch

    torch.save(dict(state_dict), temporary)
    os.replace(temporary, path)
    return path
