"""The flat run configuration shared by the CLI, the ServerApp and the ClientApp.

Every setting of an experiment travels as one flat mapping with kebab-case
keys, the form Flower uses for its run config (``flwr run --run-config``) and
for the ``ConfigRecord`` sent with each message. The CLI flattens the Hydra
configs under ``conf/`` into these keys. The ServerApp reads them from its
context and forwards them to every ClientApp in each message. A client
therefore needs nothing but its node config (``partition-id`` and
``num-partitions``, or ``data-path`` on a real device).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

RunConfig = dict[str, bool | int | float | str]

DATASETS = ("nsl_kdd", "edge_iiotset", "ton_iot")
PARTITIONS = ("iid", "dirichlet", "natural")
STRATEGIES = ("fedavg", "fedprox")
AL_STRATEGIES = ("random", "entropy", "margin", "least_confidence", "kcenter")
MODES = ("metals", "classical")

#: Label groupings each dataset loader accepts for the ``labels`` key.
LABEL_GROUPINGS: dict[str, tuple[str, ...]] = {
    "nsl_kdd": ("default", "family", "binary"),
    "edge_iiotset": ("default", "15", "6", "2", "binary"),
    "ton_iot": ("default", "type", "binary"),
}


@dataclass(frozen=True)
class Setting:
    """One run-config key: its default, its type and the values it accepts.

    Parameters
    ----------
    default : bool | int | float | str
        Value used when the key is not given.
    help : str
        One line saying what the key sets and in what unit.
    choices : tuple[str, ...] | None, default=None
        Allowed values of a string key.
    low, high : float | None, default=None
        Inclusive bounds of a numeric key.
    """

    default: bool | int | float | str
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None


SETTINGS: dict[str, Setting] = {
    # Data
    "dataset": Setting("nsl_kdd", "dataset name", choices=DATASETS),
    "data-dir": Setting("", "folder with the dataset files ('' = METALS_DATA_DIR)"),
    "labels": Setting(
        "default",
        "label grouping: default, binary, family (nsl_kdd), 2/6/15 (edge_iiotset)",
    ),
    "val-fraction": Setting(0.1, "share of rows held out for validation", low=0, high=0.5),
    "test-fraction": Setting(
        0.2,
        "share of rows held out as the global test set (when the dataset "
        "has no official test file)",
        low=0.01,
        high=0.5,
    ),
    "partition": Setting("iid", "how training rows are spread over clients", choices=PARTITIONS),
    "dirichlet-alpha": Setting(0.5, "Dirichlet concentration for label skew", low=1e-3, high=1e6),
    "num-clients": Setting(10, "number of clients (device partitions)", low=1, high=100_000),
    "initial-labeled-fraction": Setting(
        0.2, "share of each client's training rows labeled at the start", low=0, high=1
    ),
    "local-test-fraction": Setting(
        0.2, "share of each client's rows kept as its local test split", low=0, high=0.9
    ),
    "smote": Setting(False, "oversample each client's labeled pool with SMOTE"),
    "smote-k-neighbors": Setting(5, "SMOTE neighbours", low=1, high=100),
    "seed": Setting(
        42, "seed for splits, partitions, sampling and training", low=0, high=2**31 - 1
    ),
    # Federated learning
    "mode": Setting("metals", "metals (active learning) or classical (all labels)", choices=MODES),
    "strategy": Setting("fedavg", "aggregation strategy", choices=STRATEGIES),
    "proximal-mu": Setting(0.0, "FedProx proximal term weight", low=0, high=1e6),
    "num-rounds": Setting(10, "federated rounds", low=1, high=100_000),
    "fraction-train": Setting(0.2, "share of clients sampled per round", low=1e-6, high=1),
    "fraction-evaluate": Setting(
        0.0, "share of clients asked to evaluate per round", low=0, high=1
    ),
    "min-available-nodes": Setting(
        0, "clients to wait for before a round (0 = all num-clients)", low=0, high=100_000
    ),
    "min-valid-fraction": Setting(
        0.5, "share of sampled clients whose valid replies a round needs", low=0, high=1
    ),
    "round-timeout": Setting(600.0, "seconds to wait for replies in a round", low=1, high=1e7),
    # Active learning
    "al-strategy": Setting("margin", "active-learning query strategy", choices=AL_STRATEGIES),
    "query-fraction": Setting(
        0.2,
        "share of the unlabeled pool queried per round (ignored when query-size > 0)",
        low=0,
        high=1,
    ),
    "query-size": Setting(
        0, "records queried per round per client (0 = use query-fraction)", low=0, high=1e9
    ),
    "label-budget": Setting(
        1.0,
        "maximum labeled share of each client's pool; clients stop buying labels "
        "there (1 = no limit)",
        low=0,
        high=1,
    ),
    # Local training
    "hidden-layers": Setting("90,90", "comma-separated hidden layer widths"),
    "local-epochs": Setting(10, "local epochs per round", low=1, high=10_000),
    "batch-size": Setting(100, "local mini-batch size", low=1, high=1e7),
    "learning-rate": Setting(0.001, "Adam learning rate", low=1e-9, high=10),
    "weight-decay": Setting(1e-4, "L2 penalty applied as Adam weight decay", low=0, high=10),
    # Results
    "run-dir": Setting("", "folder for metrics.csv, summary.json, checkpoints"),
    "resume": Setting(True, "continue from the last checkpoint in run-dir"),
}


def default_run_config() -> RunConfig:
    """Return a new mapping with the default value of every key."""
    return {key: setting.default for key, setting in SETTINGS.items()}


def _coerce(key: str, value: Any, setting: Setting) -> bool | int | float | str:
    """Convert ``value`` to the type of the key's default or raise ``ValueError``."""
    kind = type(setting.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"invalid value {value!r} for '{key}': expected true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"invalid value {value!r} for '{key}': expected an integer")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"invalid value {value!r} for '{key}': expected an integer") from None
        if not number.is_integer():
            raise ValueError(f"invalid value {value!r} for '{key}': expected an integer")
        return int(number)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"invalid value {value!r} for '{key}': expected a number")
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"invalid value {value!r} for '{key}': expected a number") from None
    return str(value)


def validate_run_config(overrides: Mapping[str, Any]) -> RunConfig:
    """Merge ``overrides`` onto the defaults and check every value.

    Parameters
    ----------
    overrides : Mapping[str, Any]
        Kebab-case keys from ``SETTINGS``. Keys Flower adds to a run config on
        its own are not expected here; filter them out first.

    Returns
    -------
    RunConfig
        The complete, typed configuration.

    Raises
    ------
    ValueError
        On an unknown key, a value of the wrong type, a value outside its
        range or choices, or an inconsistent combination. The message names
        the key, the value and what is allowed.
    """
    config = default_run_config()
    for key, value in overrides.items():
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise ValueError(f"unknown run-config key '{key}'; known keys: {known}")
        setting = SETTINGS[key]
        coerced = _coerce(key, value, setting)
        if setting.choices is not None and coerced not in setting.choices:
            allowed = ", ".join(setting.choices)
            raise ValueError(f"invalid value {coerced!r} for '{key}': allowed are {allowed}")
        if isinstance(coerced, (int, float)) and not isinstance(coerced, bool):
            if setting.low is not None and coerced < setting.low:
                raise ValueError(
                    f"invalid value {coerced!r} for '{key}': must be >= {setting.low:g}"
                )
            if setting.high is not None and coerced > setting.high:
                raise ValueError(
                    f"invalid value {coerced!r} for '{key}': must be <= {setting.high:g}"
                )
        config[key] = coerced

    _check_combinations(config)
    return config


def _check_combinations(config: RunConfig) -> None:
    """Raise ``ValueError`` for settings that are valid alone but not together."""
    widths = str(config["hidden-layers"]).split(",")
    if not all(width.strip().isdigit() and int(width) > 0 for width in widths):
        raise ValueError(
            f"invalid value {config['hidden-layers']!r} for 'hidden-layers': expected "
            "comma-separated positive integers such as '90,90'"
        )
    groupings = LABEL_GROUPINGS[str(config["dataset"])]
    if config["labels"] not in groupings:
        raise ValueError(
            f"invalid value {config['labels']!r} for 'labels' with dataset "
            f"{config['dataset']!r}: allowed are {', '.join(groupings)}"
        )
    if config["partition"] == "natural" and config["dataset"] != "ton_iot":
        raise ValueError(
            f"invalid value 'natural' for 'partition' with dataset "
            f"{config['dataset']!r}: natural partitions need per-device files "
            "(dataset ton_iot); use iid or dirichlet"
        )
    if config["strategy"] == "fedprox" and config["proximal-mu"] == 0:
        logger.warning(
            "strategy is fedprox with proximal-mu 0: the proximal term is off "
            "and FedProx behaves as FedAvg"
        )
    if config["mode"] == "metals" and config["query-size"] == 0 and config["query-fraction"] == 0:
        logger.warning(
            "query-fraction and query-size are 0: clients buy no labels and train on "
            "their initial labeled pools only"
        )
    _check_label_budget(config)
    if config["strategy"] == "fedavg" and config["proximal-mu"] != 0:
        raise ValueError(
            f"invalid value {config['proximal-mu']!r} for 'proximal-mu' with "
            "strategy fedavg: set strategy=fedprox or proximal-mu=0"
        )


@functools.cache
def _warn_budget_ignored(budget: float) -> None:
    """Warn once per process that classical mode ignores ``budget``.

    A command validates its config several times (CLI, Hydra job, run,
    ServerApp), which printed the same warning four times.
    """
    logger.warning(
        "label-budget %g is ignored in classical mode, where every label is known; "
        "use mode metals to cap the labels",
        budget,
    )


def _check_label_budget(config: RunConfig) -> None:
    """Check ``label-budget`` against the initial labeled share and the mode.

    Raises ``ValueError`` when clients would start over the budget, and warns
    when classical mode ignores it.
    """
    budget = float(config["label-budget"])
    if budget >= 1:
        return
    if config["mode"] == "classical":
        _warn_budget_ignored(budget)
        return
    initial = float(config["initial-labeled-fraction"])
    if budget < initial or budget == 0:
        raise ValueError(
            f"invalid value {budget!r} for 'label-budget' with initial-labeled-fraction "
            f"{initial!r}: the budget must be above 0 and at least the initial labeled "
            "share, or clients start over it; raise label-budget or lower "
            "initial-labeled-fraction"
        )


def parse_hidden_layers(text: str) -> tuple[int, ...]:
    """Return the hidden layer widths of a ``hidden-layers`` value such as ``'90,90'``."""
    return tuple(int(width) for width in text.split(","))
