"""Text summary of a prepared dataset and its federated split, for `metals data`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from metals.common.data.partition import partition_indices, split_client_pools
from metals.common.data.prepare import PreparedData, prepare_from_config
from metals.common.runconfig import SETTINGS, validate_run_config

logger = logging.getLogger(__name__)


def describe_federation(run_config: Mapping[str, Any]) -> str:
    """Prepare and partition the dataset of a run config and describe the result.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        Kebab-case run-config keys (``dataset``, ``data-dir``, ``labels``,
        ``seed``, ``val-fraction``, ``test-fraction``, ``partition``,
        ``dirichlet-alpha``, ``num-clients``, ``initial-labeled-fraction``,
        ``local-test-fraction``); missing keys take their defaults and keys
        that are not run-config settings are ignored.

    Returns
    -------
    str
        The dataset summary (files, rows read, rows dropped by reason,
        duplicates removed, features, class counts per split, clipped test
        values) followed by one line per client with its rows, labeled,
        unlabeled and local-test sizes and its class counts.

    Raises
    ------
    ValueError
        On an invalid run-config value.
    DataError
        On a missing or bad dataset file or an impossible partition.
    """
    config = validate_run_config({k: v for k, v in run_config.items() if k in SETTINGS})
    prepared = prepare_from_config(config)
    lines = describe_dataset(prepared, labels=str(config["labels"]))
    lines.append("")
    lines.extend(_describe_clients(prepared, config))
    return "\n".join(lines)


def describe_dataset(prepared: PreparedData, *, labels: str = "default") -> list[str]:
    """Return the lines of the dataset part of the summary."""
    report = prepared.report
    lines = [f"dataset: {prepared.name} (labels: {labels})"]
    lines.extend(f"  file: {path}" for path in report.get("files", []))
    lines.append(f"rows read: {report.get('rows_read', 0):,}")
    dropped = report.get("rows_dropped", {})
    if dropped:
        lines.append(f"rows dropped: {sum(dropped.values()):,}")
        lines.extend(f"  {reason}: {count:,}" for reason, count in dropped.items())
    else:
        lines.append("rows dropped: 0")
    duplicates = report.get("duplicates_removed", {})
    lines.append(
        "duplicates removed: "
        + ", ".join(f"{split} {count:,}" for split, count in duplicates.items())
    )
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"features: {len(prepared.feature_names)} (after one-hot encoding)")
    clipped = report.get("clipped", {})
    lines.append(
        "values outside the training range, clipped to [0, 1]: "
        f"validation {clipped.get('val', 0):,}, test {clipped.get('test', 0):,}"
    )

    counts = report.get("class_counts", {})
    width = max(len(name) for name in prepared.class_names)
    lines.append(f"classes: {len(prepared.class_names)}")
    lines.append(f"  {'class':<{width}} {'train':>9} {'val':>9} {'test':>9}")
    for position, name in enumerate(prepared.class_names):
        cells = [
            counts.get(split, [0] * len(prepared.class_names))[position]
            for split in ("train", "val", "test")
        ]
        lines.append(f"  {name:<{width}} " + " ".join(f"{cell:>9,}" for cell in cells))
    totals = [len(prepared.y_train), len(prepared.y_val), len(prepared.y_test)]
    lines.append(f"  {'total':<{width}} " + " ".join(f"{cell:>9,}" for cell in totals))
    return lines


def _describe_clients(prepared: PreparedData, config: Mapping[str, Any]) -> list[str]:
    """Return the per-client table: sizes of the pools and class counts."""
    num_clients = int(config["num-clients"])
    method = str(config["partition"])
    seed = int(config["seed"])
    parts = partition_indices(
        prepared.y_train,
        num_clients,
        method,
        alpha=float(config["dirichlet-alpha"]),
        seed=seed,
        groups=prepared.groups_train,
    )
    header = f"partition: {method} over {num_clients} clients (seed {seed}"
    if method == "dirichlet":
        header += f", alpha {config['dirichlet-alpha']}"
    header += (
        f"); initial labeled fraction {config['initial-labeled-fraction']}, "
        f"local test fraction {config['local-test-fraction']}"
    )
    lines = [header]

    names = prepared.class_names
    widths = [max(len(name), 7) for name in names]
    device = prepared.groups_train is not None
    columns = ["client", "rows", "labeled", "unlabeled", "local-test"]
    title = " ".join(f"{c:>10}" for c in columns)
    if device:
        title += f" {'device':>12}"
    title += " " + " ".join(f"{name:>{w}}" for name, w in zip(names, widths, strict=True))
    lines.append(title)

    for client, rows in enumerate(parts):
        labeled, unlabeled, test = split_client_pools(
            len(rows),
            client,
            seed=seed,
            labeled_fraction=float(config["initial-labeled-fraction"]),
            local_test_fraction=float(config["local-test-fraction"]),
        )
        cells = [client, len(rows), len(labeled), len(unlabeled), len(test)]
        line = " ".join(f"{cell:>10,}" for cell in cells)
        if device:
            assert prepared.groups_train is not None
            kinds = sorted(set(np.asarray(prepared.groups_train[rows]).tolist()))
            line += f" {'+'.join(kinds):>12}"
        counts = np.bincount(prepared.y_train[rows], minlength=len(names))
        line += " " + " ".join(f"{c:>{w},}" for c, w in zip(counts, widths, strict=True))
        lines.append(line)
    return lines
