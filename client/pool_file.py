"""A client's pools on its own disk, so labels it bought survive a restart of the run."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metals.client.pools import Pools
from metals.common.data import ClientPartition
from metals.common.files import temporary_beside

logger = logging.getLogger(__name__)

STATE_DIR_KEY = "state-dir"
FORMAT_VERSION = 1

# Run-config keys that decide which records a client has and which start labeled.
IDENTITY_KEYS = (
    "dataset",
    "labels",
    "seed",
    "val-fraction",
    "test-fraction",
    "partition",
    "dirichlet-alpha",
    "initial-labeled-fraction",
    "local-test-fraction",
    "mode",
)


def pool_file_path(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any], client_name: str
) -> Path | None:
    """Return where this client keeps its pools, or None when neither folder is set.

    The folder is the node config's ``state-dir`` when given, else
    ``<run-dir>/client-state``. The file is ``<client_name>.npz``, where the
    name is ``partition-<id>``, or ``device-<id>`` from the SHA-256 digest
    of a device's traffic file, so devices that share a folder do not
    overwrite each other's pools.
    """
    if str(node_config.get(STATE_DIR_KEY, "")):
        folder = Path(str(node_config[STATE_DIR_KEY])).expanduser()
    elif str(run_config.get("run-dir", "")):
        folder = Path(str(run_config["run-dir"])) / "client-state"
    else:
        return None
    return folder / f"{client_name}.npz"


def pool_file_identity(
    run_config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    partition_id: int,
    device_id: int | None = None,
) -> dict[str, Any]:
    """Return the settings a pool file must match to be loaded by this client.

    A device (``device_id`` given) adds its id, which changes with its
    file's content.
    """
    identity: dict[str, Any] = {key: run_config[key] for key in IDENTITY_KEYS}
    identity["partition-id"] = int(partition_id)
    num_partitions = node_config.get("num-partitions")
    identity["num-partitions"] = None if num_partitions is None else int(num_partitions)
    if device_id is not None:
        identity["device-id"] = f"{device_id:x}"
    return identity


def save_pool_file(path: Path, pools: Pools, identity: Mapping[str, Any]) -> None:
    """Write ``pools`` and ``identity`` to ``path`` atomically (temporary file, then rename).

    Raises
    ------
    OSError
        When the folder cannot be created or written; the message names it and
        the node-config key that moves it.
    """
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "identity": np.array(json.dumps(dict(identity), sort_keys=True)),
        "labeled": np.asarray(pools.labeled, dtype=np.int64),
        "labels": np.asarray(pools.labels, dtype=np.int64),
        "label_rounds": np.asarray(pools.label_rounds, dtype=np.int64),
        "unlabeled": np.asarray(pools.unlabeled, dtype=np.int64),
        "labels_queried_total": np.array(pools.labels_queried_total, dtype=np.int64),
        "trained_round": np.array(pools.trained_round, dtype=np.int64),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = temporary_beside(path)
    except OSError as error:
        raise OSError(
            f"cannot write the client state file in {path.parent} ({error}); set the node "
            f"config '{STATE_DIR_KEY}' to a writable folder"
        ) from error
    # The rename keeps the old file whole if this process dies while writing,
    # which is the case a resumed run meets. There is no fsync, as for the
    # server's checkpoint: it cost 3 ms per client and round here.
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_pool_file(
    path: Path, identity: Mapping[str, Any], partition: ClientPartition
) -> Pools | None:
    """Return the pools saved in ``path``, or None when the file does not exist.

    Parameters
    ----------
    path : Path
        File written by :func:`save_pool_file`.
    identity : Mapping[str, Any]
        Output of :func:`pool_file_identity` for the current run and node.
    partition : ClientPartition
        This client's partition; the saved pools must cover exactly its
        labeled and unlabeled records.

    Raises
    ------
    ValueError
        When the file is unreadable, was written for other settings or
        another partition, or does not fit ``partition``.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as content:
            saved = {key: content[key] for key in content.files}
        saved_identity = json.loads(str(saved["identity"]))
        version = int(saved["format_version"])
        pools = Pools(
            labeled=saved["labeled"].astype(np.int64),
            labels=saved["labels"].astype(np.int64),
            unlabeled=saved["unlabeled"].astype(np.int64),
            labels_queried_total=int(saved["labels_queried_total"]),
            label_rounds=saved["label_rounds"].astype(np.int64),
            trained_round=int(saved["trained_round"]),
        )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"client state file {path} is unreadable ({error}); move it away to start this "
            "client from its initial pools"
        ) from error

    if version != FORMAT_VERSION:
        raise ValueError(
            f"client state file {path} has format_version {version}, expected "
            f"{FORMAT_VERSION}; move it away to start this client from its initial pools"
        )
    changed = sorted(
        key
        for key in set(identity) | set(saved_identity)
        if identity.get(key) != saved_identity.get(key)
    )
    if changed:
        details = ", ".join(
            f"{key}: {saved_identity.get(key)!r} -> {identity.get(key)!r}" for key in changed
        )
        raise ValueError(
            f"client state file {path} belongs to another run or partition ({details}); "
            f"use the settings it was written with, or another run-dir or '{STATE_DIR_KEY}'"
        )

    expected = np.union1d(partition.labeled, partition.unlabeled)
    saved_records = np.concatenate([pools.labeled, pools.unlabeled])
    if len(saved_records) != len(expected) or not np.array_equal(np.sort(saved_records), expected):
        raise ValueError(
            f"client state file {path} contains {len(saved_records)} pool records that do not "
            f"match the {len(expected)} records of this client; the data files changed "
            "since it was written, so start a new run-dir"
        )
    return pools
