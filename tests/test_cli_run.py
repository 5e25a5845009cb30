"""Tests of ``metals run`` and ``metals centralized`` through Hydra, on real NSL-KDD files."""

import csv
import json
import os
from pathlib import Path

import pytest

from metals.cli import main, run_with_hydra
from metals.tables import METRICS_COLUMNS

DATA_DIR = Path(
    os.environ.get("METALS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_nsl_kdd = pytest.mark.skipif(
    not (DATA_DIR / "nsl-kdd" / "KDDTest+.txt").is_file(),
    reason=f"NSL-KDD files not found under {DATA_DIR}; set METALS_DATA_DIR",
)


def fake_experiment(calls):
    """Return an ``execute`` that records its arguments and writes a two-round run."""

    def execute(run_config, verbose):
        calls.append((dict(run_config), verbose))
        run_dir = Path(run_config["run-dir"])
        with (run_dir / "metrics.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRICS_COLUMNS)
            writer.writerow([1, 0.5, 0.4, 0.6, 0.4, 10, 0.3, 1.0])
            writer.writerow([2, 0.7, 0.5, 0.8, 0.6, 20, 0.4, 1.0])
        summary = {
            "class_names": ["normal", "attack"],
            "recall": {"normal": 0.9, "attack": 0.5},
            "confusion_matrix": [[9, 1], [5, 5]],
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        (run_dir / "config.json").write_text(json.dumps(dict(run_config)))
        return run_dir

    return execute


def test_run_dir_from_hydra(tmp_path, capsys):
    # Prepare
    calls = []
    run_dir = tmp_path / "run"

    # Execute
    code = run_with_hydra(
        [f"hydra.run.dir={run_dir}", "num_clients=3"], "run", fake_experiment(calls)
    )

    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert len(calls) == 1
    assert calls[0][0]["run-dir"] == str(run_dir.resolve())
    assert calls[0][0]["num-clients"] == 3
    assert calls[0][1] is False
    assert (run_dir / "results.md").is_file()
    assert (run_dir / "confusion_matrix.png").is_file()
    assert (run_dir / "metals.log").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert f"run directory: {run_dir.resolve()}" in out
    assert "| FedAvg, margin |" in out


def test_multirun_sweeps_grid(tmp_path, capsys):
    # Prepare
    calls = []
    sweep_dir = tmp_path / "sweep"

    # Execute
    code = run_with_hydra(
        ["-m", f"hydra.sweep.dir={sweep_dir}", "al=margin,entropy"],
        "run",
        fake_experiment(calls),
    )

    # Assert
    table = (sweep_dir / "results.md").read_text()
    assert code == 0
    assert [config["al-strategy"] for config, _ in calls] == ["margin", "entropy"]
    assert (sweep_dir / "0" / "results.md").is_file()
    assert (sweep_dir / "1" / "results.md").is_file()
    assert "| FedAvg, margin |" in table
    assert "| FedAvg, entropy |" in table
    assert str(sweep_dir / "results.md") in capsys.readouterr().out


def test_sweep_with_bad_job_runs_nothing(tmp_path, capsys):
    # Prepare
    calls = []

    # Execute
    code = run_with_hydra(
        ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "num_rounds=2,0"],
        "run",
        fake_experiment(calls),
    )

    # Assert
    assert code == 2
    assert calls == []
    assert not (tmp_path / "sweep").exists()
    assert "num_rounds" in capsys.readouterr().err


def test_verbose_flag_passed(tmp_path):
    # Prepare
    calls = []

    # Execute
    run_with_hydra([f"hydra.run.dir={tmp_path}", "verbose=true"], "run", fake_experiment(calls))

    # Assert
    assert calls[0][1] is True


@needs_nsl_kdd
@pytest.mark.slow
def test_centralized_on_nsl_kdd(tmp_path, capsys):
    # Execute
    code = main(
        [
            "centralized",
            f"hydra.run.dir={tmp_path}",
            f"data_dir={DATA_DIR}",
            "num_rounds=1",
            "train.hidden_layers=[16]",
        ]
    )

    # Assert
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0
    assert summary["training"] == "centralized"
    assert summary["labeled_fraction"] == 1.0
    assert summary["class_names"] == ["normal", "DoS", "Probe", "R2L", "U2R"]
    assert 0.5 < summary["accuracy"] <= 1.0
    assert (tmp_path / "per_class_recall.png").is_file()
    assert "| centralized (every label) |" in capsys.readouterr().out


@needs_nsl_kdd
@pytest.mark.slow
def test_run_simulation_on_nsl_kdd(tmp_path, capsys):
    # Execute: the smallest real federation, two clients for one round.
    code = main(
        [
            "run",
            f"hydra.run.dir={tmp_path}",
            f"data_dir={DATA_DIR}",
            "num_clients=2",
            "num_rounds=1",
            "fl.fraction_train=1.0",
            "train.local_epochs=1",
        ]
    )

    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "round 1/1 | clients 2/2" in out
    assert (tmp_path / "metrics.csv").is_file()
    assert (tmp_path / "results.md").is_file()
    assert (tmp_path / "accuracy_vs_labels.png").is_file()


def test_missing_data_one_line_exit_1(tmp_path, capsys):
    # Prepare
    run_dir = tmp_path / "run"

    # Execute
    with pytest.raises(SystemExit) as caught:
        main(["centralized", f"hydra.run.dir={run_dir}", f"data_dir={tmp_path / 'empty'}"])

    # Assert
    err = capsys.readouterr().err
    assert caught.value.code == 1
    assert "not found" in err
    assert "Traceback" not in err
    assert "Traceback" in (run_dir / "metals.log").read_text()
