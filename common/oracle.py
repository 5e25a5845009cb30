"""Oracles: the sources of true labels for the records a client queries."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np

logger = logging.getLogger(__name__)


class Oracle(ABC):
    """Source of labels for queried records.

    A client calls :meth:`label` with the local indices it picked and adds
    the returned labels to its labeled pool. The simulated oracle reads
    hidden labels; another implementation (a person, a labelling queue)
    plugs in without a change to the client. Every implementation counts
    the labels it has given in :attr:`labels_given`.
    """

    def __init__(self) -> None:
        self.labels_given = 0

    def label(self, indices: np.ndarray) -> np.ndarray:
        """Return int64 labels of shape (k,) for the local record ``indices`` (k,)."""
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(self._label(indices), dtype=np.int64)
        if labels.shape != indices.shape:
            raise ValueError(
                f"{type(self).__name__} returned {labels.shape[0] if labels.ndim else 0} labels "
                f"for {len(indices)} queried records; it must return one label per record"
            )
        self.labels_given += len(indices)
        return labels

    @abstractmethod
    def _label(self, indices: np.ndarray) -> np.ndarray:
        """Return one class index per entry of ``indices``."""


class SimulatedOracle(Oracle):
    """Oracle that reveals the dataset's hidden labels.

    Parameters
    ----------
    hidden_labels : np.ndarray
        int64 of shape (n,): the true class of every local record.
    """

    def __init__(self, hidden_labels: np.ndarray) -> None:
        super().__init__()
        self._hidden_labels = np.asarray(hidden_labels, dtype=np.int64)

    def _label(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self._hidden_labels)):
            raise IndexError(
                f"queried record index outside 0..{len(self._hidden_labels) - 1}: "
                f"got {int(indices.min())}..{int(indices.max())}"
            )
        return self._hidden_labels[indices]
