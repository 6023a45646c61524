"""Dynamics ``mlp`` and ``linear``: registered like any plugin, batched, time- and condition-aware."""

from __future__ import annotations

import pytest
import torch

from neurode.framework.registry import get_registry


def _make(name, **options):
    return get_registry().get("dynamics", name).obj(**options)


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_registered_as_builtin_dynamics(name):
    component = get_registry().get("dynamics", name)
    assert component.source.builtin
    assert component.source.plugin == "neurode.plugins.dynamics.mlp"


def test_mlp_shapes_with_scalar_and_per_sample_times():
    field = _make("mlp", state_dim=3, width=8, depth=2, time_input=True)
    y = torch.randn(5, 3)
    assert field(torch.tensor(0.5), y).shape == (5, 3)
    assert field(torch.linspace(0, 1, 5), y).shape == (5, 3)


def test_mlp_time_input_changes_the_field():
    torch.manual_seed(0)
    field = _make("mlp", state_dim=2, width=8, time_input=True)
    torch.nn.init.normal_(field.net[-1].weight)
    y = torch.randn(4, 2)
    assert not torch.allclose(field(torch.tensor(0.0), y), field(torch.tensor(3.0), y))
    # per-sample times: row b sees its own time
    per_sample = field(torch.tensor([0.0, 3.0, 0.0, 3.0]), y)
    assert torch.allclose(per_sample[1], field(torch.tensor(3.0), y)[1])


def test_mlp_condition_enters_the_field_and_is_required():
    torch.manual_seed(0)
    field = _make("mlp", state_dim=2, width=8, condition_dim=1)
    torch.nn.init.normal_(field.net[-1].weight)
    y = torch.randn(3, 2)
    a = field(torch.tensor(0.0), y, torch.zeros(3, 1))
    b = field(torch.tensor(0.0), y, torch.ones(3, 1))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="condition_dim=1"):
        field(torch.tensor(0.0), y)


@pytest.mark.parametrize(("options", "match"), [
    ({"state_dim": 0}, "state_dim must be an integer >= 1, got 0"),
    ({"state_dim": 2, "width": 0}, "width"),
    ({"state_dim": 2, "activation": "sigmoidal"}, "activation must be one of"),
])
def test_mlp_bad_options_name_the_value(options, match):
    with pytest.raises(ValueError, match=match):
        _make("mlp", **options)


def test_linear_is_exactly_affine():
    field = _make("linear", state_dim=2)
    with torch.no_grad():
        field.linear.weight.copy_(torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
        field.linear.bias.copy_(torch.tensor([0.5, 0.0]))
    y = torch.tensor([[1.0, 2.0]])
    assert torch.equal(field(torch.tensor(0.0), y), torch.tensor([[2.5, -1.0]]))
