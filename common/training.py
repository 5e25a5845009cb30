"""Local training (FedAvg or FedProx objective) and batched prediction for the MLP."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metals.common.al import budget_remaining, query_count, select_queries
from metals.common.optim import Adam

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one call to :func:`train_local`.

    Attributes
    ----------
    loss : float
        Mean cross-entropy over the records of the last epoch, without the
        proximal term.
    num_examples : int
        Records trained on per epoch.
    """

    loss: float
    num_examples: int


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 100,
    learning_rate: float = 0.001,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 42,
) -> TrainResult:
    r"""Train ``model`` in place with Adam on a labeled pool.

    The loss per mini-batch is the mean cross-entropy plus, when
    ``proximal_mu`` > 0, the FedProx proximal term
    :math:`\frac{\mu}{2} \lVert w - w^t \rVert^2`, where :math:`w^t` are the
    weights ``model`` holds when this function starts (the received global
    model). Source: Li et al., "Federated Optimization in Heterogeneous
    Networks", MLSys 2020. L2 regularisation is Adam's ``weight_decay``
    (:class:`metals.common.optim.Adam`).

    Parameters
    ----------
    model : nn.Module
        Model holding the starting weights; updated in place.
    x : np.ndarray
        Features, float32 of shape (n, num_features).
    y : np.ndarray
        Class indices, int64 of shape (n,).
    epochs : int
        Passes over the pool.
    batch_size : int, default=100
        Records per mini-batch.
    learning_rate : float, default=0.001
        Adam step size.
    weight_decay : float, default=0.0
        L2 penalty.
    proximal_mu : float, default=0.0
        Weight of the proximal term; 0 gives the FedAvg objective.
    seed : int, default=42
        Seed of the mini-batch order.

    Returns
    -------
    TrainResult
        Last-epoch loss and the number of records.

    Raises
    ------
    ValueError
        On an empty pool, mismatched lengths or a bad setting.
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty labeled pool: query labels first")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels: they must match")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"invalid epochs {epochs} or batch_size {batch_size}: both must be >= 1")
    if proximal_mu < 0:
        raise ValueError(f"invalid proximal_mu {proximal_mu}: must be >= 0")

    features = torch.as_tensor(x, dtype=torch.float32)
    targets = torch.as_tensor(y, dtype=torch.int64)
    global_params = [param.detach().clone() for param in model.parameters()]
    optimizer = Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)

    model.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = criterion(model(features[batch]), targets[batch])
            objective = loss
            if proximal_mu > 0:
                squared_distance = sum(
                    ((param - anchor) ** 2).sum()
                    for param, anchor in zip(model.parameters(), global_params, strict=True)
                )
                objective = loss + (proximal_mu / 2) * squared_distance
            objective.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
        epoch_loss = loss_sum / len(features)

    model.eval()
    return TrainResult(loss=epoch_loss, num_examples=len(features))


def predict_proba(model: nn.Module, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Return class probabilities of shape (n, num_classes) for features of shape (n, d)."""
    return _forward_batched(model, x, batch_size, embed=False)


def embed(model: nn.Module, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Return the last hidden layer's activations, shape (n, width), for ``x`` of shape (n, d)."""
    return _forward_batched(model, x, batch_size, embed=True)


def _forward_batched(
    model: nn.Module, x: np.ndarray, batch_size: int, *, embed: bool
) -> np.ndarray:
    """Run the model in eval mode without gradients, ``batch_size`` rows at a time."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.tensor(x[start : start + batch_size], dtype=torch.float32)
            if embed:
                outputs.append(model.embed(batch).numpy())
            else:
                outputs.append(torch.softmax(model(batch), dim=1).numpy())
    if not outputs:
        width = model.embed(torch.zeros(1, x.shape[1])).shape[1] if embed else model.num_classes
        return np.zeros((0, width), dtype=np.float32)
    return np.concatenate(outputs)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Return the share of rows in ``x`` (n, d) whose predicted class equals ``y`` (n,)."""
    if len(y) == 0:
        return float("nan")
    return float((predict_proba(model, x).argmax(axis=1) == y).mean())


def pick_queries(
    model: nn.Module,
    x: np.ndarray,
    labeled: np.ndarray,
    unlabeled: np.ndarray,
    config: Mapping[str, Any],
    *,
    seed: int,
) -> np.ndarray:
    """Return the records of ``unlabeled`` that one active-learning query picks with ``model``.

    The query size comes from ``query-fraction`` and ``query-size``, capped
    so that the labeled share of the pools stays within ``label-budget``.
    The strategy is ``al-strategy``; ``kcenter`` also embeds the labeled pool.

    Parameters
    ----------
    model : nn.Module
        The model that scores the pool.
    x : np.ndarray
        Features of the client's records, float32 of shape (n, num_features).
    labeled, unlabeled : np.ndarray
        int64 indices into ``x`` of the labeled and unlabeled pools.
    config : Mapping[str, Any]
        Validated run config.
    seed : int
        Seed of the query's tie-breaking and random picks.

    Returns
    -------
    np.ndarray
        int64 indices into ``x``, in the order picked; empty when the query
        size or the budget allows none.
    """
    count = query_count(
        len(unlabeled),
        fraction=float(config["query-fraction"]),
        size=int(config["query-size"]),
    )
    pool_size = len(labeled) + len(unlabeled)
    count = min(count, budget_remaining(len(labeled), pool_size, float(config["label-budget"])))
    if count == 0:
        return np.empty(0, dtype=np.int64)

    strategy = str(config["al-strategy"])
    x_pool = x[unlabeled]
    probs = None if strategy == "random" else predict_proba(model, x_pool)
    embeddings = labeled_embeddings = None
    if strategy == "kcenter":
        embeddings = embed(model, x_pool)
        labeled_embeddings = embed(model, x[labeled])
    query = select_queries(
        strategy,
        probs,
        unlabeled,
        count,
        seed=seed,
        embeddings=embeddings,
        labeled_embeddings=labeled_embeddings,
    )
    return query.indices
