"""A device's own traffic file, encoded with the global model's fitted preprocessing.

A SuperNode started with node config ``data-path=<file>`` trains on that
file instead of a partition of the dataset. The file is in the layout of
the run's dataset (``metals.common.inference.traffic_layout``) and must
contain its label column, because the simulated oracle takes the label
of each queried record from it. Nothing is fitted here: the preprocessor is
the one the server fitted on the training rows. Records the reader cannot
use are left out and logged with their line numbers.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metals.common.data import ClientPartition, DataError, Preprocessor
from metals.common.data.partition import split_client_pools
from metals.common.inference import traffic_layout
from metals.common.traffic import BadRecord, inspect_columns, iter_traffic_chunks

if TYPE_CHECKING:
    # Imported where it is used; see metals.common.data.
    import pandas as pd

logger = logging.getLogger(__name__)

DATA_PATH_KEY = "data-path"
#: ``partition-id`` a device reports in its replies: it has no partition.
DEVICE_PARTITION_ID = -1
# Bad records named one by one in the log; the rest are only counted.
_LOGGED_BAD_RECORDS = 10
_HASH_BLOCK_BYTES = 1 << 20


class DeviceDataError(DataError):
    """A device's traffic file that cannot be used for training."""


@dataclass(frozen=True)
class DeviceRecords:
    """The usable records of a device's traffic file.

    Attributes
    ----------
    x : numpy.ndarray
        float32 (n_records, n_features): features encoded and scaled with
        the server's preprocessor.
    y : numpy.ndarray
        int64 (n_records,): class index of each record's own label.
    lines : numpy.ndarray
        int64 (n_records,): 1-based line number of each record in the file.
    bad_records : int
        Records left out (unreadable, missing label, label without a class).
    content_sha256 : str
        SHA-256 hex digest of the file's bytes.
    """

    x: np.ndarray
    y: np.ndarray
    lines: np.ndarray
    bad_records: int
    content_sha256: str

    @property
    def device_id(self) -> int:
        """Non-negative 60-bit number from the content digest; seeds the pool split."""
        return int(self.content_sha256[:15], 16)


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def read_device_file(
    path: str | Path, dataset: str, preprocessor: Preprocessor, *, chunk_size: int = 100_000
) -> DeviceRecords:
    """Read a device's labelled traffic file and encode it with ``preprocessor``.

    Parameters
    ----------
    path : str or pathlib.Path
        CSV file in the layout of ``dataset``, with its label column.
    dataset : str
        Dataset name of the run (``dataset`` run-config key).
    preprocessor : Preprocessor
        Preprocessing the server fitted on the training rows.
    chunk_size : int, default=100000
        Lines read at a time; memory grows with it, not with the file.

    Returns
    -------
    DeviceRecords
        The usable records, in file order.

    Raises
    ------
    metals.common.traffic.TrafficFileError
        When the file is missing, empty, not UTF-8, or has unknown or
        missing columns (the message names them).
    DeviceDataError
        When the file has no label column, or no usable record.
    """
    path = Path(path)
    layout = traffic_layout(dataset, preprocessor)
    columns = inspect_columns(path, layout)
    label = layout.label
    if label is None or label not in columns.read:
        raise DeviceDataError(
            f"{path}: no label column {label!r}. A device trains with a simulated "
            "labelling oracle that returns each record's own label, so node config "
            f"'{DATA_PATH_KEY}' needs a file with labels; without them this device "
            "needs a labelling oracle that metals does not have yet"
        )

    features: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    bad: list[BadRecord] = []
    for chunk in iter_traffic_chunks(path, layout, chunk_size=chunk_size, columns=columns):
        bad.extend(chunk.bad)
        y, reasons = _label_classes(chunk.frame[label], preprocessor, label)
        keep = y >= 0
        bad.extend(
            BadRecord(int(line), reason)
            for line, reason in zip(chunk.lines[~keep], reasons, strict=True)
        )
        if np.any(keep):
            frame = chunk.frame.loc[keep].reset_index(drop=True)
            features.append(preprocessor.transform_features(frame))
            classes.append(y[keep])
            lines.append(chunk.lines[keep])
    bad.sort(key=lambda record: record.line)
    _log_bad_records(path, bad)

    if not features:
        raise DeviceDataError(
            f"{path}: no usable record ({len(bad)} left out, see the log); the file needs "
            f"at least one record with every feature and a known label in {label!r}"
        )
    records = DeviceRecords(
        x=np.concatenate(features),
        y=np.concatenate(classes),
        lines=np.concatenate(lines),
        bad_records=len(bad),
        content_sha256=file_sha256(path),
    )
    return records


def device_partition(
    records: DeviceRecords, *, seed: int, labeled_fraction: float, local_test_fraction: float
) -> ClientPartition:
    """Split a device's records into labeled, unlabeled and local test pools.

    The split is :func:`split_client_pools` with the run seed and the
    device's ``device_id`` in place of a partition id, so a restarted device
    gets the same pools. The partition's ``partition_id`` is
    :data:`DEVICE_PARTITION_ID`.
    """
    labeled, unlabeled, test = split_client_pools(
        len(records.y),
        records.device_id,
        seed=seed,
        labeled_fraction=labeled_fraction,
        local_test_fraction=local_test_fraction,
    )
    return ClientPartition(
        partition_id=DEVICE_PARTITION_ID,
        x=records.x,
        y=records.y,
        labeled=labeled,
        unlabeled=unlabeled,
        test=test,
    )


def _label_classes(
    labels: pd.Series, preprocessor: Preprocessor, column: str
) -> tuple[np.ndarray, list[str]]:
    """Map a chunk's labels to class indices.

    Returns the int64 (n_rows,) classes, -1 where a label is missing or has
    no class, and the reason for each -1 in row order. A label that matches
    no name exactly is compared case-insensitively, because the TON_IoT
    loader lowercases its ``type`` column before training.
    """
    index = {name: position for position, name in enumerate(preprocessor.class_names)}
    exact = {fine: index[coarse] for fine, coarse in preprocessor.label_map.items()}
    folded = {fine.lower(): code for fine, code in exact.items()}
    text = labels.astype(str).str.strip()
    missing = (labels.isna() | (text == "")).to_numpy()
    codes = text.map(exact)
    codes = codes.fillna(text.str.lower().map(folded))
    y = codes.fillna(-1).to_numpy(dtype=np.int64, copy=True)
    y[missing] = -1
    reasons = [
        f"missing value in label column '{column}'"
        if missing[row]
        else f"label {text.iloc[row]!r} in column '{column}' has no class of this run"
        for row in np.flatnonzero(y < 0)
    ]
    return y, reasons


def _log_bad_records(path: Path, bad: list[BadRecord]) -> None:
    """Log how many records were left out and the first of them with their line numbers."""
    if not bad:
        return
    first = bad[:_LOGGED_BAD_RECORDS]
    listed = "; ".join(f"line {record.line}: {record.reason}" for record in first)
    more = len(bad) - _LOGGED_BAD_RECORDS
    logger.warning(
        "%s: %d record(s) left out of training: %s%s",
        path,
        len(bad),
        listed,
        f"; and {more} more" if more > 0 else "",
    )
