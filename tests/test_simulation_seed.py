"""Real Flower simulations (Ray) on NSL-KDD: the same seed gives the same run."""

import logging
import re

import pytest
import torch

from metals.server.results import read_metrics
from metals.simulation import run_experiment

pytestmark = pytest.mark.slow

SAMPLED = re.compile(r"round (\d+): sampled (.*)")


def _config(data_dir, run_dir, seed):
    # 2 of 4 clients per round, so the seed decides which partitions train.
    return {
        "dataset": "nsl_kdd",
        "data-dir": str(data_dir),
        "num-clients": 4,
        "num-rounds": 2,
        "fraction-train": 0.5,
        "local-epochs": 1,
        "query-fraction": 0.1,
        "seed": seed,
        "run-dir": str(run_dir),
        "round-timeout": 120,
    }


class _RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _run(data_dir, run_dir, seed):
    """Run the config and return the run directory and the sampled node names per round."""
    strategy_logger = logging.getLogger("metals.server.strategy")
    records = _RecordList()
    previous_level = strategy_logger.level
    strategy_logger.setLevel(logging.INFO)
    strategy_logger.addHandler(records)
    try:
        returned = run_experiment(_config(data_dir, run_dir, seed))
    finally:
        strategy_logger.removeHandler(records)
        strategy_logger.setLevel(previous_level)
    sampled = {}
    for record in records.records:
        match = SAMPLED.fullmatch(record.getMessage())
        if match:
            sampled[int(match.group(1))] = match.group(2).split(", ")
    return returned, sampled


@pytest.fixture(scope="module")
def three_runs(data_dir, tmp_path_factory):
    return {
        name: _run(data_dir, tmp_path_factory.mktemp(name), seed)
        for name, seed in (("first", 7), ("repeat", 7), ("other-seed", 8))
    }


def test_same_seed_same_metrics(three_runs):
    first = read_metrics(three_runs["first"][0]).drop(columns="round_seconds")
    repeat = read_metrics(three_runs["repeat"][0]).drop(columns="round_seconds")

    assert first["round"].tolist() == [1, 2]
    assert first.equals(repeat)


def test_same_seed_same_weights(three_runs):
    first = torch.load(three_runs["first"][0] / "model.pt")
    repeat = torch.load(three_runs["repeat"][0] / "model.pt")

    assert list(first) == list(repeat)
    for key in first:
        assert torch.equal(first[key], repeat[key]), key


def test_same_seed_same_partitions(three_runs):
    first = three_runs["first"][1]
    repeat = three_runs["repeat"][1]

    assert sorted(first) == [1, 2]
    assert all(len(names) == 2 for names in first.values())
    assert all(name.startswith("partition-") for names in first.values() for name in names)
    assert first == repeat


def test_other_seed_other_partitions(three_runs):
    first = three_runs["first"][1]
    other = three_runs["other-seed"][1]

    assert sorted(other) == [1, 2]
    assert first != other
