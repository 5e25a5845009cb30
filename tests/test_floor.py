"""The speed floor (bench/floor.py) computes what a metals run computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from metals.tables import read_metrics_csv

FLOOR_PATH = Path(__file__).resolve().parents[1] / "bench" / "floor.py"


@pytest.fixture(scope="module")
def floor():
    spec = importlib.util.spec_from_file_location("metals_bench_floor", FLOOR_PATH)
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while the file runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _config(data_dir: Path, **overrides) -> dict:
    return {
        "dataset": "nsl_kdd",
        "data-dir": str(data_dir),
        "num-clients": 3,
        "fraction-train": 1.0,
        "num-rounds": 2,
        "local-epochs": 1,
        "al-strategy": "margin",
        "seed": 5,
        **overrides,
    }


def test_floor_classical_buys_no_labels(floor, data_dir):
    result = floor.run_floor(_config(data_dir, mode="classical", **{"num-rounds": 1}))

    record = result["rounds"][0]
    assert record["labels_queried_total"] == 0
    assert record["labeled_fraction"] == 1.0
    assert record["sampled"] == [0, 1, 2]


def test_floor_samples_flower_count(floor, data_dir):
    result = floor.run_floor(_config(data_dir, **{"num-clients": 10, "fraction-train": 0.2}))

    assert [len(record["sampled"]) for record in result["rounds"]] == [2, 2]


def test_floor_labels_grow_each_round(floor, data_dir):
    result = floor.run_floor(_config(data_dir))

    first, second = (record["labels_queried_total"] for record in result["rounds"])
    assert first > 0
    assert second > first


@pytest.mark.slow
def test_floor_matches_metals_run(floor, data_dir, tmp_path):
    # Prepare: every client sampled, so both train the same clients each round.
    config = _config(data_dir, **{"run-dir": str(tmp_path / "run")})
    from metals.simulation import run_experiment

    # Execute
    run_dir = run_experiment(config)
    floor_rounds = floor.run_floor({**config, "run-dir": ""})["rounds"]

    # Assert
    metals_rounds = read_metrics_csv(run_dir)
    assert [int(row["labels_queried_total"]) for row in metals_rounds] == [
        record["labels_queried_total"] for record in floor_rounds
    ]
    assert [row["labeled_fraction"] for row in metals_rounds] == pytest.approx(
        [record["labeled_fraction"] for record in floor_rounds]
    )
    # Round 1 starts from the same weights with the same seeds; only the
    # order of the weighted sum may differ.
    assert metals_rounds[0]["accuracy"] == pytest.approx(floor_rounds[0]["accuracy"], abs=1e-3)
