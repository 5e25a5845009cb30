import json
import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from metals.server.checkpoint import Checkpoint, check_resumable, load_checkpoint, save_checkpoint
from metals.server.results import (
    METRICS_COLUMNS,
    read_metrics,
    read_summary,
    save_model,
    write_metrics,
    write_summary,
)


def _row(round_number: int) -> dict:
    return {
        "round": round_number,
        "accuracy": 0.5 + round_number / 100,
        "macro_f1": 0.4,
        "best_client_accuracy": 0.9,
        "worst_client_accuracy": float("nan"),
        "labels_queried_total": 10 * round_number,
        "labeled_fraction": 0.25,
        "round_seconds": 1.5,
    }


def test_metrics_round_trip(tmp_path):
    write_metrics(tmp_path, [_row(1), _row(2)])

    frame = read_metrics(tmp_path)

    assert tuple(frame.columns) == METRICS_COLUMNS
    assert frame["round"].tolist() == [1, 2]
    assert frame["accuracy"].tolist() == [0.51, 0.52]
    assert frame["worst_client_accuracy"].isna().all()


def test_read_metrics_rejects_other_columns(tmp_path):
    (tmp_path / "metrics.csv").write_text("round,acc\n1,0.5\n")

    with pytest.raises(ValueError, match="expected"):
        read_metrics(tmp_path)


def test_read_metrics_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        read_metrics(tmp_path)


def test_summary_round_trip_has_format_version(tmp_path):
    write_summary(tmp_path, {"accuracy": 0.9, "recall": {"normal": 1.0}})

    summary = read_summary(tmp_path)

    assert summary["format_version"] == 1
    assert summary["recall"] == {"normal": 1.0}


def _reject_constant(name: str) -> None:
    raise ValueError(f"summary.json contains the non-JSON constant {name}")


def test_summary_writes_undefined_metrics_as_null(tmp_path):
    # Prepare
    summary = {
        "best_client_accuracy": float("nan"),
        "worst_client_accuracy": np.float32("nan"),
        "macro_f1": np.float64(0.5),
        "recall": {"normal": 1.0, "mitm": float("nan")},
        "confusion_matrix": np.array([[1, 0], [0, 0]]),
        "ratios": (float("inf"), -float("inf"), 2),
        "support": [np.int64(3), 0],
        "done": np.bool_(True),
    }

    # Execute
    path = write_summary(tmp_path, summary)
    strict = json.loads(path.read_text(), parse_constant=_reject_constant)
    read_back = read_summary(tmp_path)

    # Assert
    assert strict["best_client_accuracy"] is None
    assert strict["worst_client_accuracy"] is None
    assert strict["macro_f1"] == 0.5
    assert strict["recall"] == {"normal": 1.0, "mitm": None}
    assert strict["confusion_matrix"] == [[1, 0], [0, 0]]
    assert strict["ratios"] == [None, None, 2]
    assert strict["support"] == [3, 0]
    assert strict["done"] is True
    assert read_back == strict


def test_read_summary_accepts_old_bare_nan(tmp_path):
    # Prepare
    (tmp_path / "summary.json").write_text('{"format_version": 1, "worst_client_accuracy": NaN}')

    # Execute
    summary = read_summary(tmp_path)

    # Assert
    assert np.isnan(summary["worst_client_accuracy"])


def test_read_summary_rejects_other_version(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"format_version": 7}))

    with pytest.raises(ValueError, match="format_version 7"):
        read_summary(tmp_path)


def test_save_model_loads_back(tmp_path):
    state = torch.nn.Linear(3, 2).state_dict()

    path = save_model(tmp_path, state)

    assert torch.equal(torch.load(path)["weight"], state["weight"])


def test_checkpoint_round_trip(tmp_path):
    # Prepare
    random.seed(5)
    arrays = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))})
    stats = {"0": {"carried-labels": 0, "labels-queried-total": 4.0, "pool-size": 9.0}}
    original = Checkpoint(2, arrays, [_row(1), _row(2)], stats, random.getstate(), {"seed": 1})
    expected_draw = random.random()

    # Execute
    save_checkpoint(tmp_path, original)
    save_checkpoint(tmp_path, Checkpoint(3, arrays, [_row(1)], stats, random.getstate(), {}))
    save_checkpoint(tmp_path, original)
    restored = load_checkpoint(tmp_path)

    # Assert
    assert restored.round == 2
    assert np.array_equal(restored.arrays["w"].numpy(), arrays["w"].numpy())
    assert restored.rows[1]["labels_queried_total"] == 20
    assert restored.client_stats == stats
    random.setstate(restored.random_state)
    assert random.random() == expected_draw
    assert len(list((tmp_path / "checkpoint").glob("weights-*.npz"))) == 1


def test_load_checkpoint_none_without_one(tmp_path):
    assert load_checkpoint(tmp_path) is None


def test_check_resumable_names_changed_key(tmp_path):
    checkpoint = Checkpoint(
        1, ArrayRecord(), [], {}, random.getstate(), {"seed": 1, "num-rounds": 2}
    )

    check_resumable(checkpoint, {"seed": 1, "num-rounds": 5}, tmp_path)
    with pytest.raises(ValueError, match="seed: 1 -> 2"):
        check_resumable(checkpoint, {"seed": 2, "num-rounds": 2}, tmp_path)
