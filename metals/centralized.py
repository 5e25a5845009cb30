"""The reference model: the federated MLP trained centrally on every training label.

It reads the same run config as ``metals run`` (dataset, labels, seed,
hidden layers, batch size, learning rate, weight decay, SMOTE) and writes a run
directory in the same format, so the results table and plots work on it too.
One epoch over all training rows takes the place of a round: ``num-rounds``
sets the number of epochs and ``metrics.csv`` gets one row per epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Value of ``training`` in ``summary.json`` that marks a centralized run.
CENTRALIZED = "centralized"


def _resolve_run_dir(run_dir: str) -> Path:
    """Return ``run_dir``, or a new ``runs/centralized-<timestamp>`` under the cwd when empty."""
    if run_dir:
        return Path(run_dir).expanduser().resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return (Path.cwd() / "runs" / f"centralized-{stamp}").resolve()


def train_centralized(
    run_config: Mapping[str, Any],
    *,
    progress: Callable[[Any], None] | None = None,
) -> Path:
    """Train the MLP on every training label in one process and write a run directory.

    Every training label is known from the start, so no label is bought and
    ``labels_queried_total`` stays 0. Each epoch is one call of the clients'
    ``train_local`` with all training rows, so Adam's moment estimates
    restart every epoch as they do on a client every round. After each epoch
    the model is scored on the global test set (for NSL-KDD the official
    KDDTest+).

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Kebab-case keys of ``metals.common.runconfig.SETTINGS``. The
        federated keys (clients, sampling, active learning) are ignored.
    progress : Callable[[RoundProgress], None] | None, default=None
        Called after each epoch with a ``metals.server.results.RoundProgress``
        whose ``round`` is the epoch and ``elapsed_seconds`` its wall time.

    Returns
    -------
    Path
        Folder with metrics.csv, summary.json, config.json and model.pt.

    Raises
    ------
    ValueError
        On an invalid run config.
    metals.common.data.DataError
        When the dataset files are missing or malformed.
    """
    from metals.common.data import oversample_smote, prepare_from_config
    from metals.common.metrics import classification_report
    from metals.common.model import build_model
    from metals.common.runconfig import parse_hidden_layers, validate_run_config
    from metals.common.training import predict_proba, train_local
    from metals.server.results import (
        RoundProgress,
        save_model,
        write_config,
        write_metrics,
        write_summary,
    )

    config = validate_run_config(run_config)
    run_dir = _resolve_run_dir(str(config["run-dir"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    config["run-dir"] = str(run_dir)
    write_config(run_dir, config)

    seed = int(config["seed"])
    prepared = prepare_from_config(config, seed=seed)
    x_train, y_train = prepared.x_train, prepared.y_train
    if config["smote"]:
        x_train, y_train = oversample_smote(
            x_train, y_train, k_neighbors=int(config["smote-k-neighbors"]), seed=seed
        )
    logger.info(
        "centralized training on %d rows (%d features, %d classes), %d test rows",
        len(y_train),
        x_train.shape[1],
        len(prepared.class_names),
        len(prepared.y_test),
    )

    model = build_model(
        x_train.shape[1],
        len(prepared.class_names),
        parse_hidden_layers(str(config["hidden-layers"])),
        seed=seed,
    )
    epochs = int(config["num-rounds"])
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        epoch_started = time.monotonic()
        train_local(
            model,
            x_train,
            y_train,
            epochs=1,
            batch_size=int(config["batch-size"]),
            learning_rate=float(config["learning-rate"]),
            weight_decay=float(config["weight-decay"]),
            seed=seed + epoch,
        )
        predictions = predict_proba(model, prepared.x_test).argmax(axis=1)
        report = classification_report(prepared.y_test, predictions, prepared.class_names)
        rows.append(
            {
                "round": epoch,
                "accuracy": report["accuracy"],
                "macro_f1": report["macro_f1"],
                "best_client_accuracy": float("nan"),
                "worst_client_accuracy": float("nan"),
                "labels_queried_total": 0,
                "labeled_fraction": 1.0,
                "round_seconds": time.monotonic() - epoch_started,
            }
        )
        logger.info(
            "epoch %d/%d: accuracy %.4f, macro-F1 %.4f",
            epoch,
            epochs,
            report["accuracy"],
            report["macro_f1"],
        )
        if progress is not None:
            progress(
                RoundProgress(
                    round=epoch,
                    num_rounds=epochs,
                    sampled_clients=1,
                    valid_replies=1,
                    labels_queried_total=0,
                    labeled_fraction=1.0,
                    accuracy=report["accuracy"],
                    macro_f1=report["macro_f1"],
                    elapsed_seconds=rows[-1]["round_seconds"],
                )
            )

    write_metrics(run_dir, rows)
    write_summary(
        run_dir,
        {
            "training": CENTRALIZED,
            "rounds_completed": len(rows),
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "best_client_accuracy": None,
            "worst_client_accuracy": None,
            "labels_queried_total": 0,
            "labeled_fraction": 1.0,
            "class_names": list(prepared.class_names),
            "precision": report["precision"],
            "recall": report["recall"],
            "f1": report["f1"],
            "support": report["support"],
            "confusion_matrix": report["confusion_matrix"],
            "num_test_records": int(len(prepared.y_test)),
            "run_config": dict(config),
        },
    )
    save_model(run_dir, model.state_dict())
    return run_dir


def centralized_command(argv: list[str]) -> int:
    """Run ``metals centralized`` with Hydra overrides, like ``metals run``."""
    from metals.cli import run_with_hydra
    from metals.progress import ProgressPrinter

    def execute(run_config: Mapping[str, Any], verbose: bool) -> Path:
        del verbose  # No Ray or Flower runs here, so there is no chatter to hide.
        return train_centralized(run_config, progress=ProgressPrinter())

    return run_with_hydra(argv, "centralized", execute)
