"""Training configuration: defaults, every problem at once (key, value, expected, did-you-mean), TOML."""

from __future__ import annotations

import tomllib

import pytest

from neurode.training.config import ConfigError, changed_keys, merge, validate_config


def test_defaults_validate_and_round_trip_through_toml():
    config = validate_config({})
    assert config.model.name == "neural_ode" and config.dynamics.name == "mlp"
    again = validate_config(tomllib.loads(config.to_toml()))
    assert again == config


def test_every_problem_is_reported_at_once_with_key_value_and_expectation():
    bad = {
        "training": {"epoch": 3, "batch_size": -1},
        "model": {"name": "neural_od"},
        "optimizer": {"lr": "fast"},
        "runtime": {"device": "tpu"},
        "solver": {"adjoint": "backsolv"},
        "data": {"split": [0.5, 0.2, 0.2]},
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    problems = info.value.problems
    assert len(problems) == 8, problems
    text = str(info.value)
    assert "training.epoch: unknown key (value 3); did you mean 'training.epochs'?" in text
    assert "training.batch_size: got -1; expected greater than or equal to 1" in text
    assert "model.name: unknown model 'neural_od'; did you mean 'neural_ode'?" in text
    assert "solver.adjoint: unknown adjoint 'backsolv'; did you mean 'backsolve'?" in text
    assert "optimizer.lr: got 'fast'" in text
    assert "runtime.device: got 'tpu'; expected auto, cpu, mps, cuda or cuda:N" in text
    assert "data.split: got [0.5, 0.2, 0.2]; expected three non-negative fractions summing to 1" in text
    assert "colour: unknown key" in text


def test_merge_applies_dotted_overrides_over_nested_values():
    base = {"training": {"epochs": 3, "seed": 1}, "dynamics": {"options": {"width": 8}}}
    merged = merge(base, {"training.epochs": 5, "dynamics.options.depth": 1})
    assert merged == {"training": {"epochs": 5, "seed": 1}, "dynamics": {"options": {"width": 8, "depth": 1}}}
    assert base["training"]["epochs"] == 3  # the input is not modified


def test_changed_keys_names_each_difference():
    a = validate_config({}).to_dict()
    b = validate_config({"training": {"epochs": 9}, "optimizer": {"lr": 0.5}}).to_dict()
    assert changed_keys(a, b) == ["optimizer.lr", "training.epochs"]
