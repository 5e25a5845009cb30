"""Tests of the results table and the plots on small run directories the tests write."""

import csv
import json

import pytest

from metals.plots import (
    CONFUSION_PLOT,
    LABELS_PLOT,
    RECALL_PLOT,
    ROUND_PLOT,
    plot_per_class_recall,
    summary_value,
    write_plots,
)
from metals.tables import (
    METRICS_COLUMNS,
    RESULTS_FILE,
    ResultsError,
    describe_run,
    format_results_table,
    read_metrics_csv,
    write_results_table,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ["normal", "DoS", "Probe", "R2L", "U2R"]


def write_run(run_dir, *, rounds=3, config=None, best=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(METRICS_COLUMNS)
        for number in range(1, rounds + 1):
            writer.writerow(
                [
                    number,
                    0.70 + 0.02 * number,
                    0.50 + 0.03 * number,
                    0.80 + 0.01 * number if best else "",
                    0.60 + 0.01 * number if best else "",
                    100 * number,
                    0.2 + 0.1 * number,
                    1.5,
                ]
            )
    summary = {
        "format_version": 1,
        "class_names": CLASS_NAMES,
        "final": {
            "accuracy": 0.76,
            "recall": {name: 0.9 - 0.1 * index for index, name in enumerate(CLASS_NAMES)},
            "confusion_matrix": [[10 if i == j else 1 for j in range(5)] for i in range(5)],
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    config = config or {"strategy": "fedavg", "proximal-mu": 0.0, "al-strategy": "margin"}
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def test_table_first_and_last_round(tmp_path):
    # Prepare
    run_dir = write_run(tmp_path / "run", rounds=3)

    # Execute
    table = write_results_table(run_dir)

    # Assert
    header, _, row = table.splitlines()[:3]
    assert "B round 1" in header
    assert "G round 3" in header
    assert row.startswith("| FedAvg, margin |")
    assert "| 0.8100 | 0.6100 | 0.7200 |" in row
    assert "| 0.8300 | 0.6300 | 0.7600 | 0.5900 |" in row
    assert "50.0% (300 bought)" in row
    assert (run_dir / RESULTS_FILE).read_text().strip() == table


def test_table_of_sweep_has_row_per_run(tmp_path):
    # Prepare
    first = write_run(tmp_path / "0")
    second = write_run(
        tmp_path / "1",
        config={"strategy": "fedprox", "proximal-mu": 0.5, "al-strategy": "entropy"},
    )

    # Execute
    table = format_results_table([first, second])

    # Assert
    assert "| FedAvg, margin |" in table
    assert "| FedProx(0.5), entropy |" in table


def test_seed_sweep_rows_name_seed(tmp_path):
    # Prepare: two runs that differ only in their seed and run directory.
    config = {"strategy": "fedavg", "proximal-mu": 0.0, "al-strategy": "margin"}
    first = write_run(tmp_path / "0", config={**config, "seed": 1, "run-dir": "/a"})
    second = write_run(tmp_path / "1", config={**config, "seed": 2, "run-dir": "/b"})

    # Execute
    table = format_results_table([first, second])

    # Assert
    assert "| FedAvg, margin, seed 1 |" in table
    assert "| FedAvg, margin, seed 2 |" in table


def test_table_without_client_accuracy(tmp_path):
    # Prepare
    run_dir = write_run(tmp_path / "run", best=False)

    # Execute
    table = format_results_table([run_dir])

    # Assert
    assert "| n/a | n/a | 0.7200 |" in table


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"strategy": "fedavg", "mode": "classical"}, "FedAvg, classical FL"),
        (
            {"strategy": "fedprox", "proximal-mu": 0.8, "al-strategy": "random"},
            "FedProx(0.8), random",
        ),
        (
            {"strategy": "fedavg", "al-strategy": "margin", "label-budget": 0.5},
            "FedAvg, margin, label budget 50%",
        ),
        (
            {"strategy": "fedavg", "mode": "classical", "label-budget": 0.5},
            "FedAvg, classical FL",
        ),
    ],
)
def test_describe_run_labels(config, expected):
    # Assert
    assert describe_run(config) == expected


def test_describe_centralized_run():
    # Assert
    assert describe_run({"mode": "metals"}, "centralized") == "centralized (every label)"


def test_metrics_missing_file_named(tmp_path):
    # Execute
    with pytest.raises(ResultsError) as caught:
        read_metrics_csv(tmp_path)

    # Assert
    assert "metrics.csv" in str(caught.value)


def test_metrics_missing_column_named(tmp_path):
    # Prepare
    (tmp_path / "metrics.csv").write_text("round,accuracy\n1,0.5\n")

    # Execute
    with pytest.raises(ResultsError) as caught:
        read_metrics_csv(tmp_path)

    # Assert
    assert "macro_f1" in str(caught.value)


def test_metrics_bad_value_names_line(tmp_path):
    # Prepare
    run_dir = write_run(tmp_path / "run")
    text = (run_dir / "metrics.csv").read_text().splitlines()
    text[2] = text[2].replace("0.74", "oops", 1)
    (run_dir / "metrics.csv").write_text("\n".join(text) + "\n")

    # Execute
    with pytest.raises(ResultsError) as caught:
        read_metrics_csv(run_dir)

    # Assert
    assert "line 3" in str(caught.value)
    assert "'oops'" in str(caught.value)


def test_metrics_without_rounds_rejected(tmp_path):
    # Prepare
    (tmp_path / "metrics.csv").write_text(",".join(METRICS_COLUMNS) + "\n")

    # Execute / Assert
    with pytest.raises(ResultsError, match="no rounds"):
        read_metrics_csv(tmp_path)


def test_plots_written_as_png(tmp_path):
    # Prepare
    run_dir = write_run(tmp_path / "run")

    # Execute
    paths = write_plots(run_dir)

    # Assert
    names = sorted(path.name for path in paths)
    assert names == sorted([ROUND_PLOT, LABELS_PLOT, RECALL_PLOT, CONFUSION_PLOT])
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_reject_mismatched_matrix(tmp_path):
    # Prepare
    run_dir = write_run(tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final"]["confusion_matrix"] = [[1, 2], [3, 4]]
    (run_dir / "summary.json").write_text(json.dumps(summary))

    # Execute / Assert
    with pytest.raises(ResultsError, match="5 class names"):
        write_plots(run_dir)


def test_summary_value_missing_key_named():
    # Execute
    with pytest.raises(ResultsError) as caught:
        summary_value({"final": {"accuracy": 1.0}}, "recall")

    # Assert
    assert "'recall'" in str(caught.value)


def test_recall_plot_accepts_missing_class(tmp_path):
    # Prepare: a class without test records has recall null in summary.json.
    recall = {"normal": 0.9, "U2R": None}

    # Execute
    path = plot_per_class_recall(recall, tmp_path / "recall.png")

    # Assert
    assert path.read_bytes().startswith(b"\x89PNG")
