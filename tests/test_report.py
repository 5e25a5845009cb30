"""metals report: grid expansion, label-efficiency measures and the page on hand-made runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from metals.study.efficiency import (
    area_under_curve,
    compare_to_random,
    first_share_reaching,
    mean_std,
)
from metals.study.grid import GridError, expand_runs, load_grid, parse_strategy
from metals.study.page import collect_results, label_efficiency, write_results_page
from metals.tables import METRICS_COLUMNS

# ---------------------------------------------------------------------------
# Efficiency measures on hand-made curves
# ---------------------------------------------------------------------------


def test_area_of_flat_curve_is_its_accuracy():
    area = area_under_curve([0.2, 0.5, 0.8], [0.7, 0.7, 0.7], 0.2, 0.8)

    assert area == pytest.approx(0.7)


def test_area_of_linear_curve_is_its_midpoint():
    # Accuracy rises from 0.6 at share 0.2 to 0.9 at share 0.8.
    area = area_under_curve([0.2, 0.8], [0.6, 0.9], 0.2, 0.8)

    assert area == pytest.approx(0.75)


def test_area_interpolates_range_ends():
    # Over [0.3, 0.5] the curve runs from 0.65 to 0.75; its mean is 0.7.
    area = area_under_curve([0.2, 0.6], [0.6, 0.8], 0.3, 0.5)

    assert area == pytest.approx(0.7)


def test_area_holds_curve_flat_outside_points():
    area = area_under_curve([0.4, 0.6], [0.5, 0.5], 0.2, 0.8)

    assert area == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("shares", "accuracies", "low", "high"),
    [
        ([0.2, 0.5], [0.7], 0.2, 0.5),
        ([], [], 0.2, 0.5),
        ([0.5, 0.2], [0.7, 0.8], 0.2, 0.5),
        ([0.2, 0.5], [0.7, 0.8], 0.5, 0.5),
    ],
    ids=["mismatched", "empty", "decreasing", "empty-range"],
)
def test_area_rejects_bad_input(shares, accuracies, low, high):
    with pytest.raises(ValueError):
        area_under_curve(shares, accuracies, low, high)


def test_first_share_reaching_picks_first_round():
    share = first_share_reaching([0.2, 0.3, 0.4, 0.5], [0.70, 0.80, 0.79, 0.85], 0.8)

    assert share == pytest.approx(0.3)


def test_first_share_reaching_never_reached_is_nan():
    share = first_share_reaching([0.2, 0.3], [0.70, 0.75], 0.8)

    assert math.isnan(share)


def test_mean_std_skips_nan():
    mean, std = mean_std([1.0, math.nan, 3.0])

    assert mean == pytest.approx(2.0)
    assert std == pytest.approx(math.sqrt(2.0))


def test_mean_std_single_value_has_nan_std():
    mean, std = mean_std([0.5])

    assert mean == 0.5
    assert math.isnan(std)


@pytest.mark.parametrize(
    ("strategy", "random", "expected"),
    [
        ([0.80, 0.81, 0.82], [0.70, 0.71, 0.72], "beats random"),
        ([0.70, 0.71, 0.72], [0.80, 0.81, 0.82], "below random"),
        ([0.70, 0.75, 0.80], [0.72, 0.74, 0.76], "no clear difference"),
    ],
    ids=["better", "worse", "within-spread"],
)
def test_compare_to_random(strategy, random, expected):
    assert compare_to_random(strategy, random) == expected


# ---------------------------------------------------------------------------
# Grid presets and their expansion
# ---------------------------------------------------------------------------


def test_reduced_grid_expands_every_cell_per_seed(tmp_path):
    grid = load_grid("reduced")

    runs = expand_runs(grid, "nsl_kdd", tmp_path)

    cells = {run.cell for run in runs}
    assert len(runs) == len(cells) * len(grid.seeds)
    assert {cell.partition.slug for cell in cells} == {"iid", "dirichlet-0.5", "dirichlet-0.1"}
    assert {cell.al for cell in cells if cell.mode == "metals"} == {
        "random",
        "entropy",
        "margin",
        "least_confidence",
        "kcenter",
    }


def test_full_grid_has_paper_aggregators(tmp_path):
    runs = expand_runs(load_grid("full", seeds=[1]), "nsl_kdd", tmp_path)

    classical = {run.cell.strategy.label for run in runs if run.cell.mode == "classical"}
    metals = {run.cell.strategy.label for run in runs if run.cell.mode == "metals"}
    assert classical == {
        "FedAvg",
        "FedProx(0.3)",
        "FedProx(0.5)",
        "FedProx(0.8)",
        "FedProx(1)",
    }
    assert metals == {"FedAvg", "FedProx(0.3)", "FedProx(0.5)", "FedProx(0.8)"}


def test_ton_iot_main_partition_is_natural(tmp_path):
    runs = expand_runs(load_grid("reduced", seeds=[7]), "ton_iot", tmp_path)

    assert "partition=natural" in runs[0].overrides
    assert "seed=7" in runs[0].overrides


def test_grid_runs_compose_valid_configs(tmp_path):
    from metals.config import compose_run_config

    runs = expand_runs(load_grid("reduced", seeds=[1]), "nsl_kdd", tmp_path)
    fedprox = next(run for run in runs if run.cell.strategy.name == "fedprox")

    config, _ = compose_run_config(fedprox.overrides, run_dir=fedprox.run_dir)

    assert config["strategy"] == "fedprox"
    assert config["proximal-mu"] == 0.5
    assert config["run-dir"] == str(fedprox.run_dir.resolve())


@pytest.mark.parametrize("text", ["fedprox", "fedprox:0", "fedprox:x", "fedavg:1", "scaffold"])
def test_parse_strategy_rejects(text):
    with pytest.raises(GridError):
        parse_strategy(text)


def test_load_grid_missing_file():
    with pytest.raises(GridError, match="not found"):
        load_grid("/nonexistent/grid.yaml")


# ---------------------------------------------------------------------------
# The page from hand-made run directories
# ---------------------------------------------------------------------------


def _write_run(run_dir: Path, accuracies: list[float], shares: list[float]) -> None:
    run_dir.mkdir(parents=True)
    lines = [",".join(METRICS_COLUMNS)]
    for index, (accuracy, share) in enumerate(zip(accuracies, shares, strict=True), start=1):
        row = {
            "round": index,
            "accuracy": accuracy,
            "macro_f1": accuracy / 2,
            "best_client_accuracy": accuracy + 0.1,
            "worst_client_accuracy": accuracy - 0.1,
            "labels_queried_total": int(share * 1000),
            "labeled_fraction": share,
            "round_seconds": 1.0,
        }
        lines.append(",".join(str(row[column]) for column in METRICS_COLUMNS))
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"accuracy": accuracies[-1], "support": {"normal": 60, "attack": 40}}
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture()
def small_grid(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "seeds: [1, 2]\n"
        "modes: {classical: [num_rounds=3], metals: [num_rounds=3]}\n"
        "main:\n"
        "  - {mode: classical, strategies: [fedavg]}\n"
        "  - {mode: metals, al: [random, margin, entropy], strategies: [fedavg]}\n"
    )
    grid = load_grid(str(spec))
    runs = expand_runs(grid, "nsl_kdd", tmp_path / "runs")
    shares = [0.2, 0.4, 0.6]
    curves = {
        "classical": ([0.80, 0.80, 0.80], [1.0, 1.0, 1.0]),
        "random": ([0.60, 0.65, 0.70], shares),
        "margin": ([0.70, 0.795, 0.80], shares),
        # Same curve as random: no difference beyond the spread over seeds.
        "entropy": ([0.60, 0.65, 0.70], shares),
    }
    for run in runs:
        accuracies, run_shares = curves[run.cell.al or "classical"]
        offset = 0.002 * run.seed
        _write_run(run.run_dir, [value + offset for value in accuracies], run_shares)
    return grid, runs


def test_efficiency_on_hand_made_runs(small_grid):
    # Prepare
    _, runs = small_grid
    results, missing = collect_results(runs)

    # Execute
    measures, references, share_range = label_efficiency(results)

    # Assert
    by_al = {measure.result.cell.al: measure for measure in measures}
    assert missing == []
    assert share_range == (0.2, 0.6)
    assert references["FedAvg"] == pytest.approx(0.803)
    # margin over [0.2, 0.6]: ((0.70 + 0.795) / 2 + (0.795 + 0.80) / 2) / 2 = 0.7725, plus
    # the seed offsets 0.002 and 0.004.
    assert by_al["margin"].areas == pytest.approx([0.7745, 0.7765])
    # 99% of 0.803 is 0.79497: margin first reaches it at share 0.4, random never.
    assert by_al["margin"].reach_shares == pytest.approx([0.4, 0.4])
    assert all(math.isnan(share) for share in by_al["random"].reach_shares)
    assert by_al["margin"].verdict == "beats random"
    assert by_al["entropy"].verdict == "no clear difference"


def test_page_names_command_and_weak_strategy(small_grid, tmp_path):
    # Prepare
    grid, runs = small_grid
    page = tmp_path / "docs" / "results.md"

    # Execute
    write_results_page(runs, grid, page, tmp_path / "docs" / "figures", command="metals report X")

    # Assert
    text = page.read_text()
    assert "`metals report X`" in text
    assert "IID, FedAvg, entropy does not beat random" in text
    assert "FedAvg, margin does not beat" not in text
    assert (tmp_path / "docs" / "figures" / "nsl_kdd-label-efficiency.png").is_file()
    assert "](figures/nsl_kdd-label-efficiency.png)" in text
    assert "'normal', makes up 0.6000 of it" in text


def test_page_lists_unfinished_runs(small_grid, tmp_path):
    grid, runs = small_grid
    (runs[-1].run_dir / "summary.json").unlink()

    write_results_page(runs, grid, tmp_path / "page.md", tmp_path / "figures", command="c")

    text = (tmp_path / "page.md").read_text()
    assert f"{len(runs) - 1} of {len(runs)} runs finished" in text
    assert "## Runs not finished" in text


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def test_report_command_page_only(small_grid, tmp_path):
    # Prepare: small_grid wrote its runs under tmp_path / "runs".
    from metals.cli import main

    page = tmp_path / "out" / "results.md"
    argv = [
        "report",
        "--grid",
        str(tmp_path / "grid.yaml"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--page",
        str(page),
        "--figures",
        str(tmp_path / "out" / "figures"),
        "--page-only",
    ]

    # Execute
    code = main(argv)

    # Assert
    assert code == 0
    assert "8 of 8 runs finished" in page.read_text()


def test_report_command_rejects_bad_seeds(tmp_path, capsys):
    from metals.cli import main

    code = main(["report", "--seeds", "1,x", "--page-only", "--runs-dir", str(tmp_path)])

    assert code == 2
    assert "invalid --seeds '1,x'" in capsys.readouterr().err
