"""A client's labeled and unlabeled pools, kept in the node's ``context.state`` between rounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

_POOLS_KEY = "metals-pools"
_COUNTERS_KEY = "metals-pool-counters"


@dataclass
class Pools:
    """Labeled and unlabeled records of one client, as local indices into its partition.

    Attributes
    ----------
    labeled : np.ndarray
        int64 (n_labeled,): records whose label the client has, in the order
        they were labeled.
    labels : np.ndarray
        int64 (n_labeled,): the label of each ``labeled`` record, as given by
        the initial labelling or by the oracle.
    unlabeled : np.ndarray
        int64 (n_unlabeled,): records still without a label, sorted.
    labels_queried_total : int
        Labels bought from the oracle over all rounds so far.
    label_rounds : np.ndarray | None
        int64 (n_labeled,): server round in which each ``labeled`` record was
        bought, 0 for the initial labels. None means all initial.
    trained_round : int
        Last server round these pools were trained in, 0 before the first.
    """

    labeled: np.ndarray
    labels: np.ndarray
    unlabeled: np.ndarray
    labels_queried_total: int = 0
    label_rounds: np.ndarray | None = None
    trained_round: int = 0

    def __post_init__(self) -> None:
        if self.label_rounds is None:
            self.label_rounds = np.zeros(len(self.labeled), dtype=np.int64)
        if not len(self.labeled) == len(self.labels) == len(self.label_rounds):
            raise ValueError(
                f"pools have {len(self.labeled)} labeled records, {len(self.labels)} labels and "
                f"{len(self.label_rounds)} label rounds: the three must have the same length"
            )

    @property
    def size(self) -> int:
        """Records in both pools together."""
        return len(self.labeled) + len(self.unlabeled)

    def add_labels(self, indices: np.ndarray, labels: np.ndarray, *, server_round: int) -> None:
        """Move ``indices`` (k,) from the unlabeled to the labeled pool with their ``labels`` (k,).

        Parameters
        ----------
        indices, labels : np.ndarray
            Records bought from the oracle and their labels, both (k,).
        server_round : int
            Round in which they were bought (>= 1).

        Raises
        ------
        ValueError
            When an index is not in the unlabeled pool or the lengths differ.
        """
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if len(indices) != len(labels):
            raise ValueError(
                f"got {len(indices)} records but {len(labels)} labels: pass one label per record"
            )
        outside = np.setdiff1d(indices, self.unlabeled)
        if len(outside) or len(np.unique(indices)) != len(indices):
            raise ValueError(
                f"cannot label records {outside[:5].tolist()}: each record must be in the "
                "unlabeled pool and appear once"
            )
        self.labeled = np.concatenate([self.labeled, indices])
        self.labels = np.concatenate([self.labels, labels])
        self.label_rounds = np.concatenate(
            [self.label_rounds, np.full(len(indices), server_round, dtype=np.int64)]
        )
        self.unlabeled = np.setdiff1d(self.unlabeled, indices, assume_unique=True)
        self.labels_queried_total += len(indices)

    def discard_rounds_from(self, server_round: int) -> int:
        """Return the pools to their state before ``server_round`` and return the labels dropped.

        Records bought in ``server_round`` or later go back to the unlabeled
        pool, so a round the server repeats after a restart queries again from
        the same pools as its first attempt.
        """
        keep = self.label_rounds < server_round
        dropped = int(np.count_nonzero(~keep))
        if dropped:
            self.unlabeled = np.union1d(self.unlabeled, self.labeled[~keep])
            self.labeled = self.labeled[keep]
            self.labels = self.labels[keep]
            self.label_rounds = self.label_rounds[keep]
            self.labels_queried_total -= dropped
        self.trained_round = min(self.trained_round, server_round - 1)
        return dropped


def load_pools(state: RecordDict) -> Pools | None:
    """Return the pools saved in a node's ``context.state``, or None before the first round."""
    if _POOLS_KEY not in state:
        return None
    arrays = state[_POOLS_KEY]
    counters = state[_COUNTERS_KEY]
    return Pools(
        labeled=arrays["labeled"].numpy().astype(np.int64),
        labels=arrays["labels"].numpy().astype(np.int64),
        unlabeled=arrays["unlabeled"].numpy().astype(np.int64),
        labels_queried_total=int(counters["labels-queried-total"]),
        label_rounds=arrays["label-rounds"].numpy().astype(np.int64),
        trained_round=int(counters["trained-round"]),
    )


def save_pools(state: RecordDict, pools: Pools) -> None:
    """Store ``pools`` in a node's ``context.state`` so the next round continues from them."""
    state[_POOLS_KEY] = ArrayRecord(
        {
            "labeled": Array(np.ascontiguousarray(pools.labeled, dtype=np.int64)),
            "labels": Array(np.ascontiguousarray(pools.labels, dtype=np.int64)),
            "unlabeled": Array(np.ascontiguousarray(pools.unlabeled, dtype=np.int64)),
            "label-rounds": Array(np.ascontiguousarray(pools.label_rounds, dtype=np.int64)),
        }
    )
    state[_COUNTERS_KEY] = MetricRecord(
        {
            "labels-queried-total": int(pools.labels_queried_total),
            "trained-round": int(pools.trained_round),
        }
    )
