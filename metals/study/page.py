"""The results page of the study: tables, label efficiency and PNG figures from finished runs."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from metals.study.efficiency import (  # noqa: E402
    area_under_curve,
    compare_to_random,
    first_share_reaching,
    mean_std,
)
from metals.study.grid import Cell, Grid, GridRun, Partition  # noqa: E402
from metals.tables import ResultsError, read_metrics_csv  # noqa: E402

logger = logging.getLogger(__name__)

#: Share of the full-label accuracy a strategy must reach.
TARGET_SHARE = 0.99


@dataclass(frozen=True)
class CellResult:
    """The finished seeds of one grid cell.

    Attributes
    ----------
    cell : Cell
        The configuration.
    seeds : list[int]
        Seeds with a finished run.
    rounds : list[list[dict[str, float]]]
        ``metrics.csv`` rows of each finished seed, in seed order.
    run_dirs : list[Path]
        Run directory of each finished seed, in seed order.
    """

    cell: Cell
    seeds: list[int]
    rounds: list[list[dict[str, float]]]
    run_dirs: list[Path] = field(default_factory=list)

    def values(self, column: str, where: str = "last") -> list[float]:
        """Return ``column`` of the first or last round of every seed."""
        index = 0 if where == "first" else -1
        return [rows[index][column] for rows in self.rounds]


def machine_description() -> str:
    """Return 'N cores, <CPU model>' from /proc/cpuinfo."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def collect_results(runs: Sequence[GridRun]) -> tuple[list[CellResult], list[GridRun]]:
    """Group the finished runs by cell; return the cells and the runs not finished.

    A run counts as finished when its ``summary.json`` exists and its
    ``metrics.csv`` can be read.
    """
    by_cell: dict[Cell, CellResult] = {}
    missing: list[GridRun] = []
    for run in runs:
        result = by_cell.setdefault(run.cell, CellResult(run.cell, [], []))
        if not (run.run_dir / "summary.json").is_file():
            missing.append(run)
            continue
        try:
            rows = read_metrics_csv(run.run_dir)
        except ResultsError as error:
            logger.warning("run %s left out of the page: %s", run.run_dir, error)
            missing.append(run)
            continue
        result.seeds.append(run.seed)
        result.rounds.append(rows)
        result.run_dirs.append(run.run_dir)
    return [result for result in by_cell.values() if result.seeds], missing


def _cell_text(values: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def results_table(results: Sequence[CellResult]) -> list[str]:
    """Return the METALS-style table: best / worst / global accuracy at the first and last round."""
    lines = [
        "| Run | seeds | B first | W first | G first | B last | W last | G last | Macro-F1 "
        "| labeled share | labels bought |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        bought = mean_std(result.values("labels_queried_total"))[0]
        lines.append(
            f"| {result.cell.label} | {len(result.seeds)} "
            f"| {_cell_text(result.values('best_client_accuracy', 'first'))} "
            f"| {_cell_text(result.values('worst_client_accuracy', 'first'))} "
            f"| {_cell_text(result.values('accuracy', 'first'))} "
            f"| {_cell_text(result.values('best_client_accuracy'))} "
            f"| {_cell_text(result.values('worst_client_accuracy'))} "
            f"| {_cell_text(result.values('accuracy'))} "
            f"| {_cell_text(result.values('macro_f1'))} "
            f"| {_cell_text(result.values('labeled_fraction'), 3)} "
            f"| {bought:,.0f} |"
        )
    return lines


@dataclass(frozen=True)
class Efficiency:
    """Label efficiency of one METALS cell against its full-label reference."""

    result: CellResult
    areas: list[float]
    reach_shares: list[float]
    verdict: str


def _curve(rows: Sequence[Mapping[str, float]]) -> tuple[list[float], list[float]]:
    return [row["labeled_fraction"] for row in rows], [row["accuracy"] for row in rows]


def label_efficiency(
    results: Sequence[CellResult],
) -> tuple[list[Efficiency], dict[str, float], tuple[float, float] | None]:
    """Compute area, 99%-share and the verdict against random for the METALS cells.

    The cells must share one dataset and partition. The full-label
    accuracy of an aggregator is the mean last-round accuracy of its
    classical-FL cell, falling back to the FedAvg classical cell. Areas
    are taken over the share range that every METALS run covers.

    Returns
    -------
    tuple
        The measures per METALS cell, the full-label accuracy per
        aggregator label, and the common share range (None without METALS runs).
    """
    references = {
        result.cell.strategy.label: mean_std(result.values("accuracy"))[0]
        for result in results
        if result.cell.mode == "classical"
    }
    metals = [result for result in results if result.cell.mode == "metals"]
    if not metals:
        return [], references, None
    low = max(rows[0]["labeled_fraction"] for result in metals for rows in result.rounds)
    high = min(rows[-1]["labeled_fraction"] for result in metals for rows in result.rounds)
    if not low < high:
        return [], references, None

    areas = {
        result.cell: [area_under_curve(*_curve(rows), low, high) for rows in result.rounds]
        for result in metals
    }
    randoms = {
        result.cell.strategy: areas[result.cell] for result in metals if result.cell.al == "random"
    }
    measures = []
    for result in metals:
        reference = references.get(result.cell.strategy.label, references.get("FedAvg", math.nan))
        target = TARGET_SHARE * reference
        reach = [first_share_reaching(*_curve(rows), target) for rows in result.rounds]
        if result.cell.al == "random":
            verdict = "(reference)"
        elif result.cell.strategy in randoms:
            verdict = compare_to_random(areas[result.cell], randoms[result.cell.strategy])
        else:
            verdict = "no random cell to compare"
        measures.append(Efficiency(result, areas[result.cell], reach, verdict))
    return measures, references, (low, high)


def efficiency_table(measures: Sequence[Efficiency], references: Mapping[str, float]) -> list[str]:
    """Return the label-efficiency table as Markdown lines."""
    lines = [
        "| Run | area (mean accuracy over the share range) | share at 99% of full-label "
        "accuracy | seeds reaching it | against random |",
        "|---|---:|---:|---:|---|",
    ]
    for measure in measures:
        reached = [share for share in measure.reach_shares if not math.isnan(share)]
        share_text = _cell_text(reached, 3) if reached else "not reached"
        lines.append(
            f"| {measure.result.cell.label} | {_cell_text(measure.areas)} | {share_text} "
            f"| {len(reached)}/{len(measure.reach_shares)} | {measure.verdict} |"
        )
    full = ", ".join(f"{label} {value:.4f}" for label, value in references.items())
    lines += ["", f"Full-label accuracy (classical FL, last round, mean over seeds): {full}."]
    return lines


def verdict_sentences(measures: Sequence[Efficiency], partition: Partition) -> list[str]:
    """Return plain sentences naming the AL strategies that do not beat random."""
    sentences = []
    for measure in measures:
        if measure.verdict in ("no clear difference", "below random"):
            finding = (
                "does not beat random sampling: its area is within the spread over seeds"
                if measure.verdict == "no clear difference"
                else "is below random sampling"
            )
            sentences.append(f"- {partition.label}, {measure.result.cell.label} {finding}.")
    return sentences


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _footer(figure: plt.Figure, command: str) -> None:
    """Print the command and the machine under the figure, wrapped to its width."""
    width = int(figure.get_figwidth() * 17)
    text = textwrap.fill(f"{command} | {machine_description()}", width=width)
    figure.text(0.01, 0.005, text, fontsize=7, color="0.35", ha="left", va="bottom")


def plot_label_efficiency(
    groups: Sequence[tuple[Partition, Sequence[CellResult], Mapping[str, float]]],
    path: Path,
    command: str,
    title: str,
) -> Path:
    """Plot accuracy against labeled share, one panel per partition, FedAvg cells only."""
    figure, axes = plt.subplots(
        1, len(groups), figsize=(5.2 * len(groups), 4.4), squeeze=False, sharey=True
    )
    for axis, (partition, results, references) in zip(axes[0], groups, strict=True):
        for result in results:
            if result.cell.mode != "metals" or result.cell.strategy.name != "fedavg":
                continue
            shares = np.mean(
                [[row["labeled_fraction"] for row in rows] for rows in result.rounds], 0
            )
            accuracy = np.array([[row["accuracy"] for row in rows] for rows in result.rounds])
            mean = accuracy.mean(axis=0)
            axis.plot(shares, mean, marker="o", markersize=3, label=result.cell.al)
            if len(accuracy) > 1:
                spread = accuracy.std(axis=0, ddof=1)
                axis.fill_between(shares, mean - spread, mean + spread, alpha=0.15)

        full = references.get("FedAvg")
        if full is not None and not math.isnan(full):
            axis.axhline(full, color="black", linewidth=1, label="classical FL (all labels)")
            axis.axhline(
                TARGET_SHARE * full, color="black", linestyle=":", linewidth=1, label="99% of it"
            )

        axis.set_title(f"{partition.label}, FedAvg")
        axis.legend(fontsize=7, loc="lower right")
        axis.set_xlabel("labeled share of all clients' pools")
        axis.grid(alpha=0.3)

    axes[0][0].set_ylabel("global accuracy (mean ± sd over seeds)")
    figure.suptitle(title)
    _footer(figure, command)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_rounds(results: Sequence[CellResult], path: Path, command: str, title: str) -> Path:
    """Plot the global accuracy per round of every cell (mean over seeds)."""
    figure, axis = plt.subplots(figsize=(8, 4.8))
    for result in results:
        accuracy = np.array([[row["accuracy"] for row in rows] for rows in result.rounds])
        rounds = [row["round"] for row in result.rounds[0]]
        style = "--" if result.cell.mode == "classical" else "-"
        axis.plot(rounds, accuracy.mean(axis=0), style, label=result.cell.label)
    axis.set_xlabel("round")
    axis.set_ylabel("global accuracy (mean over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    axis.set_title(title)
    _footer(figure, command)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------

DATASET_NAMES = {"nsl_kdd": "NSL-KDD", "ton_iot": "TON_IoT", "edge_iiotset": "Edge-IIoTset"}


def majority_share(run_dir: Path) -> tuple[str, float] | None:
    """Return the test set's most frequent class and its share, from a run's ``summary.json``.

    Returns None when the file has no per-class ``support`` entry.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    support = summary.get("support")
    if not isinstance(support, dict) or not support or sum(support.values()) == 0:
        return None
    name = max(support, key=support.get)
    return name, support[name] / sum(support.values())


def _dataset_section(
    dataset: str,
    results: Sequence[CellResult],
    page: Path,
    figures: Path,
    command: str,
) -> list[str]:
    """Return the Markdown of one dataset and write its figures."""
    name = DATASET_NAMES.get(dataset, dataset)
    partitions: list[Partition] = []
    for result in results:
        if result.cell.partition not in partitions:
            partitions.append(result.cell.partition)

    lines = [f"## {name}", ""]
    majority = majority_share(results[0].run_dirs[0]) if results[0].run_dirs else None
    if majority is not None:
        lines += [
            f"The most frequent class of the global test set, {majority[0]!r}, makes up "
            f"{majority[1]:.4f} of it: a model that always predicts it reaches that accuracy.",
            "",
        ]
    groups = []
    verdicts: list[str] = []
    compared = 0
    for partition in partitions:
        cells = [result for result in results if result.cell.partition == partition]
        measures, references, share_range = label_efficiency(cells)
        groups.append((partition, cells, references))
        lines += [f"### {name}, {partition.label} partition", ""]
        lines += results_table(cells)
        lines.append("")
        if share_range is not None:
            low, high = share_range
            lines += [
                f"Label efficiency over labeled shares {low:.3f} to {high:.3f} (the range every "
                "METALS run of this partition covers):",
                "",
            ]
            lines += efficiency_table(measures, references)
            lines.append("")
            verdicts += verdict_sentences(measures, partition)
            compared += sum(1 for measure in measures if measure.result.cell.al != "random")

    if verdicts:
        lines += ["Where an AL strategy does not beat random:", "", *verdicts, ""]
    elif compared:
        lines += ["Every AL strategy measured beats random sampling on this dataset.", ""]

    efficiency_path = plot_label_efficiency(
        groups,
        figures / f"{dataset}-label-efficiency.png",
        command,
        f"{name}: global accuracy against labels in use",
    )
    main = [result for result in results if result.cell.partition == partitions[0]]
    rounds_path = plot_rounds(
        main,
        figures / f"{dataset}-accuracy-per-round.png",
        command,
        f"{name}, {partitions[0].label}: global accuracy per round",
    )
    for path, caption in (
        (efficiency_path, "accuracy against the labeled share"),
        (rounds_path, "global accuracy per round"),
    ):
        relative = os.path.relpath(path, page.parent)
        lines += [f"![{name}: {caption}]({relative})", ""]
    return lines


def write_results_page(
    runs: Sequence[GridRun], grid: Grid, page: Path, figures: Path, *, command: str
) -> Path:
    """Write the results page and its figures from the finished runs of ``runs``.

    Parameters
    ----------
    runs : Sequence[GridRun]
        Every run of the grid; unfinished ones are listed on the page.
    grid : Grid
        The grid the runs come from.
    page : Path
        Markdown file to write.
    figures : Path
        Folder for the PNG figures.
    command : str
        Command line that produced the runs, named on the page and every figure.

    Returns
    -------
    Path
        ``page``.
    """
    results, missing = collect_results(runs)
    finished = len(runs) - len(missing)
    mode_lines = [
        f"- {mode}: `{' '.join(overrides) or '(config defaults)'}`"
        for mode, overrides in grid.mode_overrides.items()
    ]
    lines = [
        "# METALS study results",
        "",
        f"Written by `{command}` on {date.today().isoformat()}, machine: "
        f"{machine_description()}. Grid `{grid.name}`, seeds "
        f"{', '.join(map(str, grid.seeds))}; {finished} of {len(runs)} runs finished. "
        "Every number below comes from these runs' `metrics.csv`; rerun the command to "
        "reproduce them (finished runs are skipped).",
        "",
        "Run settings per mode (Hydra overrides on top of `conf/config.yaml`):",
        "",
        *mode_lines,
        "",
        "Columns: B, W and G are the best client, worst client and global accuracy at the "
        "first and last round (clients score their local test split after training; the "
        "global model is scored on the dataset's held-out test set). Macro-F1 is the global "
        "model's at the last round. Labeled share: labeled records over all clients' pools. "
        "Values are mean ± sample standard deviation over seeds.",
        "",
        "Label efficiency: the area is the mean global accuracy over a range of labeled "
        "shares (area under the accuracy-against-labeled-share curve divided by its width), "
        "so a higher area means more accuracy for the labels bought. The 99% share is the "
        "labeled share at the first round whose accuracy reaches 99% of the same "
        "aggregator's classical-FL (every label) accuracy. A strategy beats random when "
        "its mean area exceeds random sampling's by more than the larger standard deviation "
        "over seeds.",
        "",
        "Runs with the same seed train the same partitions in every round: the server "
        "samples partitions in a fixed order with a generator seeded from the run seed, so "
        "strategies of one seed differ only in the records they query.",
        "",
    ]
    datasets = []
    for result in results:
        if result.cell.dataset not in datasets:
            datasets.append(result.cell.dataset)
    for dataset in datasets:
        cells = [result for result in results if result.cell.dataset == dataset]
        lines += _dataset_section(dataset, cells, page, figures, command)

    if missing:
        lines += [
            "## Runs not finished",
            "",
            f"{len(missing)} run(s) of the grid have no results yet and are not in the "
            "tables above:",
            "",
        ]
        lines += [
            f"- {run.cell.dataset}, {run.cell.partition.label}, {run.cell.label}, seed {run.seed}"
            for run in missing
        ]
        lines.append("")

    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines), encoding="utf-8")
    return page
