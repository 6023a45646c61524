"""Options of neurode.solve: where they go, and what a misspelt one is told."""

import pytest
import torch

import neurode
from neurode.framework.errors import InvalidInputError


def test_a_misspelt_option_gets_the_close_name():
    with pytest.raises(InvalidInputError, match="'step_sise' -> did you mean 'step_size'\\?"):
        neurode.solve(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 3), step_sise=0.1)


def test_odeint_warns_and_ignores_an_unknown_option_as_torchdiffeq_does():
    with pytest.warns(UserWarning, match="Unexpected arguments"):
        ys = neurode.odeint(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 3), options={"nonsense": 1})
    assert ys.shape == (3, 2)
