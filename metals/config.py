"""Turn the Hydra configuration under ``conf/`` into the flat, validated run config.

The YAML files group settings by topic (``dataset.name``,
``strategy.proximal_mu``, ``train.local_epochs``). The ServerApp and ClientApp
read one flat mapping with the kebab-case keys of
:mod:`metals.common.runconfig`. :data:`HYDRA_KEYS` is the single map between
the two, and every composed value is validated before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metals.common.runconfig import RunConfig, validate_run_config

#: Config module that Hydra searches (``pkg://metals.conf``).
CONFIG_MODULE = "metals.conf"
CONFIG_NAME = "config"

#: Dotted Hydra key -> run-config key.
HYDRA_KEYS: dict[str, str] = {
    "dataset.name": "dataset",
    "dataset.labels": "labels",
    "dataset.val_fraction": "val-fraction",
    "dataset.test_fraction": "test-fraction",
    "data_dir": "data-dir",
    "num_clients": "num-clients",
    "num_rounds": "num-rounds",
    "seed": "seed",
    "resume": "resume",
    "partition.name": "partition",
    "partition.alpha": "dirichlet-alpha",
    "strategy.name": "strategy",
    "strategy.proximal_mu": "proximal-mu",
    "fl.mode": "mode",
    "fl.fraction_train": "fraction-train",
    "fl.fraction_evaluate": "fraction-evaluate",
    "fl.min_available_nodes": "min-available-nodes",
    "fl.min_valid_fraction": "min-valid-fraction",
    "fl.round_timeout": "round-timeout",
    "al.name": "al-strategy",
    "al.initial_labeled_fraction": "initial-labeled-fraction",
    "al.query_fraction": "query-fraction",
    "al.query_size": "query-size",
    "al.label_budget": "label-budget",
    "train.hidden_layers": "hidden-layers",
    "train.local_epochs": "local-epochs",
    "train.batch_size": "batch-size",
    "train.learning_rate": "learning-rate",
    "train.weight_decay": "weight-decay",
    "train.local_test_fraction": "local-test-fraction",
    "train.smote": "smote",
    "train.smote_k_neighbors": "smote-k-neighbors",
}

#: Hydra keys that steer the command itself and are not part of the run config.
COMMAND_KEYS = frozenset({"verbose"})


class ConfigError(ValueError):
    """An invalid or unknown configuration value, reported before anything runs."""


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys.

    Lists stay values, so ``{"train": {"hidden_layers": [90, 90]}}`` becomes
    ``{"train.hidden_layers": [90, 90]}``.
    """
    flat: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _convert(hydra_key: str, value: Any) -> Any:
    """Convert a Hydra value to the form its run-config key expects."""
    if hydra_key == "train.hidden_layers" and isinstance(value, (list, tuple)):
        return ",".join(str(width) for width in value)
    if hydra_key == "data_dir":
        if value is None or str(value).strip() == "":
            return ""
        # Relative paths are taken from the folder the command was started in.
        return str(Path(str(value)).expanduser().resolve())
    return value


def _with_hydra_name(message: str) -> str:
    """Name the Hydra key of the first quoted run-config key in an error message.

    The user typed the Hydra key (``fl.fraction_train``), so it replaces the
    quoted run-config key (``'fraction-train'``), which follows in brackets.
    A message without a known run-config key comes back unchanged.
    """
    by_run_key = {run_key: hydra_key for hydra_key, run_key in HYDRA_KEYS.items()}
    for quoted in re.findall(r"'([a-z][a-z-]*)'", message):
        if quoted in by_run_key:
            named = message.replace(f"'{quoted}'", by_run_key[quoted], 1)
            return f"{named} (run-config key {quoted})"
    return message


def _group_hints(keys: Sequence[str]) -> str:
    """Return how to pick a config group option for keys that end in a group's name."""
    from importlib.resources import files

    hints = []
    for key in keys:
        group = key.rpartition(".")[2]
        folder = files("metals.conf").joinpath(group)
        if not folder.is_dir():
            continue
        options = sorted(
            entry.name.removesuffix(".yaml")
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml")
        )
        if options:
            choice = "|".join(options)
            hints.append(f"'{group}' is a config group: pick one with {group}=<{choice}>; ")
    return "".join(hints)


def to_run_config(config: Mapping[str, Any], *, run_dir: str | Path | None = None) -> RunConfig:
    """Map a composed Hydra config onto the run config and validate it.

    Parameters
    ----------
    config : Mapping[str, Any]
        The composed configuration as plain containers (``OmegaConf.to_container``
        with ``resolve=True``), without the ``hydra`` node.
    run_dir : str | Path | None, default=None
        Run directory to record as ``run-dir``; usually Hydra's output directory.

    Returns
    -------
    RunConfig
        Every run-config key with its validated value.

    Raises
    ------
    ConfigError
        On a key that maps to no run-config key, or on a value that
        :func:`metals.common.runconfig.validate_run_config` rejects. The
        message names the Hydra key, the value and the allowed range.
    """
    flat = flatten({key: value for key, value in config.items() if key != "hydra"})

    unknown = sorted(key for key in flat if key not in HYDRA_KEYS and key not in COMMAND_KEYS)
    if unknown:
        known = ", ".join(sorted([*HYDRA_KEYS, *COMMAND_KEYS]))
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}: check the spelling; "
            f"{_group_hints(unknown)}known keys are {known}"
        )

    verbose = flat.get("verbose", False)
    if not isinstance(verbose, bool):
        raise ConfigError(f"invalid value {verbose!r} for 'verbose': expected true or false")

    overrides = {
        HYDRA_KEYS[key]: _convert(key, value) for key, value in flat.items() if key in HYDRA_KEYS
    }
    if run_dir is not None:
        overrides["run-dir"] = str(Path(run_dir).resolve())

    try:
        return validate_run_config(overrides)
    except ValueError as error:
        raise ConfigError(_with_hydra_name(str(error))) from None


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``@hydra.main``.

    Parameters
    ----------
    overrides : Sequence[str], default=()
        Hydra override strings such as ``"dataset=ton_iot"`` or
        ``"+experiment=quick"``.

    Returns
    -------
    dict[str, Any]
        The resolved configuration as plain containers, without ``hydra``.

    Raises
    ------
    ConfigError
        When Hydra rejects an override (unknown group option, missing key,
        bad syntax).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
            composed = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        # Hydra appends its search path to the message; the user needs only the reason.
        reason = str(error).split("\nConfig search path:")[0].strip()
        raise ConfigError(f"invalid overrides {' '.join(overrides)!r}: {reason}") from None
    container = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def compose_run_config(
    overrides: Sequence[str] = (), *, run_dir: str | Path | None = None
) -> tuple[RunConfig, bool]:
    """Compose the Hydra config with ``overrides`` and return the run config.

    Returns
    -------
    tuple[RunConfig, bool]
        The validated run config and the ``verbose`` flag.

    Raises
    ------
    ConfigError
        When an override or a value is invalid.
    """
    config = compose(overrides)
    run_config = to_run_config(config, run_dir=run_dir)
    return run_config, config.get("verbose", False) is True
