"""The metals ClientApp: one IoT device that queries labels, trains locally and replies."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from metals.client.data import ClientData, is_device, load_client_data
from metals.client.node_identity import node_identity
from metals.client.pool_file import (
    STATE_DIR_KEY,
    load_pool_file,
    pool_file_identity,
    pool_file_path,
    save_pool_file,
)
from metals.client.pools import Pools, load_pools, save_pools
from metals.client.preprocessor_cache import received_preprocessor_json
from metals.common.data import ClientPartition, oversample_smote
from metals.common.model import MLP, build_model
from metals.common.node_identity import IDENTITY_RECORD_KEY
from metals.common.oracle import Oracle, SimulatedOracle
from metals.common.runconfig import SETTINGS, RunConfig, parse_hidden_layers, validate_run_config
from metals.common.training import accuracy, pick_queries, train_local

logger = logging.getLogger(__name__)

app = ClientApp()


def run_config_from_message(config: ConfigRecord) -> RunConfig:
    """Return the validated run config the server forwarded in a message's ConfigRecord.

    Per-round keys the server adds (``server-round``, ``proximal-mu`` when
    FedProx sends it) are read separately; keys outside ``SETTINGS`` are
    ignored.
    """
    known = {key: value for key, value in config.items() if key in SETTINGS}
    return validate_run_config(known)


def load_message_data(msg: Message, context: Context, config: RunConfig) -> ClientData:
    """Return the client's records for a message; a device also reads the sent preprocessor."""
    preprocessor_json = None
    if is_device(context.node_config):
        preprocessor_json = received_preprocessor_json(msg, context)
    return load_client_data(config, context.node_config, preprocessor_json)


def build_oracle(partition: ClientPartition) -> Oracle:
    """Return the oracle this client asks for labels (simulated: the hidden labels)."""
    return SimulatedOracle(partition.y)


def initial_pools(partition: ClientPartition, mode: str) -> Pools:
    """Return the pools before the first round; in classical mode every record is labeled."""
    if mode == "classical":
        labeled = np.sort(np.concatenate([partition.labeled, partition.unlabeled]))
        return Pools(labeled, partition.y[labeled], np.zeros(0, dtype=np.int64))
    labeled = np.asarray(partition.labeled, dtype=np.int64)
    return Pools(labeled, partition.y[labeled], np.asarray(partition.unlabeled, dtype=np.int64))


def restore_pools(
    context: Context,
    data: ClientData,
    config: RunConfig,
    pool_file: Path | None,
    identity: Mapping[str, Any],
    server_round: int,
) -> Pools:
    """Return the pools to train ``server_round`` with.

    They come from ``context.state``, else from ``pool_file`` (a restarted
    run), else from the partition's initial split. Labels bought in
    ``server_round`` or later are dropped, because the server repeats a
    round when it restarts between a client's reply and its own checkpoint.
    """
    partition = data.partition
    pools = load_pools(context.state)
    if pools is None and pool_file is not None:
        pools = load_pool_file(pool_file, identity, partition)
        if pools is not None:
            logger.info(
                "%s: continuing from %s (trained in round %d, %d labels bought)",
                data.name,
                pool_file,
                pools.trained_round,
                pools.labels_queried_total,
            )
    if pools is None:
        if pool_file is None:
            logger.warning(
                "%s: run-dir is empty and the node config has no '%s', so the "
                "pools are kept in memory only and a restarted run starts them afresh",
                data.name,
                STATE_DIR_KEY,
            )
        return initial_pools(partition, str(config["mode"]))

    if pools.trained_round >= server_round:
        trained_round = pools.trained_round
        dropped = pools.discard_rounds_from(server_round)
        logger.warning(
            "%s: server sent round %d but the pools were trained in round %d; "
            "%d labels bought since round %d go back to the unlabeled pool",
            data.name,
            server_round,
            trained_round,
            dropped,
            server_round,
        )
    return pools


def _round_seed(config: RunConfig, stream_id: int, server_round: int) -> int:
    """Return a seed that differs per run seed, client (``ClientData.stream_id``) and round."""
    sequence = np.random.SeedSequence([int(config["seed"]), stream_id, server_round])
    return int(sequence.generate_state(1)[0])


def _model_from_message(
    msg: Message, config: RunConfig, partition: ClientPartition, num_classes: int
) -> MLP:
    """Build the MLP and load the global weights the server sent."""
    model = build_model(
        partition.x.shape[1], num_classes, parse_hidden_layers(str(config["hidden-layers"])), seed=0
    )
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model


def query_labels(
    model: MLP,
    partition: ClientPartition,
    pools: Pools,
    config: RunConfig,
    oracle: Oracle,
    seed: int,
    server_round: int,
) -> int:
    """Run one active-learning query and move the newly labeled records into the labeled pool.

    The query buys no more than the ``label-budget`` share of the client's
    pools allows, so a client at its budget buys nothing and trains on the
    labels it has.

    Returns
    -------
    int
        Labels bought in this query.
    """
    picked = pick_queries(model, partition.x, pools.labeled, pools.unlabeled, config, seed=seed)
    if len(picked) == 0:
        return 0
    pools.add_labels(picked, oracle.label(picked), server_round=server_round)
    return len(picked)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Query labels with the received model, train locally and reply with the new weights."""
    torch.set_num_threads(1)
    message_config = msg.content["config"]
    config = run_config_from_message(message_config)
    server_round = int(message_config["server-round"])
    proximal_mu = float(message_config.get("proximal-mu", 0.0))
    data = load_message_data(msg, context, config)
    partition = data.partition
    model = _model_from_message(msg, config, partition, len(data.class_names))
    seed = _round_seed(config, data.stream_id, server_round)

    # Pools survive between rounds in the node's state, and restarts in a file.
    pool_file = pool_file_path(config, context.node_config, data.name)
    identity = pool_file_identity(
        config, context.node_config, partition.partition_id, data.device_id
    )
    pools = restore_pools(context, data, config, pool_file, identity, server_round)
    x_test, y_test = partition.x[partition.test], partition.y[partition.test]
    received_accuracy = accuracy(model, x_test, y_test)

    # Active learning: query, ask the oracle, grow the labeled pool.
    labels_queried = 0
    if config["mode"] == "metals":
        labels_queried = query_labels(
            model, partition, pools, config, build_oracle(partition), seed, server_round
        )

    # Local training, FedAvg or FedProx objective.
    x_train, y_train = partition.x[pools.labeled], pools.labels
    if config["smote"]:
        x_train, y_train = oversample_smote(
            x_train, y_train, k_neighbors=int(config["smote-k-neighbors"]), seed=seed
        )
    result = train_local(
        model,
        x_train,
        y_train,
        epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        learning_rate=float(config["learning-rate"]),
        weight_decay=float(config["weight-decay"]),
        proximal_mu=proximal_mu,
        seed=seed,
    )
    pools.trained_round = server_round
    if pool_file is not None:
        save_pool_file(pool_file, pools, identity)
    save_pools(context.state, pools)

    metrics = {
        "num-examples": len(pools.labeled),
        "partition-id": partition.partition_id,
        "labels-queried": labels_queried,
        "labels-queried-total": pools.labels_queried_total,
        "labeled-pool-size": len(pools.labeled),
        "pool-size": pools.size,
        "train-loss": result.loss,
        "received-accuracy": received_accuracy,
        "trained-accuracy": accuracy(model, x_test, y_test),
        # Flower aggregates only replies with the same metric keys, so a
        # partition sends -1 here as a device sends -1 as its partition-id.
        "device-id": -1 if data.device_id is None else data.device_id,
    }
    logger.info(
        "round %d, %s: %d labels queried (%d total), labeled pool %d, loss %.4f",
        server_round,
        data.name,
        labels_queried,
        pools.labels_queried_total,
        len(pools.labeled),
        result.loss,
    )
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the received global model on the client's local test split."""
    torch.set_num_threads(1)
    config = run_config_from_message(msg.content["config"])
    data = load_message_data(msg, context, config)
    partition = data.partition
    model = _model_from_message(msg, config, partition, len(data.class_names))
    x_test, y_test = partition.x[partition.test], partition.y[partition.test]
    metrics: Mapping[str, Any] = {
        "num-examples": len(y_test),
        "partition-id": partition.partition_id,
        "accuracy": accuracy(model, x_test, y_test),
    }
    return Message(content=RecordDict({"metrics": MetricRecord(dict(metrics))}), reply_to=msg)


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Reply with this node's identity, by which the server orders the nodes it samples."""
    identity = node_identity(context.node_config)
    return Message(content=RecordDict({IDENTITY_RECORD_KEY: identity.to_record()}), reply_to=msg)
