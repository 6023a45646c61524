"""Step-size controllers and the starting step."""

import math

import pytest
import torch

import neurode
from neurode.framework.controller import IController, PIDController, initial_step
from neurode.framework.loop import rms_norm


def test_i_controller_matches_the_textbook_formula():
    ctrl = IController(safety=0.9, ifactor=10.0, dfactor=0.2)
    accept, h = ctrl.adapt(0.1, 0.5, 5)
    assert accept and h == pytest.approx(0.1 * 0.9 * 0.5 ** (-1 / 5))
    accept, h = ctrl.adapt(0.1, 4.0, 5)
    assert not accept and h == pytest.approx(0.1 * max(0.2, 0.9 * 4.0 ** (-1 / 5)))
    assert ctrl.adapt(0.1, 0.0, 5) == (True, pytest.approx(1.0))
    assert ctrl.adapt(0.1, math.nan, 5) == (False, pytest.approx(0.02))


def test_pid_controller_uses_the_error_history():
    ctrl = PIDController(pcoeff=0.4, icoeff=0.3).start()
    _, h1 = ctrl.adapt(0.1, 0.5, 5)
    _, h2 = ctrl.adapt(0.1, 0.5, 5)
    _, h3 = ctrl.adapt(0.1, 0.05, 5)  # error fell: the proportional term pushes harder than I control
    i_only = IController().adapt(0.1, 0.05, 5)[1]
    assert h1 == pytest.approx(h2)
    assert h3 != pytest.approx(i_only)


@pytest.mark.parametrize("kwargs", [{"safety": 0.0}, {"ifactor": 0.5}, {"dfactor": 1.5}])
def test_bad_controller_factors_are_rejected(kwargs):
    with pytest.raises(ValueError):
        IController(**kwargs)


def test_non_finite_derivative_at_the_start_is_a_typed_error():
    with pytest.raises(neurode.NonFiniteStateError, match="f\\(t0, y0\\) is not finite") as info:
        neurode.odeint(lambda t, y: y / 0.0, torch.ones(2, dtype=torch.float64), torch.linspace(0, 1, 3))
    assert info.value.t == 0.0


def test_initial_step_is_hairers_heuristic():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    f0 = -y0
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    h = initial_step(f, 0.0, y0, f0, 5, 1e-6, 1e-9, rms_norm, 1.0)
    # d0 = d1 = 1/scale, so h0 = 0.01; h1 = (0.01 / max(d1, d2))^(1/5); one extra evaluation
    scale = 1e-9 + 1e-6
    assert len(calls) == 1
    assert h == pytest.approx(min(100 * 0.01, (0.01 * scale) ** (1 / 5)), rel=1e-3)
