"""Tests of ``metals run`` and ``metals centralized`` through Hydra, on real NSL-KDD files."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from metals.cli import main, run_with_hydra
from metals.server.checkpoint import Checkpoint, save_checkpoint
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


def ray_processes_of(session_dir):
    """Return the command lines of running Ray processes that name ``session_dir``."""
    found = subprocess.run(
        ["pgrep", "-af", "ray::|raylet|gcs_server"], capture_output=True, text=True, check=False
    )
    return [line for line in found.stdout.splitlines() if session_dir in line]


@needs_nsl_kdd
@pytest.mark.slow
def test_run_sigint_exits_130(tmp_path):
    # Prepare: a run long enough to still be going when the first round ends.
    run_dir = tmp_path / "run"
    # Ray's socket paths must stay below 108 bytes, so its folder is short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {
        **os.environ,
        "METALS_DATA_DIR": str(DATA_DIR),
        "RAY_TMPDIR": str(ray_tmp),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "metals.cli",
        "run",
        f"hydra.run.dir={run_dir}",
        "num_clients=2",
        "num_rounds=200",
        "fl.fraction_train=1.0",
        "train.local_epochs=1",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    # Execute: interrupt once the first round line is printed.
    first_line = process.stdout.readline()
    while first_line and not first_line.startswith("round"):
        first_line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)

    # Assert
    assert first_line.split("|")[0].split() == ["round", "1/200"], err
    assert process.returncode == 130
    assert "Traceback" not in err
    assert f"interrupted; rerun the same command with hydra.run.dir={run_dir}" in err
    assert list((run_dir / "checkpoint").glob("weights-*.npz"))
    assert ray_processes_of(str(ray_tmp)) == []


def test_early_interrupt_says_start_again(tmp_path, capsys):
    # Prepare: a run stopped before any round wrote a checkpoint.
    from metals.simulation import RunInterrupted

    run_dir = tmp_path / "run"

    def interrupted(run_config, verbose):
        raise RunInterrupted(Path(run_config["run-dir"]))

    # Execute
    with pytest.raises(SystemExit) as stopped:
        run_with_hydra([f"hydra.run.dir={run_dir}"], "run", interrupted)

    # Assert: no promise of a resume when nothing was saved.
    err = capsys.readouterr().err
    assert stopped.value.code == 130
    assert f"hydra.run.dir={run_dir} to start again, because no round had completed" in err


def test_resume_mismatch_leaves_run_dir(tmp_path, capsys):
    # Prepare: an nsl_kdd run directory with a checkpoint after round 1.
    run_dir = tmp_path / "run"
    calls = []
    assert run_with_hydra([f"hydra.run.dir={run_dir}"], "run", fake_experiment(calls)) == 0
    arrays = ArrayRecord({"weight": Array(np.zeros((2, 2), dtype=np.float32))})
    save_checkpoint(
        run_dir, Checkpoint(1, arrays, [], {}, random.Random(0).getstate(), calls[0][0])
    )
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    capsys.readouterr()

    # Execute
    calls.clear()
    code = run_with_hydra(
        [f"hydra.run.dir={run_dir}", "dataset=ton_iot"],
        "run",
        fake_experiment(calls),
        check_run_dirs=True,
    )

    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert calls == []
    assert "settings differ from its checkpoint" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides
