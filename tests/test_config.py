"""Tests of the Hydra configs and their mapping onto the flat run config."""

from pathlib import Path

import pytest

from metals.common.runconfig import SETTINGS
from metals.config import HYDRA_KEYS, ConfigError, compose_run_config, flatten, to_run_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def test_default_config_validates():
    # Execute
    run_config, verbose = compose_run_config()

    # Assert
    assert run_config["dataset"] == "nsl_kdd"
    assert run_config["strategy"] == "fedavg"
    assert run_config["al-strategy"] == "margin"
    assert run_config["partition"] == "iid"
    assert run_config["hidden-layers"] == "90,90"
    assert verbose is False


def test_hydra_keys_cover_run_config():
    # Prepare: run-dir comes from Hydra's output folder, not from a YAML key.
    mapped = set(HYDRA_KEYS.values()) | {"run-dir"}

    # Assert
    assert mapped == set(SETTINGS)


def test_every_yaml_key_is_mapped():
    # Prepare
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    groups = [next(iter(entry)) for entry in defaults if entry != "_self_"]

    # Execute / Assert: each option's keys land under its group's name.
    assert groups == ["dataset", "strategy", "al", "partition"]
    for group in groups:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            keys = flatten(OmegaConf.to_container(OmegaConf.load(path)))
            for key in keys:
                assert f"{group}.{key}" in HYDRA_KEYS, path


def test_metals_paper_preset():
    # Execute
    run_config, _ = compose_run_config(
        ["+experiment=metals_paper", "strategy=fedprox", "strategy.proximal_mu=0.5", "al=margin"]
    )

    # Assert
    assert run_config["num-clients"] == 100
    assert run_config["fraction-train"] == 0.2
    assert run_config["initial-labeled-fraction"] == 0.2
    assert run_config["query-fraction"] == 0.2
    assert run_config["num-rounds"] == 50
    assert run_config["local-epochs"] == 10
    assert run_config["strategy"] == "fedprox"
    assert run_config["proximal-mu"] == 0.5
    assert run_config["mode"] == "metals"


def test_label_budget_override():
    # Execute
    run_config, _ = compose_run_config(["+experiment=metals_paper", "al.label_budget=0.5"])

    # Assert
    assert run_config["label-budget"] == 0.5
    assert run_config["initial-labeled-fraction"] == 0.2


def test_classical_fl_preset():
    # Execute
    run_config, _ = compose_run_config(["+experiment=classical_fl"])

    # Assert
    assert run_config["mode"] == "classical"
    assert run_config["num-clients"] == 10
    assert run_config["fraction-train"] == 1.0
    assert run_config["num-rounds"] == 10


def test_quick_preset_is_small():
    # Execute
    run_config, _ = compose_run_config(["+experiment=quick"])

    # Assert
    assert run_config["num-rounds"] <= 5
    assert run_config["local-epochs"] <= 2


@pytest.mark.parametrize("option", ["random", "entropy", "margin", "least_confidence", "kcenter"])
def test_al_group_options(option):
    # Execute
    run_config, _ = compose_run_config([f"al={option}"])

    # Assert
    assert run_config["al-strategy"] == option


def test_relative_data_dir_becomes_absolute(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)

    # Execute
    run_config, _ = compose_run_config(["data_dir=data"])

    # Assert
    assert run_config["data-dir"] == str(tmp_path / "data")


def test_run_dir_recorded(tmp_path):
    # Execute
    run_config, _ = compose_run_config([], run_dir=tmp_path / "run")

    # Assert
    assert run_config["run-dir"] == str(tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("num_clients=0", "num_clients"),
        ("fl.fraction_train=1.5", "fl.fraction_train"),
        ("strategy.proximal_mu=0.5", "strategy.proximal_mu"),
        ("train.hidden_layers=[90,0]", "train.hidden_layers"),
        ("partition=natural", "partition.name"),
        ("seed=abc", "seed"),
        ("verbose=maybe", "verbose"),
        ("+typo_key=1", "typo_key"),
        ("dataset=kdd99", "dataset/kdd99"),
        ("al.label_budget=0.1", "al.label_budget"),
    ],
)
def test_invalid_value_rejected(override, expected):
    # Execute
    with pytest.raises(ConfigError) as caught:
        compose_run_config([override])

    # Assert
    assert expected in str(caught.value)


def test_group_key_hint_names_override():
    # Execute: a strategy set as a key of the fl block, the way users try it.
    with pytest.raises(ConfigError) as caught:
        compose_run_config(["+fl.strategy=fedprox"])

    # Assert: the message names the override that works.
    assert "pick one with strategy=<fedavg|fedprox>" in str(caught.value)


def test_range_named_in_error():
    # Execute
    with pytest.raises(ConfigError) as caught:
        to_run_config({"num_clients": 0})

    # Assert
    assert ">= 1" in str(caught.value)
    assert "0" in str(caught.value)
