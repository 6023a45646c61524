"""Step-size controllers and the starting step."""

import math

import pytest
import torch

import neurode
from neurode.framework.batch_loop import _adapt, _controller_state
from neurode.framework.controller import IController, PIController, PIDController, initial_step, newton_step_size
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


def dopri5_control(ratios, h=0.1, beta=0.04, q=5):
    """The step sizes Hairer's DOPRI5 (Fortran, 1996) chooses after each error ``ratios[i]``, transcribed."""
    safe, fac1, fac2 = 0.9, 0.2, 10.0
    facc1, facc2, expo1 = 1 / fac1, 1 / fac2, 1 / q - beta * 0.75
    facold, reject, out = 1e-4, False, []
    for err in ratios:
        fac11 = err**expo1
        fac = fac11 / facold**beta  # Lund stabilisation
        fac = max(facc2, min(facc1, fac / safe))
        hnew = h / fac
        if err <= 1.0:
            facold = max(err, 1e-4)
            if reject:
                hnew = min(hnew, h)
            reject = False
        else:
            hnew = h / min(facc1, fac11 / safe)
            reject = True
        out.append((err <= 1.0, hnew))
        h = hnew
    return out


RATIO_SEQUENCE = [1e-6, 0.3, 0.5, 0.8, 1.7, 1.1, 0.6, 0.2, 40.0, 0.9, 0.95, 0.01, 1.0, 0.7]


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.08])
def test_pi_controller_is_dopri5s_step_size_control(beta):
    ctrl, h, got = PIController(beta=beta).start(), 0.1, []
    for r in RATIO_SEQUENCE:
        accept, h = ctrl.adapt(h, r, 5)
        got.append((accept, h))
    for (accept, h_got), (expected_accept, h_expected) in zip(got, dopri5_control(RATIO_SEQUENCE, beta=beta)):
        assert accept == expected_accept
        assert h_got == pytest.approx(h_expected, rel=1e-12)
    # unlike the I controller, an accepted step with a ratio close to 1 is followed by a smaller one
    assert PIController().start().adapt(0.1, 0.9, 5)[1] < 0.1 == IController().adapt(0.1, 0.9, 5)[1]


def test_pi_controller_is_fresh_per_solve_and_refuses_a_non_finite_ratio():
    ctrl = PIController()
    first = ctrl.start()
    first.adapt(0.1, 1.5, 5)  # a rejection: the next accepted step may not grow
    assert first.adapt(0.1, 1e-3, 5)[1] == pytest.approx(0.1)
    assert ctrl.start().adapt(0.1, 1e-3, 5)[1] > 0.1
    assert first.adapt(0.1, math.nan, 5) == (False, pytest.approx(0.02))


@pytest.mark.parametrize("controller", [IController(), PIController(), PIController(beta=0.0),
                                        PIDController(), PIDController(0.2, 0.5, 0.1)])
def test_vectorised_control_is_the_controller_per_sample(controller):
    # the batch loop's _adapt on a vector of samples, each with its own ratio sequence, against the scalar adapt
    gen = torch.Generator().manual_seed(3)
    n, steps = 6, 12
    ratios = torch.exp(torch.randn(steps, n, generator=gen, dtype=torch.float64) * 2.0)
    ratios[3, 1], ratios[5, 2], ratios[7, 4] = math.nan, 0.0, 1.0
    h = torch.full((n,), 0.1, dtype=torch.float64)
    history = _controller_state(controller, n, h.device)
    scalars = [controller.start() for _ in range(n)]
    hs = [0.1] * n
    for k in range(steps):
        accept, h, history = _adapt(controller, h, ratios[k], 5, history)
        for b in range(n):
            ok, hs[b] = scalars[b].adapt(hs[b], float(ratios[k, b]), 5)
            assert bool(accept[b]) == ok
            assert float(h[b]) == pytest.approx(hs[b], rel=1e-12)


@pytest.mark.parametrize("kwargs", [{"safety": 0.0}, {"ifactor": 0.5}, {"dfactor": 1.5}])
def test_bad_controller_factors_are_rejected(kwargs):
    with pytest.raises(ValueError):
        IController(**kwargs)
    with pytest.raises(ValueError):
        PIController(**kwargs)


@pytest.mark.parametrize("beta", [-0.01, 0.25, math.nan])
def test_bad_beta_is_rejected(beta):
    with pytest.raises(ValueError, match="beta must be in \\[0, 0.2\\]"):
        PIController(beta=beta)


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


def test_newton_failure_halves_the_step_and_the_next_does_not_grow():
    # Hairer & Wanner II, §IV.8 (RADAU5): both loops call this after the controller
    assert newton_step_size(0.4, 0.08, False, True, False) == 0.2  # failed: h / 2, not the controller's 0.2 h
    assert newton_step_size(0.2, 1.0, True, False, True) == 0.2  # accepted right after a failure: no growth
    assert newton_step_size(0.2, 1.0, True, False, False) == 1.0  # otherwise the controller decides
    assert newton_step_size(0.2, 0.1, False, False, True) == 0.1  # a rejection for its error shrinks as asked
    h = torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=torch.float64)
    h_next = torch.tensor([0.08, 1.0, 1.0, 0.1], dtype=torch.float64)
    accept = torch.tensor([False, True, True, False])
    failed = torch.tensor([True, False, False, False])
    before = torch.tensor([False, True, False, True])
    assert newton_step_size(h, h_next, accept, failed, before).tolist() == [0.2, 0.2, 1.0, 0.1]
