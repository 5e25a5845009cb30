"""Spread training rows over clients and split each client into pools."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data.errors import DataError

if TYPE_CHECKING:
    from metals.common.data.prepare import PreparedData

logger = logging.getLogger(__name__)

METHODS = ("iid", "dirichlet", "natural")
_DIRICHLET_TRIES = 100


def partition_indices(
    y: np.ndarray,
    num_clients: int,
    method: str = "iid",
    *,
    alpha: float = 0.5,
    seed: int = 42,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Assign every training row to exactly one client.

    Parameters
    ----------
    y : numpy.ndarray
        Class index per training row, shape (n_rows,).
    num_clients : int
        Number of clients, at least 1 and at most ``n_rows``.
    method : str, default="iid"
        ``"iid"``: a seeded shuffle cut into near-equal parts.
        ``"dirichlet"``: label skew; for each class, the shares of the clients
        are drawn from Dirichlet(``alpha``, ..., ``alpha``), so a small alpha
        gives each client few classes.
        ``"natural"``: one device type per group of clients; each device type
        gets a number of clients proportional to its rows (at least one), and
        its rows are shuffled and cut among them. Needs ``groups``.
    alpha : float, default=0.5
        Dirichlet concentration, > 0; used by ``"dirichlet"`` only.
    seed : int, default=42
        Seed; the same arguments give the same partitions.
    groups : numpy.ndarray | None, default=None
        Device type per row, shape (n_rows,); required by ``"natural"``.

    Returns
    -------
    list[numpy.ndarray]
        ``num_clients`` sorted int64 index arrays, disjoint, covering every
        row, each non-empty.

    Raises
    ------
    DataError
        On an unknown method, a client count outside [1, n_rows], alpha <= 0,
        or ``"natural"`` without groups or with fewer clients than device types.
    """
    y = np.asarray(y)
    n_rows = len(y)
    if method not in METHODS:
        raise DataError(f"invalid partition method {method!r}; allowed are {', '.join(METHODS)}")
    if not 1 <= num_clients <= n_rows:
        raise DataError(
            f"invalid num_clients {num_clients}: must be between 1 and the number of "
            f"training rows ({n_rows})"
        )
    rng = np.random.default_rng(seed)

    if method == "iid":
        parts = np.array_split(rng.permutation(n_rows), num_clients)
    elif method == "dirichlet":
        if not alpha > 0:
            raise DataError(f"invalid Dirichlet alpha {alpha!r}: must be > 0")
        parts = _dirichlet(y, num_clients, alpha, rng)
    else:
        parts = _natural(groups, n_rows, num_clients, rng)
    return [np.sort(part).astype(np.int64) for part in parts]


def _dirichlet(
    y: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Draw label-skewed parts, redrawing until no client is empty."""
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == label) for label in classes]
    for _ in range(_DIRICHLET_TRIES):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for rows in by_class:
            rows = rows[rng.permutation(len(rows))]
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
            for client, part in enumerate(np.split(rows, cuts)):
                chunks[client].append(part)
        parts = [np.concatenate(chunk) for chunk in chunks]
        if min(len(part) for part in parts) > 0:
            return parts

    # Few rows or a tiny alpha: give each empty client one row of the largest.
    logger.warning(
        "dirichlet partition with alpha=%s left clients empty after %s draws; moving "
        "one row from the largest client to each empty one",
        alpha,
        _DIRICHLET_TRIES,
    )
    for client, part in enumerate(parts):
        if len(part) == 0:
            largest = int(np.argmax([len(p) for p in parts]))
            parts[client] = parts[largest][-1:]
            parts[largest] = parts[largest][:-1]
    return parts


def _natural(
    groups: np.ndarray | None, n_rows: int, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each device type its own clients, in proportion to its rows."""
    if groups is None:
        raise DataError(
            "partition method 'natural' needs a device type per row; only dataset "
            "ton_iot has them. Use iid or dirichlet"
        )
    groups = np.asarray(groups)
    if len(groups) != n_rows:
        raise DataError(f"groups has {len(groups)} entries but there are {n_rows} rows")
    names, counts = np.unique(groups, return_counts=True)
    if num_clients < len(names):
        raise DataError(
            f"invalid num_clients {num_clients} for the natural partition: there are "
            f"{len(names)} device types ({', '.join(map(str, names))}); use at least "
            f"{len(names)} clients"
        )

    # Clients in proportion to the rows, at least one per device type: start
    # from the rounded-down shares, then add to (or take from) the device type
    # furthest below (or above) its exact share.
    ideal = counts / counts.sum() * num_clients
    clients = np.maximum(np.floor(ideal).astype(np.int64), 1)
    while clients.sum() < num_clients:
        clients[int(np.argmax(ideal - clients))] += 1
    while clients.sum() > num_clients:
        excess = np.where(clients > 1, clients - ideal, -np.inf)
        clients[int(np.argmax(excess))] -= 1
    clients = np.minimum(clients, counts)
    if clients.sum() < num_clients:
        raise DataError(
            f"invalid num_clients {num_clients} for the natural partition: the device "
            "types have too few rows to give every client one"
        )

    parts: list[np.ndarray] = []
    for name, count in zip(names, clients, strict=True):
        rows = np.flatnonzero(groups == name)
        parts.extend(np.array_split(rows[rng.permutation(len(rows))], int(count)))
    return parts


@dataclass(frozen=True)
class ClientPartition:
    """One client's rows and its labeled, unlabeled and local test pools.

    Attributes
    ----------
    partition_id : int
        Index of the client.
    x : numpy.ndarray
        float32, shape (n_client, n_features): this client's rows.
    y : numpy.ndarray
        int64, shape (n_client,): true labels; only the oracle may read them
        for rows of the unlabeled pool.
    labeled : numpy.ndarray
        int64 local indices into ``x``: the initially labeled pool.
    unlabeled : numpy.ndarray
        int64 local indices into ``x``: the unlabeled pool.
    test : numpy.ndarray
        int64 local indices into ``x``: the local test split, never trained on.
    """

    partition_id: int
    x: np.ndarray
    y: np.ndarray
    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray


def make_client_partition(
    prepared: PreparedData,
    partition_id: int,
    num_partitions: int,
    *,
    method: str = "iid",
    alpha: float = 0.5,
    seed: int = 42,
    labeled_fraction: float = 0.2,
    local_test_fraction: float = 0.2,
    rows: np.ndarray | None = None,
) -> ClientPartition:
    """Build the rows and pools of one client.

    The client's rows come from :func:`partition_indices` on the training
    arrays and are split into pools by :func:`split_client_pools`. The same
    arguments give the same result in every process.

    Parameters
    ----------
    prepared : PreparedData
        Output of :func:`prepare_dataset`.
    partition_id : int
        Client index in [0, num_partitions).
    num_partitions : int
        Number of clients.
    method, alpha : str, float
        Partition method and Dirichlet concentration, see :func:`partition_indices`.
    seed : int, default=42
        Seed of the partition and of the pool split.
    labeled_fraction : float, default=0.2
        Share of the client's non-test rows labeled at the start, in [0, 1].
    local_test_fraction : float, default=0.2
        Share of the client's rows kept as local test split, in [0, 1).
    rows : numpy.ndarray | None, default=None
        This client's entry of :func:`partition_indices` for the same
        arguments, for a caller that keeps the partitions of all clients.
        Computed here when None.

    Returns
    -------
    ClientPartition

    Raises
    ------
    DataError
        On an id outside [0, num_partitions) or a fraction outside its range.
    """
    if not 0 <= partition_id < num_partitions:
        raise DataError(
            f"invalid partition_id {partition_id}: must be in [0, {num_partitions}); "
            "check the node config partition-id and num-partitions"
        )
    if not 0 <= labeled_fraction <= 1:
        raise DataError(f"invalid labeled_fraction {labeled_fraction!r}: must be in [0, 1]")
    if not 0 <= local_test_fraction < 1:
        raise DataError(f"invalid local_test_fraction {local_test_fraction!r}: must be in [0, 1)")

    if rows is None:
        rows = partition_indices(
            prepared.y_train,
            num_partitions,
            method,
            alpha=alpha,
            seed=seed,
            groups=prepared.groups_train,
        )[partition_id]
    x = np.asarray(prepared.x_train[rows], dtype=np.float32)
    y = np.asarray(prepared.y_train[rows], dtype=np.int64)

    labeled, unlabeled, test = split_client_pools(
        len(rows),
        partition_id,
        seed=seed,
        labeled_fraction=labeled_fraction,
        local_test_fraction=local_test_fraction,
    )
    if len(test) == 0 or len(labeled) + len(unlabeled) < 10:
        logger.warning(
            "client %s: only %s training and %s local test rows; its local accuracy is "
            "undefined or noisy (use fewer clients or another partition)",
            partition_id,
            len(labeled) + len(unlabeled),
            len(test),
        )
    if len(labeled) and len(np.unique(y[labeled])) == 1 and len(np.unique(y)) > 1:
        logger.warning(
            "client %s: the labeled pool contains one class only (%s rows)",
            partition_id,
            len(labeled),
        )
    return ClientPartition(
        partition_id=partition_id,
        x=x,
        y=y,
        labeled=labeled,
        unlabeled=unlabeled,
        test=test,
    )


def split_client_pools(
    n_rows: int,
    partition_id: int,
    *,
    seed: int,
    labeled_fraction: float,
    local_test_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a client's local row positions into labeled, unlabeled and test pools.

    A seeded shuffle puts ``round(local_test_fraction * n_rows)`` rows (at
    most ``n_rows - 1``) into the test split; of the rest,
    ``round(labeled_fraction * n_rest)`` rows, at least one when the fraction
    is > 0, start labeled.

    Parameters
    ----------
    n_rows : int
        Rows of the client.
    partition_id : int
        Client index; with ``seed`` it selects the random stream, so the pools
        do not depend on the order in which clients are built.
    seed : int
        Seed of the run.
    labeled_fraction, local_test_fraction : float
        Shares as in :func:`make_client_partition`.

    Returns
    -------
    labeled, unlabeled, test : numpy.ndarray
        Sorted int64 local indices in [0, n_rows), disjoint and covering.
    """
    rng = np.random.default_rng([seed, partition_id])
    order = rng.permutation(n_rows).astype(np.int64)
    n_test = min(int(round(local_test_fraction * n_rows)), max(n_rows - 1, 0))
    test, rest = order[:n_test], order[n_test:]
    n_labeled = int(round(labeled_fraction * len(rest)))
    if labeled_fraction > 0:
        n_labeled = min(max(n_labeled, 1), len(rest))
    labeled, unlabeled = rest[:n_labeled], rest[n_labeled:]
    return np.sort(labeled), np.sort(unlabeled), np.sort(test)
