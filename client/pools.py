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
        int64 (n_labeled,): records whose label the client has.
    labels : np.ndarray
        int64 (n_labeled,): the label of each ``labeled`` record, as given by
        the initial labelling or by the oracle.
    unlabeled : np.ndarray
        int64 (n_unlabeled,): records still without a label.
    labels_queried_total : int
        Labels bought from the oracle over all rounds so far.
    """

    labeled: np.ndarray
    labels: np.ndarray
    unlabeled: np.ndarray
    labels_queried_total: int = 0

    @property
    def size(self) -> int:
        """Records in both pools together."""
        return len(self.labeled) + len(self.unlabeled)

    def add_labels(self, indices: np.ndarray, labels: np.ndarray) -> None:
        """Move ``indices`` (k,) from the unlabeled to the labeled pool with their ``labels`` (k,).

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
        self.unlabeled = np.setdiff1d(self.unlabeled, indices, assume_unique=True)
        self.labels_queried_total += len(indices)


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
    )


def save_pools(state: RecordDict, pools: Pools) -> None:
    """Store ``pools`` in a node's ``context.state`` so the next round continues from them."""
    state[_POOLS_KEY] = ArrayRecord(
        {
            "labeled": Array(np.ascontiguousarray(pools.labeled, dtype=np.int64)),
            "labels": Array(np.ascontiguousarray(pools.labels, dtype=np.int64)),
            "unlabeled": Array(np.ascontiguousarray(pools.unlabeled, dtype=np.int64)),
        }
    )
    state[_COUNTERS_KEY] = MetricRecord({"labels-queried-total": int(pools.labels_queried_total)})
