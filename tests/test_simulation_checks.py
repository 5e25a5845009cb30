"""Checks run_experiment makes before Flower's simulation starts, and its log filter."""

import logging
import random

import flwr.simulation
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from metals.common.runconfig import validate_run_config
from metals.server.checkpoint import Checkpoint, save_checkpoint
from metals.simulation import FlowerNoticeFilter, run_experiment


def _write_checkpoint(run_dir, config):
    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    save_checkpoint(run_dir, Checkpoint(2, arrays, [], {}, random.getstate(), config))


@pytest.fixture()
def simulation_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kwargs: calls.append(kwargs))
    return calls


def test_existing_run_rejected_before_simulation(tmp_path, simulation_calls):
    # Prepare
    config = {"run-dir": str(tmp_path), "resume": False}
    _write_checkpoint(tmp_path, validate_run_config(config))

    # Execute / Assert
    with pytest.raises(ValueError, match="already contains a run .* set resume=true"):
        run_experiment(config)
    assert simulation_calls == []


def test_more_nodes_than_clients_rejected(tmp_path, simulation_calls):
    # Prepare
    config = {"run-dir": str(tmp_path / "run"), "num-clients": 3, "min-available-nodes": 20}

    # Execute / Assert
    with pytest.raises(ValueError, match="'min-available-nodes': a simulation has only"):
        run_experiment(config)
    assert simulation_calls == []
    assert not (tmp_path / "run").exists()


def test_changed_settings_rejected_before_simulation(tmp_path, simulation_calls):
    _write_checkpoint(tmp_path, validate_run_config({"run-dir": str(tmp_path), "seed": 1}))

    with pytest.raises(ValueError, match="seed: 1 -> 2"):
        run_experiment({"run-dir": str(tmp_path), "seed": 2})
    assert simulation_calls == []


def test_resumable_run_reaches_simulation(tmp_path, simulation_calls):
    config = {"run-dir": str(tmp_path)}
    _write_checkpoint(tmp_path, validate_run_config(config))

    run_experiment(config)

    assert len(simulation_calls) == 1


def _record(level, message, *args):
    return logging.LogRecord("flwr", level, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    "record",
    [
        _record(
            logging.WARNING,
            "DEPRECATED FEATURE: %s",
            "The `run_simulation` function is deprecated and will be removed",
        ),
        _record(logging.WARNING, "fraction_evaluate is set to 0.0. Federated evaluation skipped."),
    ],
    ids=["run-simulation", "fraction-evaluate"],
)
def test_notice_filter_drops_notice(record):
    assert not FlowerNoticeFilter().filter(record)


@pytest.mark.parametrize(
    "record",
    [
        _record(logging.ERROR, "ServerApp thread raised an exception: %s", "boom"),
        _record(logging.WARNING, "DEPRECATED FEATURE: %s", "Passing `enable_tf_gpu_growth`"),
        _record(logging.WARNING, "fraction_train is set to 0.0."),
    ],
    ids=["error", "other-deprecation", "other-warning"],
)
def test_notice_filter_keeps_other_records(record):
    assert FlowerNoticeFilter().filter(record)
