"""The speed floor: a metals experiment as one plain single-process PyTorch loop.

It computes what ``metals run`` computes for the same run config (the same
prepared data, client partitions and pools, AL queries, local epochs with
the same per-round seeds, FedAvg aggregation weighted by labeled records,
the FedProx proximal term on the client, and the global evaluation after
each round), with the building blocks of ``metals.common`` and no Flower,
Ray, messages, checkpoints or result files. Clients run one after another
on one core, so its time is the framework-free cost of the computation.

The floor samples partition ids in order with ``random.Random(seed)``, as
the metals server does over its nodes sorted by partition, so both train
the same clients each round. The sampled count is Flower's,
``max(int(num_clients * fraction_train), 1)``.

Usage:
    python bench/floor.py [HYDRA OVERRIDES ...] [--out rounds.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metals.common.data import (
    PreparedData,
    oversample_smote,
    partition_indices,
    prepare_from_config,
)
from metals.common.data.partition import split_client_pools
from metals.common.metrics import classification_report
from metals.common.model import MLP, build_model
from metals.common.runconfig import RunConfig, parse_hidden_layers, validate_run_config
from metals.common.training import accuracy, pick_queries, predict_proba, train_local

logger = logging.getLogger(__name__)

#: Phases of a round timed by the floor, in the order they run.
PHASES = ("data", "scoring", "training", "local_evaluation", "aggregation", "global_evaluation")


@dataclass
class FloorClient:
    """One client's rows and pools, as local indices into ``x``."""

    partition_id: int
    x: np.ndarray
    y: np.ndarray
    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray
    labels_queried_total: int = 0

    @property
    def pool_size(self) -> int:
        """Records in the labeled and unlabeled pools together."""
        return len(self.labeled) + len(self.unlabeled)


@dataclass
class FloorState:
    """Everything the loop keeps between rounds."""

    prepared: PreparedData
    parts: list[np.ndarray]
    model: MLP
    weights: dict[str, torch.Tensor]
    clients: dict[int, FloorClient] = field(default_factory=dict)


def make_client(
    prepared: PreparedData, parts: list[np.ndarray], partition_id: int, config: RunConfig
) -> FloorClient:
    """Cut one client's rows and initial pools as ``make_client_partition`` does."""
    rows = parts[partition_id]
    labeled, unlabeled, test = split_client_pools(
        len(rows),
        partition_id,
        seed=int(config["seed"]),
        labeled_fraction=float(config["initial-labeled-fraction"]),
        local_test_fraction=float(config["local-test-fraction"]),
    )
    if config["mode"] == "classical":
        labeled, unlabeled = np.sort(np.concatenate([labeled, unlabeled])), unlabeled[:0]
    return FloorClient(
        partition_id=partition_id,
        x=np.asarray(prepared.x_train[rows], dtype=np.float32),
        y=np.asarray(prepared.y_train[rows], dtype=np.int64),
        labeled=np.asarray(labeled, dtype=np.int64),
        unlabeled=np.asarray(unlabeled, dtype=np.int64),
        test=np.asarray(test, dtype=np.int64),
    )


def round_seed(config: RunConfig, partition_id: int, server_round: int) -> int:
    """Return the per-client, per-round seed the metals ClientApp uses."""
    sequence = np.random.SeedSequence([int(config["seed"]), partition_id, server_round])
    return int(sequence.generate_state(1)[0])


def query(model: MLP, client: FloorClient, config: RunConfig, seed: int) -> int:
    """Run one AL query on ``client``, move the picked records to its labeled pool, return k."""
    picked = pick_queries(model, client.x, client.labeled, client.unlabeled, config, seed=seed)
    # The simulated oracle reveals the hidden labels of the picked records.
    client.labeled = np.concatenate([client.labeled, picked])
    client.unlabeled = np.setdiff1d(client.unlabeled, picked, assume_unique=True)
    client.labels_queried_total += len(picked)
    return len(picked)


def setup(config: RunConfig) -> FloorState:
    """Prepare the dataset, the partition of every client and the initial model."""
    prepared = prepare_from_config(config)
    parts = partition_indices(
        prepared.y_train,
        int(config["num-clients"]),
        str(config["partition"]),
        alpha=float(config["dirichlet-alpha"]),
        seed=int(config["seed"]),
        groups=prepared.groups_train,
    )
    model = build_model(
        prepared.x_train.shape[1],
        len(prepared.class_names),
        parse_hidden_layers(str(config["hidden-layers"])),
        seed=int(config["seed"]),
    )
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return FloorState(prepared, parts, model, weights)


def run_round(
    state: FloorState, config: RunConfig, server_round: int, sampler: random.Random
) -> dict[str, Any]:
    """Run one round on ``state`` and return its record with per-phase seconds."""
    started = time.perf_counter()
    phases = dict.fromkeys(PHASES, 0.0)
    num_clients = int(config["num-clients"])
    sample_size = max(int(num_clients * float(config["fraction-train"])), 1)
    sampled = sampler.sample(range(num_clients), sample_size)
    proximal_mu = float(config["proximal-mu"]) if config["strategy"] == "fedprox" else 0.0

    updates: list[tuple[dict[str, torch.Tensor], int]] = []
    client_accuracies: list[float] = []
    for partition_id in sampled:
        mark = time.perf_counter()
        client = state.clients.get(partition_id)
        if client is None:
            client = make_client(state.prepared, state.parts, partition_id, config)
            state.clients[partition_id] = client
        state.model.load_state_dict(state.weights)
        seed = round_seed(config, partition_id, server_round)
        x_test, y_test = client.x[client.test], client.y[client.test]
        phases["data"] += time.perf_counter() - mark

        mark = time.perf_counter()
        accuracy(state.model, x_test, y_test)  # the client's received-accuracy metric
        phases["local_evaluation"] += time.perf_counter() - mark

        mark = time.perf_counter()
        if config["mode"] == "metals":
            query(state.model, client, config, seed)
        phases["scoring"] += time.perf_counter() - mark

        mark = time.perf_counter()
        x_train, y_train = client.x[client.labeled], client.y[client.labeled]
        if config["smote"]:
            x_train, y_train = oversample_smote(
                x_train, y_train, k_neighbors=int(config["smote-k-neighbors"]), seed=seed
            )
        train_local(
            state.model,
            x_train,
            y_train,
            epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]),
            learning_rate=float(config["learning-rate"]),
            weight_decay=float(config["weight-decay"]),
            proximal_mu=proximal_mu,
            seed=seed,
        )
        updates.append(
            (
                {name: value.detach().clone() for name, value in state.model.state_dict().items()},
                len(client.labeled),
            )
        )
        phases["training"] += time.perf_counter() - mark

        mark = time.perf_counter()
        client_accuracies.append(accuracy(state.model, x_test, y_test))
        phases["local_evaluation"] += time.perf_counter() - mark

    # FedAvg: average weighted by each client's labeled records (Flower's num-examples).
    mark = time.perf_counter()
    total = sum(examples for _, examples in updates)
    state.weights = {
        name: sum(weights[name] * (examples / total) for weights, examples in updates)
        for name in state.weights
    }
    phases["aggregation"] += time.perf_counter() - mark

    mark = time.perf_counter()
    state.model.load_state_dict(state.weights)
    predictions = predict_proba(state.model, state.prepared.x_test).argmax(axis=1)
    report = classification_report(state.prepared.y_test, predictions, state.prepared.class_names)
    phases["global_evaluation"] += time.perf_counter() - mark

    return {
        "round": server_round,
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "best_client_accuracy": float(np.nanmax(client_accuracies)),
        "worst_client_accuracy": float(np.nanmin(client_accuracies)),
        "labels_queried_total": sum(c.labels_queried_total for c in state.clients.values()),
        "labeled_fraction": labeled_fraction(state, config),
        "sampled": sorted(sampled),
        "round_seconds": time.perf_counter() - started,
        "phase_seconds": phases,
    }


def labeled_fraction(state: FloorState, config: RunConfig) -> float:
    """Return the labeled share of all clients' pools; unsampled clients count as initial."""
    labeled = rows = 0
    for partition_id, part in enumerate(state.parts):
        client = state.clients.get(partition_id)
        if client is not None:
            labeled += len(client.labeled)
            rows += client.pool_size
            continue
        initial, unlabeled, _ = split_client_pools(
            len(part),
            partition_id,
            seed=int(config["seed"]),
            labeled_fraction=float(config["initial-labeled-fraction"]),
            local_test_fraction=float(config["local-test-fraction"]),
        )
        pool = len(initial) + len(unlabeled)
        labeled += pool if config["mode"] == "classical" else len(initial)
        rows += pool
    return labeled / rows if rows else float("nan")


def run_floor(
    run_config: Mapping[str, Any],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the experiment of ``run_config`` as a plain loop and return its records.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Kebab-case run config; validated here.
    progress : Callable[[dict[str, Any]], None] | None, default=None
        Called with each round's record.

    Returns
    -------
    dict[str, Any]
        ``setup_seconds`` (data preparation, partition and model) and
        ``rounds``: one record per round with accuracy, labels bought,
        labeled share, the sampled partitions, ``round_seconds`` and
        ``phase_seconds`` per phase of :data:`PHASES`.
    """
    config = validate_run_config(run_config)
    torch.set_num_threads(1)
    started = time.perf_counter()
    state = setup(config)
    setup_seconds = time.perf_counter() - started

    sampler = random.Random(int(config["seed"]))
    rounds = []
    for server_round in range(1, int(config["num-rounds"]) + 1):
        record = run_round(state, config, server_round, sampler)
        rounds.append(record)
        logger.info(
            "floor round %d: accuracy %.4f, %d labels bought, %.2f s",
            server_round,
            record["accuracy"],
            record["labels_queried_total"],
            record["round_seconds"],
        )
        if progress is not None:
            progress(record)
    return {"setup_seconds": setup_seconds, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    """Run the floor for Hydra overrides and write its records as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for metals run")
    parser.add_argument("--out", help="JSON file for the records (default: stdout)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from metals.config import compose_run_config

    config, _ = compose_run_config(args.overrides)
    result = run_floor(config)
    result["total_seconds"] = time.perf_counter() - started
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
