"""PNG plots of a finished run, drawn from ``metrics.csv`` and ``summary.json``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from metals.tables import (  # noqa: E402
    SUMMARY_FILE,
    ResultsError,
    read_json,
    read_metrics_csv,
)

logger = logging.getLogger(__name__)

ROUND_PLOT = "accuracy_per_round.png"
LABELS_PLOT = "accuracy_vs_labels.png"
RECALL_PLOT = "per_class_recall.png"
CONFUSION_PLOT = "confusion_matrix.png"


def summary_value(summary: Mapping[str, Any], key: str) -> Any:
    """Return ``summary[key]``, also when it sits one level down (e.g. under ``final``).

    Raises
    ------
    ResultsError
        When no top-level or second-level entry has that key.
    """
    if key in summary:
        return summary[key]
    for value in summary.values():
        if isinstance(value, Mapping) and key in value:
            return value[key]
    raise ResultsError(f"{SUMMARY_FILE} has no '{key}' entry; keys: {', '.join(summary)}")


def plot_rounds(rows: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Plot global accuracy and macro-F1 per round, with the best and worst client accuracy."""
    rounds = [row["round"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(rounds, [row["accuracy"] for row in rows], marker="o", label="global accuracy")
    axes.plot(rounds, [row["macro_f1"] for row in rows], marker="s", label="global macro-F1")

    best = [row["best_client_accuracy"] for row in rows]
    worst = [row["worst_client_accuracy"] for row in rows]
    if not all(math.isnan(value) for value in best + worst):
        axes.plot(rounds, best, linestyle="--", label="best client accuracy")
        axes.plot(rounds, worst, linestyle=":", label="worst client accuracy")

    axes.set_xlabel("round")
    axes.set_ylabel("score")
    axes.set_title("Accuracy and macro-F1 per round")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_accuracy_vs_labels(rows: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Plot global accuracy against the labels bought from the oracle so far."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(
        [row["labels_queried_total"] for row in rows],
        [row["accuracy"] for row in rows],
        marker="o",
    )
    for row in (rows[0], rows[-1]):
        axes.annotate(
            f"round {int(row['round'])}",
            (row["labels_queried_total"], row["accuracy"]),
            textcoords="offset points",
            xytext=(4, -12),
        )
    axes.set_xlabel("labels bought (records)")
    axes.set_ylabel("global accuracy")
    axes.set_title("Accuracy against labels bought")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_per_class_recall(recall: Mapping[str, float | None], path: Path) -> Path:
    """Plot the global model's recall of each class as horizontal bars.

    A class without test records has recall ``None`` (``null`` in summary.json).
    It is drawn as an empty bar labelled ``n/a``.
    """
    names = list(recall)
    values = [math.nan if recall[name] is None else float(recall[name]) for name in names]
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    bars = axes.barh(names, values)
    labels = ["n/a" if math.isnan(value) else f"{value:.3f}" for value in values]
    axes.bar_label(bars, labels=labels, padding=3)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.1)
    axes.set_xlabel("recall")
    axes.set_title("Per-class recall of the global model")
    return _save(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path
) -> Path:
    """Plot the confusion matrix, coloured by row share and annotated with counts.

    Parameters
    ----------
    matrix : Sequence[Sequence[int]]
        Counts of shape (n_classes, n_classes), true class by row, predicted
        class by column.
    class_names : Sequence[str]
        Name of each row and column.
    path : Path
        PNG file to write.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ResultsError(
            f"confusion matrix of shape {counts.shape} does not match "
            f"{len(class_names)} class names"
        )
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    size = max(5.0, 0.6 * len(class_names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    for row in range(len(class_names)):
        for column in range(len(class_names)):
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(
                column,
                row,
                f"{counts[row, column]:,}",
                ha="center",
                va="center",
                color=colour,
                fontsize=8,
            )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix on the global test set")
    return _save(figure, path)


def write_plots(run_dir: str | Path) -> list[Path]:
    """Draw every plot of a run into its directory.

    Returns
    -------
    list[Path]
        The PNG files written: accuracy and macro-F1 per round, accuracy
        against labels bought, per-class recall and the confusion matrix.

    Raises
    ------
    ResultsError
        When ``metrics.csv`` or ``summary.json`` is missing or lacks an entry.
    """
    run_dir = Path(run_dir)
    rows = read_metrics_csv(run_dir)
    summary = read_json(run_dir, SUMMARY_FILE)
    class_names = [str(name) for name in summary_value(summary, "class_names")]
    recall = summary_value(summary, "recall")
    if not isinstance(recall, Mapping):
        raise ResultsError(f"'recall' in {run_dir / SUMMARY_FILE} must map class names to values")

    paths = [
        plot_rounds(rows, run_dir / ROUND_PLOT),
        plot_accuracy_vs_labels(rows, run_dir / LABELS_PLOT),
        plot_per_class_recall(recall, run_dir / RECALL_PLOT),
        plot_confusion_matrix(
            summary_value(summary, "confusion_matrix"), class_names, run_dir / CONFUSION_PLOT
        ),
    ]
    logger.info("wrote %d plots to %s", len(paths), run_dir)
    return paths


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
