"""FedAvg and FedProx that leave invalid replies out and sample and sum nodes in a fixed order."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from metals.common.arrays import array_values
from metals.server.node_registry import NodeRegistry
from metals.server.sampling import connected_nodes, sample_node_ids

logger = logging.getLogger(__name__)

# Keys every training reply's MetricRecord must hold.
REQUIRED_TRAIN_METRICS = (
    "num-examples",
    "partition-id",
    "labels-queried",
    "labels-queried-total",
    "labeled-pool-size",
    "pool-size",
    "train-loss",
    "received-accuracy",
    "trained-accuracy",
)


class RoundFailedError(RuntimeError):
    """A round ended with fewer valid client replies than the run config requires."""


def weighted_average(contents: list[RecordDict], weight_key: str) -> ArrayRecord:
    """Average the ArrayRecords of ``contents``, each weighted by its metric ``weight_key``.

    The sums run in the order of ``contents`` and in the same float
    operations as Flower's ``aggregate_arrayrecords``, so the result is the
    same to the bit. The values are read with :func:`array_values`.

    Parameters
    ----------
    contents : list[RecordDict]
        Reply contents that each hold one ArrayRecord and one MetricRecord.
    weight_key : str
        Metric that weighs each reply, such as ``num-examples``.
    """
    weights = [float(next(iter(c.metric_records.values()))[weight_key]) for c in contents]
    total = sum(weights)
    sums: dict[str, np.ndarray] = {}
    for content, weight in zip(contents, weights, strict=True):
        factor = weight / total
        for record in content.array_records.values():
            for key, array in record.items():
                scaled = array_values(array) * factor
                if key in sums:
                    sums[key] += scaled
                else:
                    sums[key] = scaled
    return ArrayRecord({key: Array(np.asarray(value)) for key, value in sums.items()})


def reply_problem(msg: Message, reference: ArrayRecord) -> str | None:
    """Return why a training reply cannot be aggregated, or None when it can.

    A reply is rejected when it carries an error, lacks exactly one
    ArrayRecord and one MetricRecord, misses a required metric, reports no
    examples, or contains weights with other keys or shapes than ``reference``
    or with NaN or Inf values.
    """
    if msg.has_error():
        return f"client error: {msg.error.reason}"
    content = msg.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return (
            f"expected one ArrayRecord and one MetricRecord, got {len(content.array_records)} "
            f"and {len(content.metric_records)}"
        )
    metrics = next(iter(content.metric_records.values()))
    missing = [key for key in REQUIRED_TRAIN_METRICS if key not in metrics]
    if missing:
        return f"metrics lack {missing}"
    num_examples = metrics["num-examples"]
    if isinstance(num_examples, list) or not num_examples > 0:
        return f"invalid num-examples {num_examples!r}: must be a number > 0"

    arrays = next(iter(content.array_records.values()))
    if set(arrays.keys()) != set(reference.keys()):
        return (
            f"weight keys {sorted(arrays.keys())} differ from the model's "
            f"{sorted(reference.keys())}"
        )
    for key, expected in reference.items():
        received = arrays[key]
        if tuple(received.shape) != tuple(expected.shape):
            return (
                f"weights '{key}' have shape {tuple(received.shape)}, "
                f"expected {tuple(expected.shape)}"
            )
        if not np.all(np.isfinite(array_values(received))):
            return f"weights '{key}' contain NaN or Inf"
    return None


class ReplyCheckMixin:
    """Strategy mixin that drops invalid replies and fails a round with too few valid ones.

    Mixed in before a Flower strategy (``class X(ReplyCheckMixin, FedAvg)``).
    After each :meth:`aggregate_train`, :attr:`client_metrics` contains the
    metrics of every valid reply, keyed by node id.

    It also makes a run reproducible for a seed. Nodes are sampled as
    Flower's FedAvg samples them, but from the connected nodes in the order
    of ``node_registry`` (partition id first) and with :attr:`generator`,
    which nothing else draws from. So a seed picks the same partitions on
    every run. Replies are aggregated in the same order, so their float sums
    are the same on every run too.

    Parameters
    ----------
    reference_arrays : ArrayRecord
        Weights of the model; replies must match its keys and shapes.
    min_valid_fraction : float
        Share of the sampled clients whose valid replies a round needs; at
        least one valid reply is always needed.
    node_registry : NodeRegistry | None, default=None
        Identities of the nodes, which the caller refreshes before each
        round. None starts an empty registry, which orders nodes by node id.
    seed : int, default=0
        Seed of :attr:`generator`, the sampling generator. A resumed run
        restores its state from the checkpoint instead.
    node_timeout : float, default=60.0
        Seconds to wait for ``min_available_nodes`` connected nodes when
        sampling.
    """

    def __init__(
        self,
        *args: Any,
        reference_arrays: ArrayRecord,
        min_valid_fraction: float,
        node_registry: NodeRegistry | None = None,
        seed: int = 0,
        node_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.reference_arrays = reference_arrays
        self.min_valid_fraction = min_valid_fraction
        self.node_registry = NodeRegistry() if node_registry is None else node_registry
        self.generator = random.Random(seed)
        self.node_timeout = node_timeout
        self.sampled_nodes: list[int] = []
        self.client_metrics: dict[int, dict[str, Any]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``fraction_train`` of the nodes and build their training messages.

        The sampled nodes are kept in :attr:`sampled_nodes` and logged by name.
        """
        self.sampled_nodes = []
        if self.fraction_train == 0.0:  # type: ignore[attr-defined]
            return []
        self.sampled_nodes = self._sample(grid, self.fraction_train, self.min_train_nodes)  # type: ignore[attr-defined]
        logger.info(
            "round %d: sampled %s",
            server_round,
            ", ".join(self.node_registry.name(node_id) for node_id in self.sampled_nodes),
        )
        # Flower's own logger and wording, because `metals deploy` reads this
        # line from the `flwr run` stream to count lost SuperNodes.
        flwr_log(
            logging.INFO,
            "configure_train: Sampled %d nodes (out of %d)",
            len(self.sampled_nodes),
            len(list(grid.get_node_ids())),
        )
        return self._messages(server_round, arrays, config, self.sampled_nodes, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample ``fraction_evaluate`` of the nodes and build their evaluation messages."""
        if self.fraction_evaluate == 0.0:  # type: ignore[attr-defined]
            return []
        node_ids = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes)  # type: ignore[attr-defined]
        return self._messages(server_round, arrays, config, node_ids, MessageType.EVALUATE)

    def _sample(self, grid: Grid, fraction: float, min_nodes: int) -> list[int]:
        """Sample nodes with :attr:`generator` once ``min_available_nodes`` are connected."""
        needed = max(self.min_available_nodes, min_nodes)  # type: ignore[attr-defined]
        node_ids = connected_nodes(grid, self.node_registry, needed, self.node_timeout)
        return sample_node_ids(node_ids, fraction, min_nodes, self.generator)

    def _messages(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: list[int],
        message_type: str,
    ) -> list[Message]:
        """Return one message per node, all with the same weights and config.

        ``server-round`` is added to ``config``, as Flower's FedAvg adds it.
        """
        config["server-round"] = server_round
        content = RecordDict(
            {self.arrayrecord_key: arrays, self.configrecord_key: config}  # type: ignore[attr-defined]
        )
        return [
            Message(content=content, message_type=message_type, dst_node_id=node_id)
            for node_id in node_ids
        ]

    def sorted_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Return ``replies`` in registry order of their sending nodes."""
        return sorted(
            replies,
            key=lambda msg: (
                self.node_registry.sort_key(msg.metadata.src_node_id),
                msg.metadata.src_node_id,
            ),
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies only, in registry order of their nodes.

        Raises
        ------
        RoundFailedError
            When fewer than ``ceil(min_valid_fraction * sampled)`` (at least
            one) replies are valid.
        """
        replies = self.sorted_replies(replies)
        valid: list[Message] = []
        for msg in replies:
            problem = reply_problem(msg, self.reference_arrays)
            if problem is None:
                valid.append(msg)
            else:
                logger.warning(
                    "round %d: reply of node %d left out of the aggregate: %s",
                    server_round,
                    msg.metadata.src_node_id,
                    problem,
                )
        replied = {msg.metadata.src_node_id for msg in replies}
        for node_id in self.sampled_nodes:
            if node_id not in replied:
                logger.warning(
                    "round %d: node %d sent no reply before the timeout", server_round, node_id
                )

        needed = max(1, math.ceil(self.min_valid_fraction * len(self.sampled_nodes)))
        if len(valid) < needed:
            raise RoundFailedError(
                f"round {server_round} failed: {len(valid)} valid replies from "
                f"{len(self.sampled_nodes)} sampled clients, {needed} needed (min-valid-fraction "
                f"{self.min_valid_fraction}); see the warnings above for each left-out node, and "
                "raise round-timeout or lower min-valid-fraction if the clients are only slow"
            )

        self.client_metrics = {
            msg.metadata.src_node_id: dict(next(iter(msg.content.metric_records.values())))
            for msg in valid
        }
        # Flower's own logger and wording, as in configure_train: `metals
        # deploy` reads this line to count each round's replies.
        flwr_log(
            logging.INFO,
            "aggregate_train: Received %d results and %d failures",
            len(valid),
            len(replies) - len(valid),
        )
        # reply_problem has checked what Flower's aggregate_train checks, so
        # the replies are averaged here with array_values instead of Array.numpy.
        contents = [msg.content for msg in valid]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)  # type: ignore[attr-defined]
        return weighted_average(contents, self.weighted_by_key), metrics  # type: ignore[attr-defined]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average the evaluation metrics of the replies that evaluated at least one record.

        A client whose local test split is empty replies with ``num-examples``
        0 and NaN metrics. Such a reply measures nothing, so it is left out
        of the weighted average and logged with its node id. The others are
        averaged in registry order of their nodes.
        """
        counted: list[Message] = []
        for msg in self.sorted_replies(replies):
            if not msg.has_error():
                metrics = next(iter(msg.content.metric_records.values()), None)
                num_examples = None if metrics is None else metrics.get("num-examples")
                if isinstance(num_examples, (int, float)) and num_examples <= 0:
                    logger.info(
                        "round %d: evaluation reply of node %d left out of the average: "
                        "its local test split is empty",
                        server_round,
                        msg.metadata.src_node_id,
                    )
                    continue
            counted.append(msg)
        if not any(not msg.has_error() for msg in counted):
            logger.info(
                "round %d: no client evaluated any record, so there is no federated evaluation",
                server_round,
            )
            return None
        return super().aggregate_evaluate(server_round, counted)  # type: ignore[misc]


class MetalsFedAvg(ReplyCheckMixin, FedAvg):
    """FedAvg (McMahan et al., AISTATS 2017) with reply checks from :class:`ReplyCheckMixin`."""


class MetalsFedProx(ReplyCheckMixin, FedProx):
    """FedProx (Li et al., MLSys 2020) with reply checks; clients add the proximal term."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Build the training messages of :class:`ReplyCheckMixin` with ``proximal-mu`` added.

        The mixin samples on its own and does not call FedProx's
        ``configure_train``, which is where Flower adds ``proximal-mu``.
        """
        config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)


def build_strategy(
    config: Mapping[str, Any],
    reference_arrays: ArrayRecord,
    node_registry: NodeRegistry | None = None,
) -> MetalsFedAvg | MetalsFedProx:
    """Create the strategy the run config names, FedAvg or FedProx with its ``proximal-mu``.

    Parameters
    ----------
    config : Mapping[str, Any]
        Validated run config.
    reference_arrays : ArrayRecord
        Initial global weights, used to check the shape of every reply.
    node_registry : NodeRegistry | None, default=None
        Identities by which nodes are sampled and their replies summed.
    """
    num_clients = int(config["num-clients"])
    min_available = int(config["min-available-nodes"]) or num_clients
    common: dict[str, Any] = {
        "fraction_train": float(config["fraction-train"]),
        "fraction_evaluate": float(config["fraction-evaluate"]),
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if float(config["fraction-evaluate"]) > 0 else 0,
        "min_available_nodes": min_available,
        "reference_arrays": reference_arrays,
        "min_valid_fraction": float(config["min-valid-fraction"]),
        "node_registry": node_registry,
        "seed": int(config["seed"]),
        "node_timeout": float(config["round-timeout"]),
    }
    if config["strategy"] == "fedprox":
        return MetalsFedProx(proximal_mu=float(config["proximal-mu"]), **common)
    return MetalsFedAvg(**common)
