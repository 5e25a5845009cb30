"""The server's round loop: sample, aggregate, evaluate globally, record and checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from metals.common.data import PreparedData, prepare_from_config
from metals.common.metrics import classification_report
from metals.common.model import MLP, build_model
from metals.common.runconfig import RunConfig, parse_hidden_layers
from metals.common.training import predict_proba
from metals.server.checkpoint import (
    Checkpoint,
    check_run_dir,
    resolve_run_dir,
    restore_generator,
    run_dir_lock,
    save_checkpoint,
)
from metals.server.grid import PollingGrid
from metals.server.node_registry import NodeRegistry
from metals.server.pool_sizes import (
    PoolSizes,
    client_stats_key,
    initial_pool_sizes,
    labels_summary,
)
from metals.server.preprocessor_delivery import PreprocessorDelivery
from metals.server.results import (
    RoundProgress,
    save_model,
    write_config,
    write_metrics,
    write_summary,
)
from metals.server.strategy import RoundFailedError, build_strategy

logger = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, needed: int, timeout: float) -> int:
    """Wait until ``needed`` nodes are connected and return how many are.

    Raises
    ------
    RoundFailedError
        When fewer than ``needed`` nodes connect within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        connected = len(list(grid.get_node_ids()))
        if connected >= needed:
            return connected
        if time.monotonic() >= deadline:
            raise RoundFailedError(
                f"only {connected} of {needed} required nodes connected within {timeout:g} s; "
                "start more SuperNodes or lower min-available-nodes"
            )
        time.sleep(0.5)


class GlobalEvaluator:
    """Scores global weights on the held-out test set of the prepared dataset."""

    def __init__(self, prepared: PreparedData, model: MLP) -> None:
        self.prepared = prepared
        self.model = model

    def __call__(self, arrays: ArrayRecord) -> dict[str, Any]:
        """Return :func:`classification_report` of ``arrays`` on ``x_test``/``y_test``."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        predictions = predict_proba(self.model, self.prepared.x_test).argmax(axis=1)
        return classification_report(self.prepared.y_test, predictions, self.prepared.class_names)


@dataclass(frozen=True)
class PendingRound:
    """A training round whose messages are pushed and whose replies are awaited.

    Attributes
    ----------
    message_ids : list[str]
        Ids of the pushed train messages.
    deadline : float
        ``time.monotonic()`` value after which missing replies count as lost.
    """

    message_ids: list[str]
    deadline: float


def run_federation(
    grid: Grid,
    config: RunConfig,
    progress: Callable[[RoundProgress], None] | None = None,
) -> Path:
    """Run the configured rounds on ``grid`` and write the run directory.

    Parameters
    ----------
    grid : Grid
        Flower grid connecting to the SuperNodes.
    config : RunConfig
        Validated run config.
    progress : Callable[[RoundProgress], None] | None, default=None
        Called after each completed round.

    Returns
    -------
    Path
        The run directory.

    Raises
    ------
    RoundFailedError
        When a round gets too few valid replies or too few nodes connect.
    ValueError
        When ``run-dir`` contains another run that cannot be resumed.
    RunDirInUseError
        When another process runs in the same run directory.
    """
    run_dir = resolve_run_dir(config)
    with run_dir_lock(run_dir):
        return _run_rounds(grid, {**config, "run-dir": str(run_dir)}, progress, run_dir)


def _run_rounds(
    grid: Grid,
    config: RunConfig,
    progress: Callable[[RoundProgress], None] | None,
    run_dir: Path,
) -> Path:
    """Run the rounds of :func:`run_federation` while it holds the run directory's lock."""
    prepared = prepare_from_config(config)
    model = build_model(
        prepared.x_train.shape[1],
        len(prepared.class_names),
        parse_hidden_layers(str(config["hidden-layers"])),
        seed=int(config["seed"]),
    )

    pool_sizes = initial_pool_sizes(prepared.y_train, prepared.groups_train, config)

    # Start fresh or continue from the last completed round. Clients keep
    # their own pools on disk, so they continue from that round too.
    checkpoint = check_run_dir(run_dir, config)
    if checkpoint is not None:
        arrays, rows, client_stats = checkpoint.arrays, checkpoint.rows, checkpoint.client_stats
        start_round = checkpoint.round
        logger.info("resuming %s after round %d", run_dir, start_round)
    else:
        arrays = ArrayRecord(model.state_dict())
        rows, client_stats, start_round = [], {}, 0
        logger.info("starting run in %s", run_dir)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    if not (run_dir / "preprocessor").exists():
        prepared.preprocessor.save(run_dir / "preprocessor")

    # Nodes are sampled and their replies summed in the order of their
    # identities. Node ids are random, so a restarted server queries the
    # identities again.
    node_registry = NodeRegistry()
    strategy = build_strategy(config, ArrayRecord(model.state_dict()), node_registry)
    if checkpoint is not None:
        restore_generator(checkpoint, strategy.generator)
    delivery = PreprocessorDelivery(prepared.preprocessor)
    evaluator = GlobalEvaluator(prepared, model)
    num_rounds = int(config["num-rounds"])
    timeout = float(config["round-timeout"])
    needed_nodes = int(config["min-available-nodes"]) or int(config["num-clients"])
    report = evaluator(arrays)

    if not isinstance(grid, PollingGrid):
        grid = PollingGrid(grid)

    def start_train_round(server_round: int, arrays: ArrayRecord) -> PendingRound:
        """Sample the round's clients and push their train messages."""
        logger.info("round %d/%d started", server_round, num_rounds)
        wait_for_nodes(grid, needed_nodes, timeout)
        node_registry.refresh(grid, timeout)
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(config)), grid)
        message_ids = list(grid.push_messages(delivery.attach(messages)))
        return PendingRound(message_ids, time.monotonic() + timeout)

    pending: PendingRound | None = None
    for server_round in range(start_round + 1, num_rounds + 1):
        started = time.monotonic()
        if pending is None:
            pending = start_train_round(server_round, arrays)

        # Train on sampled clients and aggregate the valid replies.
        replies = grid.receive(pending.message_ids, deadline=pending.deadline)
        pending = None
        delivery.record_replies(replies)
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        if new_arrays is None:
            raise RoundFailedError(f"round {server_round} failed: aggregation returned no weights")
        arrays = new_arrays

        # Optional federated evaluation on the clients' local test splits.
        if float(config["fraction-evaluate"]) > 0:
            evaluate_messages = strategy.configure_evaluate(
                server_round, arrays, ConfigRecord(dict(config)), grid
            )
            evaluate_replies = list(
                grid.send_and_receive(delivery.attach(evaluate_messages), timeout=timeout)
            )
            delivery.record_replies(evaluate_replies)
            federated = strategy.aggregate_evaluate(server_round, evaluate_replies)
            logger.info("round %d federated evaluation: %s", server_round, federated)

        # The clients of the next round train while the server scores this
        # one, which hid about 0.05 s of server work per simulated round. The
        # sampling state is kept first, so the checkpoint of this round
        # resumes with this round's sampling. An error in starting the next
        # round is raised once this round's record is written.
        generator_state = strategy.generator.getstate()
        sampled_clients = len(strategy.sampled_nodes)
        client_metrics = dict(strategy.client_metrics)
        deferred: Exception | None = None
        if server_round < num_rounds and len(list(grid.get_node_ids())) >= needed_nodes:
            try:
                pending = start_train_round(server_round + 1, arrays)
            except Exception as error:  # noqa: BLE001 - raised below, after the record
                deferred = error

        # Global evaluation and the round's record.
        report = evaluator(arrays)
        for node_id, metrics in client_metrics.items():
            client_stats[client_stats_key(metrics, node_id)] = {
                "labels-queried-total": float(metrics["labels-queried-total"]),
                "labeled-pool-size": float(metrics["labeled-pool-size"]),
                "pool-size": float(metrics["pool-size"]),
            }
        labels_total, labeled_fraction = labels_summary(pool_sizes, client_stats)
        client_accuracies = [float(m["trained-accuracy"]) for m in client_metrics.values()]
        row = {
            "round": server_round,
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "best_client_accuracy": float(np.nanmax(client_accuracies))
            if client_accuracies
            else float("nan"),
            "worst_client_accuracy": float(np.nanmin(client_accuracies))
            if client_accuracies
            else float("nan"),
            "labels_queried_total": labels_total,
            "labeled_fraction": labeled_fraction,
            "round_seconds": time.monotonic() - started,
        }
        rows.append(row)
        write_metrics(run_dir, rows)
        save_checkpoint(
            run_dir,
            Checkpoint(
                server_round,
                arrays,
                rows,
                client_stats,
                generator_state,
                dict(config),
            ),
        )
        logger.info(
            "round %d/%d done: accuracy %.4f, macro-F1 %.4f, %d labels bought, %.1f s",
            server_round,
            num_rounds,
            row["accuracy"],
            row["macro_f1"],
            labels_total,
            row["round_seconds"],
        )
        if progress is not None:
            progress(
                RoundProgress(
                    round=server_round,
                    num_rounds=num_rounds,
                    sampled_clients=sampled_clients,
                    valid_replies=len(client_metrics),
                    labels_queried_total=labels_total,
                    labeled_fraction=labeled_fraction,
                    accuracy=row["accuracy"],
                    macro_f1=row["macro_f1"],
                    elapsed_seconds=row["round_seconds"],
                )
            )
        if deferred is not None:
            raise deferred

    _write_final(run_dir, config, arrays, rows, client_stats, pool_sizes, report, prepared)
    return run_dir


def _write_final(
    run_dir: Path,
    config: Mapping[str, Any],
    arrays: ArrayRecord,
    rows: list[dict[str, Any]],
    client_stats: Mapping[str, Mapping[str, float]],
    pool_sizes: PoolSizes,
    report: Mapping[str, Any],
    prepared: PreparedData,
) -> None:
    """Write metrics.csv, summary.json and model.pt after the last round."""
    write_metrics(run_dir, rows)
    labels_total, labeled_fraction = labels_summary(pool_sizes, client_stats)
    last = rows[-1] if rows else {}
    summary = {
        "rounds_completed": len(rows),
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "best_client_accuracy": last.get("best_client_accuracy"),
        "worst_client_accuracy": last.get("worst_client_accuracy"),
        "labels_queried_total": labels_total,
        "labeled_fraction": labeled_fraction,
        "class_names": list(prepared.class_names),
        "precision": report["precision"],
        "recall": report["recall"],
        "f1": report["f1"],
        "support": report["support"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_records": int(len(prepared.y_test)),
        "run_config": dict(config),
    }
    write_summary(run_dir, summary)
    save_model(run_dir, arrays.to_torch_state_dict())
