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


def test_unknown_model_and_dynamics_options_are_named_with_value_options_and_did_you_mean():
    bad = {
        "model": {"options": {"widht": 3, "latnt_dim": 4, "n_static": 2}},
        "dynamics": {"options": {"depht": 1, "state_dim": 3, "width": 16}},
        "training": {"epochs": 0},
    }
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    problems = info.value.problems
    assert len(problems) == 6, problems
    text = str(info.value)
    # a dynamics option given to the model: the hint crosses sections
    assert ("model.options.widht: unknown option of model 'neural_ode' (value 3); "
            "did you mean 'dynamics.options.width'? Options of model 'neural_ode': latent_dim,") in text
    assert "model.options.latnt_dim: unknown option of model 'neural_ode' (value 4); " \
           "did you mean 'model.options.latent_dim'?" in text
    assert "model.options.n_static: got 2; set by the trainer from the number of per-trajectory static" in text
    assert ("dynamics.options.depht: unknown option of dynamics 'mlp' (value 1); did you mean "
            "'dynamics.options.depth'? Options of dynamics 'mlp': width, depth, activation, time_input") in text
    assert "dynamics.options.state_dim: got 3; set by the model from the data" in text
    assert "training.epochs: got 0" in text


def test_known_options_pass():
    validate_config({"model": {"options": {"latent_dim": 4, "readout": True}},
                     "dynamics": {"options": {"width": 8, "activation": "relu"}}})


def test_options_are_checked_against_the_registered_factorys_signature():
    """A registered plugin's own signature decides: a factory taking **kwargs checks its own options."""
    from types import SimpleNamespace

    from neurode.framework.errors import UnknownComponentError
    from neurode.training.plugin_options import option_problems

    class Open:
        def __init__(self, n_features, n_static=0, **kwargs): ...

    class Plain:
        def __init__(self, n_features, n_static=0, *, scale=1.0): ...

    components = {("model", "open"): Open, ("model", "plain"): Plain, ("dynamics", "mlp"): Plain}

    class Registry:
        def get(self, kind, name):
            if (kind, name) not in components:
                raise UnknownComponentError(kind, name, [n for k, n in components if k == kind])
            return SimpleNamespace(obj=components[kind, name])

    registry = Registry()

    assert option_problems({"model": {"name": "open", "options": {"anything": 1}}}, registry) == []
    problems = option_problems({"model": {"name": "plain", "options": {"scael": 2.0}},
                                "dynamics": {"options": {"width": 8}}}, registry)
    assert problems == [
        "model.options.scael: unknown option of model 'plain' (value 2.0); did you mean 'model.options.scale'? "
        "Options of model 'plain': scale",
        "dynamics.options: got {'width': 8}; model 'plain' takes no dynamics network, so these options would "
        "have no effect",
    ]
