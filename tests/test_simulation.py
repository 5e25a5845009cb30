"""Real Flower simulations (Ray) on NSL-KDD: a full run, and resuming a killed run."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from simulation_support import expected_labeled_fraction

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


class _RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    progress = []
    flower_records = _RecordList()
    logging.getLogger("flwr").addHandler(flower_records)
    try:
        returned = run_experiment(_config(data_dir, run_dir), progress=progress.append)
    finally:
        logging.getLogger("flwr").removeHandler(flower_records)
    return returned, progress, flower_records.records


def test_run_writes_every_round(finished_run):
    run_dir, progress, _ = finished_run

    metrics = read_metrics(run_dir)

    assert tuple(metrics.columns) == METRICS_COLUMNS
    assert metrics["round"].tolist() == [1, 2, 3]
    assert [p.round for p in progress] == [1, 2, 3]


def test_run_beats_majority_class(finished_run, data_dir):
    run_dir, _, _ = finished_run
    y_test = prepare_dataset("nsl_kdd", data_dir).y_test
    majority_rate = np.bincount(y_test).max() / len(y_test)

    metrics = read_metrics(run_dir)

    assert metrics["accuracy"].iloc[-1] > majority_rate


def test_run_labels_bought_grow_each_round(finished_run):
    run_dir, _, _ = finished_run

    labels = read_metrics(run_dir)["labels_queried_total"].tolist()

    assert labels[0] > 0
    assert all(later > earlier for earlier, later in zip(labels, labels[1:], strict=False))


def test_run_labeled_fraction_counts_all_clients(finished_run, data_dir):
    run_dir, _, _ = finished_run
    metrics = read_metrics(run_dir)

    expected = expected_labeled_fraction(data_dir, 3, metrics["labels_queried_total"])

    assert np.allclose(metrics["labeled_fraction"], expected)


def test_quiet_run_hides_flower_notices(finished_run):
    _, _, records = finished_run

    messages = [record.getMessage() for record in records]

    assert not any("`run_simulation` function is deprecated" in m for m in messages)
    assert not any("fraction_evaluate is set to 0.0" in m for m in messages)


def test_run_directory_contents(finished_run):
    run_dir, _, _ = finished_run

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
    import json, os, signal, sys, time
    from pathlib import Path

    import numpy as np

    from metals.simulation import run_experiment

    config = json.loads(sys.argv[1])
    state = Path(config["run-dir"]) / "client-state"

    def trained_round_three(path):
        try:
            with np.load(path) as content:
                return int(content["trained_round"]) == 3
        except (OSError, ValueError, KeyError):
            return False

    def kill_after_round_two(progress):
        # The server sends round 3 before it reports round 2: wait until every
        # client has trained it, so the killed server never records a round
        # its clients finished.
        if progress.round == 2:
            deadline = time.monotonic() + 120
            paths = [state / f"partition-{i}.npz" for i in range(config["num-clients"])]
            while time.monotonic() < deadline and not all(map(trained_round_three, paths)):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    run_experiment(config, progress=kill_after_round_two)
    """
)


def _client_pools(run_dir, num_clients):
    """Return the pools each client saved in the run directory, by partition id."""
    pools = {}
    for partition_id in range(num_clients):
        path = run_dir / "client-state" / f"partition-{partition_id}.npz"
        with np.load(path) as content:
            pools[partition_id] = {key: content[key] for key in content.files}
    return pools


def test_killed_run_resumes_from_last_round(finished_run, data_dir, tmp_path):
    # Prepare: a server process killed after round 2 of 3, once its clients trained round 3.
    uninterrupted = read_metrics(finished_run[0])
    run_dir = tmp_path / "run"
    config = _config(data_dir, run_dir)
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
    before = read_metrics(run_dir)
    pools_before = _client_pools(run_dir, 3)

    # Execute
    run_experiment(config)
    after = read_metrics(run_dir)
    pools_after = _client_pools(run_dir, 3)

    # Assert: the server continues from round 2.
    assert returncode == -signal.SIGKILL
    assert before["round"].tolist() == [1, 2]
    assert after["round"].tolist() == [1, 2, 3]
    assert after.iloc[:2].equals(before)
    assert read_summary(run_dir)["rounds_completed"] == 3

    # Assert: every client had trained round 3, which the killed server never
    # recorded, and continues from the labels it bought in rounds 1-2.
    for partition_id in range(3):
        old, new = pools_before[partition_id], pools_after[partition_id]
        kept = old["label_rounds"] <= 2
        assert int(old["trained_round"]) == 3
        assert int(new["trained_round"]) == 3
        assert np.array_equal(new["labeled"][: int(kept.sum())], old["labeled"][kept])
    assert after["labels_queried_total"].tolist() == uninterrupted["labels_queried_total"].tolist()

    # Assert: the resumed run ends with the uninterrupted run's metrics, bit for bit.
    timings = "round_seconds"
    assert after.drop(columns=timings).equals(uninterrupted.drop(columns=timings))


def test_existing_run_without_resume_rejected(finished_run, data_dir):
    run_dir, _, _ = finished_run

    with pytest.raises(ValueError, match="resume=true"):
        run_experiment(_config(data_dir, run_dir, resume=False))
