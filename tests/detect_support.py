"""Train a small model and write it as a run directory, for the detect and export tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metals.common.data import PreparedData, prepare_dataset
from metals.common.model import build_model
from metals.common.runconfig import validate_run_config
from metals.common.training import predict_proba, train_local
from metals.server.results import save_model, write_config, write_summary


@dataclass
class TrainedRun:
    """A run directory and what the tests compare the detector with."""

    run_dir: Path
    prepared: PreparedData
    test_predictions: np.ndarray


def build_run(base: Path, data_dir: Path, dataset: str, *, epochs: int = 2) -> TrainedRun:
    """Train an MLP on ``dataset`` and write a run directory under ``base``.

    The run directory is written in the server's layout with the server's
    writers, so the test and the server cannot drift apart. A second call
    with the same ``base`` reuses the files, so two test modules share one
    training run per session.
    """
    run_dir = base / f"run-{dataset}"
    config = validate_run_config({"dataset": dataset, "data-dir": str(data_dir), "seed": 7})
    prepared = prepare_dataset(dataset, data_dir, seed=7, cache_dir=base / "cache")

    if not (run_dir / "model.pt").is_file():
        model = build_model(prepared.x_train.shape[1], len(prepared.class_names), (90, 90), seed=7)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train_local(
                model,
                np.array(prepared.x_train),
                np.array(prepared.y_train),
                epochs=epochs,
                batch_size=256,
                seed=7,
            )
        finally:
            torch.set_num_threads(threads)

        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, config)
        prepared.preprocessor.save(run_dir / "preprocessor")
        write_summary(run_dir, {"class_names": list(prepared.class_names)})
        # model.pt last: its presence marks a complete run directory.
        save_model(run_dir, model.state_dict())

    model = build_model(prepared.x_train.shape[1], len(prepared.class_names), (90, 90), seed=0)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    predictions = predict_proba(model, np.array(prepared.x_test)).argmax(axis=1)
    return TrainedRun(run_dir=run_dir, prepared=prepared, test_predictions=predictions)
