"""The results table of one or more runs, in the form of the METALS tables.

The METALS paper (ISCC 2024, Tables IV-VII) reports, per aggregator, the best
client accuracy (B), the worst client accuracy (W) and the global model
accuracy (G) at the first and the last round. This table adds the final
macro-F1 and the labels used. It is read from a run directory's
``metrics.csv`` and ``config.json``, so it can be rebuilt from any finished run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metals.server.results import METRICS_COLUMNS

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.md"


class ResultsError(ValueError):
    """A run directory whose result files are missing or malformed."""


def read_metrics_csv(run_dir: str | Path) -> list[dict[str, float]]:
    """Read ``metrics.csv`` of a run directory.

    Returns
    -------
    list[dict[str, float]]
        One mapping per round, in file order, with every column of
        :data:`METRICS_COLUMNS` as a float (an empty cell becomes NaN).

    Raises
    ------
    ResultsError
        When the file is missing, has no rows, lacks a column or contains a
        value that is not a number.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ResultsError(f"{path} not found: is {run_dir} the folder of a finished run?")

    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in METRICS_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ResultsError(
                f"{path} lacks column(s) {', '.join(missing)}: a run writes the columns "
                f"{', '.join(METRICS_COLUMNS)}"
            )
        rows = []
        for line_number, record in enumerate(reader, start=2):
            row = {}
            for column in METRICS_COLUMNS:
                text = (record[column] or "").strip()
                try:
                    row[column] = float(text) if text else math.nan
                except ValueError:
                    raise ResultsError(
                        f"{path} line {line_number}: invalid value {text!r} in column "
                        f"{column}: expected a number"
                    ) from None
            rows.append(row)

    if not rows:
        raise ResultsError(f"{path} has no rounds: the run stopped before its first round ended")
    return rows


def read_json(run_dir: str | Path, name: str) -> dict[str, Any]:
    """Read one JSON object file of a run directory, or raise :class:`ResultsError`."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise ResultsError(f"{path} not found: is {run_dir} the folder of a finished run?")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise ResultsError(f"{path} must hold a JSON object, found {type(content).__name__}")
    return content


def describe_run(run_config: Mapping[str, Any], training: str | None = None) -> str:
    """Return a short label such as ``FedProx(0.5), margin`` for a run config.

    A METALS run with a ``label-budget`` below 1 gets it appended, as in
    ``FedAvg, margin, label budget 50%``.

    ``training`` is the ``training`` entry of ``summary.json``; ``"centralized"``
    marks a run of ``metals centralized``.
    """
    if training == "centralized":
        return "centralized (every label)"

    strategy = str(run_config.get("strategy", "fedavg"))
    aggregator = "FedAvg"
    if strategy == "fedprox":
        aggregator = f"FedProx({float(run_config.get('proximal-mu', 0.0)):g})"

    if str(run_config.get("mode", "metals")) == "classical":
        return f"{aggregator}, classical FL"
    label = f"{aggregator}, {run_config.get('al-strategy', '?')}"
    budget = float(run_config.get("label-budget", 1.0))
    if budget < 1:
        label += f", label budget {budget:.0%}"
    return label


@dataclass(frozen=True)
class RunRow:
    """One row of the results table.

    Attributes
    ----------
    label : str
        Run description, e.g. ``FedAvg, margin``.
    first, last : Mapping[str, float]
        ``metrics.csv`` rows of the first and the last round.
    settings : Mapping[str, Any]
        The run config; rows with the same label get the settings that differ.
    """

    label: str
    first: Mapping[str, float]
    last: Mapping[str, float]
    settings: Mapping[str, Any] = field(default_factory=dict)


def load_run_row(run_dir: str | Path) -> RunRow:
    """Build the table row of a run directory from ``metrics.csv`` and ``config.json``."""
    rows = read_metrics_csv(run_dir)
    training = None
    if (Path(run_dir) / SUMMARY_FILE).is_file():
        training = read_json(run_dir, SUMMARY_FILE).get("training")
    label, settings = "run", {}
    if (Path(run_dir) / CONFIG_FILE).is_file():
        settings = read_json(run_dir, CONFIG_FILE)
        label = describe_run(settings, training)
    return RunRow(label=label, first=rows[0], last=rows[-1], settings=settings)


# Run-config keys that name where a run is, not what it computes.
_PLACE_KEYS = ("run-dir", "data-dir")


def _distinct_labels(rows: Sequence[RunRow]) -> list[str]:
    """Return the rows' labels, each shared label followed by the settings that differ.

    A sweep over seeds gives rows such as ``FedAvg, margin`` twice; they
    become ``FedAvg, margin, seed 1`` and ``FedAvg, margin, seed 2``.
    """
    labels = []
    for row in rows:
        twins = [other for other in rows if other.label == row.label]
        if len(twins) == 1:
            labels.append(row.label)
            continue
        keys = sorted({key for twin in twins for key in twin.settings} - set(_PLACE_KEYS))
        differing = [
            key for key in keys if len({repr(twin.settings.get(key)) for twin in twins}) > 1
        ]
        extra = ", ".join(f"{key} {row.settings.get(key)}" for key in differing)
        labels.append(f"{row.label}, {extra}" if extra else row.label)
    return labels


def _score(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def format_results_table(runs: Sequence[str | Path | RunRow]) -> str:
    """Format runs as a Markdown table in the form of the METALS tables.

    Parameters
    ----------
    runs : Sequence[str | Path | RunRow]
        Run directories, or rows already loaded with :func:`load_run_row`.

    Returns
    -------
    str
        A Markdown table with one row per run, followed by a legend. B and W
        are ``n/a`` when no client reported a local accuracy that round.
    """
    rows = [run if isinstance(run, RunRow) else load_run_row(run) for run in runs]
    if not rows:
        raise ResultsError("no runs to tabulate")

    first_rounds = sorted({int(row.first["round"]) for row in rows})
    last_rounds = sorted({int(row.last["round"]) for row in rows})
    first_name = f"round {first_rounds[0]}" if len(first_rounds) == 1 else "first round"
    last_name = f"round {last_rounds[0]}" if len(last_rounds) == 1 else "last round"

    header = (
        f"| Run | B {first_name} | W {first_name} | G {first_name} "
        f"| B {last_name} | W {last_name} | G {last_name} | Macro-F1 | Labels used |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, label in zip(rows, _distinct_labels(rows), strict=True):
        labels = row.last["labels_queried_total"]
        bought = "" if math.isnan(labels) else f" ({int(labels):,} bought)"
        lines.append(
            f"| {label} "
            f"| {_score(row.first['best_client_accuracy'])} "
            f"| {_score(row.first['worst_client_accuracy'])} "
            f"| {_score(row.first['accuracy'])} "
            f"| {_score(row.last['best_client_accuracy'])} "
            f"| {_score(row.last['worst_client_accuracy'])} "
            f"| {_score(row.last['accuracy'])} "
            f"| {_score(row.last['macro_f1'])} "
            f"| {row.last['labeled_fraction']:.1%}{bought} |"
        )
    lines += [
        "",
        "B: best client accuracy, W: worst client accuracy, G: global model accuracy on "
        "the global test set. Macro-F1 is the global model's at the last round. Labels "
        "used: labeled share of the training pools of the clients that took part, with "
        "the labels bought from the oracle in brackets.",
    ]
    return "\n".join(lines)


def write_results_table(run_dir: str | Path) -> str:
    """Write ``results.md`` with the table of one run into its directory and return the table."""
    table = format_results_table([run_dir])
    (Path(run_dir) / RESULTS_FILE).write_text(table + "\n", encoding="utf-8")
    return table
