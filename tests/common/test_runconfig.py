"""Tests of the flat run config: types, ranges and combinations."""

import logging

import pytest

from metals.common import runconfig
from metals.common.data import edge_iiotset, nsl_kdd, ton_iot
from metals.common.runconfig import (
    LABEL_GROUPINGS,
    default_run_config,
    validate_run_config,
)


def test_defaults_validate():
    # Execute
    config = validate_run_config({})

    # Assert
    assert config == default_run_config()


def test_strings_coerced_to_key_types():
    # Execute
    config = validate_run_config({"num-clients": "5", "smote": "true", "learning-rate": "0.01"})

    # Assert
    assert config["num-clients"] == 5
    assert config["smote"] is True
    assert config["learning-rate"] == 0.01


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nmu-clients": 3}, "unknown run-config key 'nmu-clients'"),
        ({"num-clients": 0}, "'num-clients': must be >= 1"),
        ({"num-rounds": "abc"}, "'num-rounds': expected an integer"),
        ({"num-rounds": 2.5}, "'num-rounds': expected an integer"),
        ({"al-strategy": "foo"}, "'al-strategy': allowed are random"),
        ({"smote": "maybe"}, "'smote': expected true or false"),
        ({"hidden-layers": "90,,90"}, "'hidden-layers'"),
        ({"partition": "natural"}, "natural partitions need per-device files"),
        ({"proximal-mu": 0.5}, "set strategy=fedprox or proximal-mu=0"),
        ({"labels": "7"}, "'labels' with dataset 'nsl_kdd': allowed are default"),
        ({"dataset": "ton_iot", "labels": "family"}, "allowed are default, type, binary"),
        ({"label-budget": 1.5}, "'label-budget': must be <= 1"),
        ({"label-budget": -0.1}, "'label-budget': must be >= 0"),
        ({"label-budget": "half"}, "'label-budget': expected a number"),
        ({"label-budget": 0.1}, "'label-budget' with initial-labeled-fraction 0.2"),
        ({"label-budget": 0, "initial-labeled-fraction": 0}, "must be above 0"),
    ],
)
def test_invalid_values_rejected(overrides, message):
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        validate_run_config(overrides)


def test_label_groupings_match_loaders():
    # Assert: the checked groupings are exactly those each loader accepts.
    assert LABEL_GROUPINGS["nsl_kdd"] == nsl_kdd.LABEL_GROUPINGS
    assert LABEL_GROUPINGS["edge_iiotset"] == edge_iiotset.LABEL_GROUPINGS
    assert LABEL_GROUPINGS["ton_iot"] == ton_iot.LABEL_GROUPINGS


def test_no_query_budget_warns(caplog):
    # Execute
    with caplog.at_level(logging.WARNING, logger="metals.common.runconfig"):
        validate_run_config({"query-fraction": 0})

    # Assert
    assert "clients buy no labels" in caplog.text


def test_classical_mode_without_queries_is_quiet(caplog):
    # Execute
    with caplog.at_level(logging.WARNING, logger="metals.common.runconfig"):
        validate_run_config({"mode": "classical", "query-fraction": 0})

    # Assert
    assert caplog.text == ""


def test_label_budget_at_initial_share_accepted():
    # Execute
    config = validate_run_config({"label-budget": 0.2, "initial-labeled-fraction": 0.2})

    # Assert
    assert config["label-budget"] == 0.2


def test_label_budget_in_classical_mode_warns_once(caplog):
    # Prepare: forget warnings that earlier tests caused.
    runconfig._warn_budget_ignored.cache_clear()

    # Execute: validate twice, as the CLI and the ServerApp both do.
    with caplog.at_level(logging.WARNING, logger="metals.common.runconfig"):
        config = validate_run_config({"mode": "classical", "label-budget": 0.1})
        validate_run_config({"mode": "classical", "label-budget": 0.1})

    # Assert
    assert config["label-budget"] == 0.1
    assert caplog.text.count("label-budget 0.1 is ignored in classical mode") == 1
