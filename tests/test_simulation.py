"""Real Flower simulations (Ray) on NSL-KDD: a full run, and resuming a killed run."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from metals.common.data import prepare_dataset
from metals.server.results import METRICS_COLUMNS, read_metrics, read_summary

from metals.simulation import run_experiment

pytestmark = pytest.mark.slow


def _config(data_dir, run_dir, **overrides):
    config = {
        "dataset": "nsl_kdd",
        "data-dir": str(data_dir),
        "num-clients": 3,
        "num-rounds": 3,
        "fraction-train": 1.0,
        "local-epochs": 1,
        "query-fraction": 0.1,
        "run-dir": str(run_dir),
        "round-timeout": 120,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    progress = []
    returned = run_experiment(_config(data_dir, run_dir), progress=progress.append)
    return returned, progress


def test_run_writes_every_round(finished_run):
    run_dir, progress = finished_run

    metrics = read_metrics(run_dir)

    assert tuple(metrics.columns) == METRICS_COLUMNS
    assert metrics["round"].tolist() == [1, 2, 3]
    assert [p.round for p in progress] == [1, 2, 3]


def test_run_beats_majority_class(finished_run, data_dir):
    run_dir, _ = finished_run
    y_test = prepare_dataset("nsl_kdd", data_dir).y_test
    majority_rate = np.bincount(y_test).max() / len(y_test)

    metrics = read_metrics(run_dir)

    assert metrics["accuracy"].iloc[-1] > majority_rate


def test_run_labels_bought_grow_each_round(finished_run):
    run_dir, _ = finished_run

    labels = read_metrics(run_dir)["labels_queried_total"].tolist()

    assert labels[0] > 0
    assert all(later > earlier for earlier, later in zip(labels, labels[1:], strict=False))


def test_run_directory_contents(finished_run):
    run_dir, _ = finished_run

    summary = read_summary(run_dir)

    assert set(summary["recall"]) == set(summary["class_names"])
    assert len(summary["confusion_matrix"]) == len(summary["class_names"])
    assert summary["run_config"]["num-rounds"] == 3
    assert 0 < summary["labeled_fraction"] < 1
    assert (run_dir / "config.json").is_file()
    assert (run_dir / "preprocessor").is_dir()
    assert (run_dir / "checkpoint" / "state.json").is_file()
    assert "head.weight" in torch.load(run_dir / "model.pt")


KILLED_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    from metals.simulation import run_experiment

    def kill_after_round_two(progress):
        if progress.round == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    run_experiment(json.loads(sys.argv[1]), progress=kill_after_round_two)
    """
)


def test_killed_run_resumes_from_last_round(data_dir, tmp_path):
    # Prepare: a server process killed right after round 2 of 4.
    import json

    config = _config(data_dir, tmp_path / "run", **{"num-rounds": 4})
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, json.dumps(config)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        returncode = process.wait(timeout=300)
    finally:
        # Ray helpers the killed process started share its session.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = read_metrics(tmp_path / "run")

    # Execute
    run_experiment(config)
    after = read_metrics(tmp_path / "run")

    # Assert
    assert returncode == -signal.SIGKILL
    assert before["round"].tolist() == [1, 2]
    assert after["round"].tolist() == [1, 2, 3, 4]
    assert after.iloc[:2].equals(before)
    assert after["labels_queried_total"].is_monotonic_increasing
    assert read_summary(tmp_path / "run")["rounds_completed"] == 4


def test_existing_run_without_resume_rejected(finished_run, data_dir):
    run_dir, _ = finished_run

    with pytest.raises(ValueError, match="resume=true"):
        run_experiment(_config(data_dir, run_dir, resume=False))
