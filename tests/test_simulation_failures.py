"""Real Flower simulations where some clients crash, time out or send corrupt weights."""

import logging
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation
from simulation_support import expected_labeled_fraction

from metals.client.app import train as metals_train
from metals.common.runconfig import validate_run_config
from metals.server.app import build_server_app
from metals.server.results import read_metrics
from metals.simulation import backend_config

pytestmark = pytest.mark.slow

ROUND_TIMEOUT = 20.0

faulty_app = ClientApp()


@faulty_app.train()
def faulty_train(msg: Message, context: Context) -> Message:
    """Partition 1 crashes, 2 is too slow in round 2, 3 sends NaN weights, 0 behaves."""
    partition_id = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    if partition_id == 1:
        raise RuntimeError("simulated device crash")
    if partition_id == 2 and server_round == 2:
        time.sleep(ROUND_TIMEOUT + 5)
    reply = metals_train(msg, context)
    if partition_id == 3:
        arrays = reply.content["arrays"]
        reply.content["arrays"] = ArrayRecord(
            {key: Array(np.full(array.shape, np.nan, np.float32)) for key, array in arrays.items()}
        )
    return reply


def _config(data_dir, run_dir, **overrides):
    config = {
        "dataset": "nsl_kdd",
        "data-dir": str(data_dir),
        "num-clients": 4,
        "num-rounds": 2,
        "fraction-train": 1.0,
        "local-epochs": 1,
        "query-fraction": 0.1,
        "run-dir": str(run_dir),
        "round-timeout": ROUND_TIMEOUT,
    }
    config.update(overrides)
    return validate_run_config(config)


def _simulate(config):
    run_simulation(
        server_app=build_server_app(config),
        client_app=faulty_app,
        num_supernodes=int(config["num-clients"]),
        backend_config=backend_config(),
    )


def test_round_completes_without_bad_replies(data_dir, tmp_path, caplog):
    # Prepare: one valid reply of four is enough.
    config = _config(data_dir, tmp_path / "run", **{"min-valid-fraction": 0.25})
    caplog.set_level(logging.WARNING, logger="metals")

    # Execute
    _simulate(config)

    # Assert
    metrics = read_metrics(tmp_path / "run")
    assert metrics["round"].tolist() == [1, 2]
    assert np.isfinite(metrics["accuracy"]).all()
    expected = expected_labeled_fraction(data_dir, 4, metrics["labels_queried_total"])
    assert np.allclose(metrics["labeled_fraction"], expected)
    left_out = [r.getMessage() for r in caplog.records if r.name == "metals.server.strategy"]
    assert any("simulated device crash" in line for line in left_out)
    assert any("contain NaN or Inf" in line for line in left_out)
    assert any("sent no reply before the timeout" in line for line in left_out)


def test_round_fails_with_too_few_valid_replies(data_dir, tmp_path):
    config = _config(data_dir, tmp_path / "run", **{"min-valid-fraction": 0.75, "num-rounds": 1})

    with pytest.raises(Exception, match="round 1 failed: 2 valid replies from 4 sampled clients"):
        _simulate(config)
    assert not (tmp_path / "run" / "metrics.csv").exists()
