"""The generic explicit Runge–Kutta solver's helpers."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neurode
from neurode.framework.explicit_rk import prev_time
from neurode.framework.registry import get_registry


def _numpy_prev32(t: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.nextafter(np.float32(t), np.float32(-np.inf)))


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True))
def test_prev_time_float32_matches_numpy(t):
    assert prev_time(t, torch.float32) == _numpy_prev32(t)


@pytest.mark.parametrize("t", [0.0, -0.0, 1.401298464324817e-45, -1.401298464324817e-45, 1e-46, 3.4028234663852886e38,
                               3.40282356e38, 3.4028236e38, -3.4028236e38, math.inf, -math.inf])
def test_prev_time_float32_edges(t):
    assert prev_time(t, torch.float32) == _numpy_prev32(t)


def test_prev_time_float64_is_one_ulp_down():
    assert prev_time(1.0, torch.float64) == math.nextafter(1.0, -math.inf) < 1.0


# --------------------------------------------------------------------------- round-off of the stage combinations

_F32_SPACING_2_TO_4 = 2.0**-22  # float32's spacing in [2, 4), where the states below stay


def _constant_drift(t, y):
    return torch.full_like(y, 0.2)


@pytest.mark.parametrize("solver", ["midpoint", "heun3", "rk4", "bosh3", "dopri5", "tsit5"])
@pytest.mark.parametrize("step_size", [0.01, 0.005, 0.0025])
def test_a_float32_step_rounds_at_the_state_once(solver, step_size):
    # dy/dt = 0.2 from y = 3: every method is exact, so the error is round-off alone. Summing the increment
    # before adding it to y rounds at |y| once per step (at most half a spacing); adding the stages to y one by
    # one rounded once per stage, a drift up to 2.8x this bound (rk4, tsit5, heun3, bosh3)
    n = round(1.5 / step_size)
    y0 = torch.tensor([3.0], dtype=torch.float32)
    ys = neurode.solve(_constant_drift, y0, torch.tensor([0.0, 1.5], dtype=torch.float64), solver=solver,
                       step_size=step_size).ys
    assert abs(float(ys[-1]) - 3.3) <= n * _F32_SPACING_2_TO_4 / 2


@pytest.mark.parametrize("solver", ["rk4", "tsit5"])
def test_a_float32_per_sample_step_rounds_at_the_state_once(solver):
    # the batch-parallel loop's steps (a step size per sample) combine their stages the same way
    method = get_registry().get("solver", solver).obj()
    y = torch.full((2, 1), 3.0)
    h = torch.tensor([0.0025, 0.0025], dtype=torch.float64)
    t0 = torch.zeros(2, dtype=torch.float64)
    state = method.init(_constant_drift, t0, y)
    for _ in range(600):
        step = method.step(_constant_drift, t0, h, y, state)
        y, state, t0 = step.y1, step.state1, t0 + h
    assert float((y - 3.3).abs().max()) <= 600 * _F32_SPACING_2_TO_4 / 2


# --------------------------------------------------------------------------- per-sample dense output


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_per_sample_interpolation_is_each_samples_own_interpolant(method):
    """The power form of the batch loop's dense output equals the interpolant of each sample's step taken alone."""
    solver = get_registry().get("solver", method).obj()
    torch.manual_seed(0)
    a = torch.randn(3, 2, 2, dtype=torch.float64)

    def f(t, y):
        return torch.einsum("bij,bj->bi", a, y) + torch.sin(t)[:, None]

    y0 = torch.randn(3, 2, dtype=torch.float64)
    t0 = torch.tensor([0.0, 0.5, -1.0], dtype=torch.float64)
    h = torch.tensor([0.3, 0.1, 0.7], dtype=torch.float64)
    state = (f(t0, y0),) if solver.tableau.fsal else ()
    step = solver._step_per_sample(f, t0, h, y0, state)
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    theta = torch.tensor([0.0, 0.4, 1.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    got = solver.interpolate_per_sample(step, rows, theta)
    for m, (b, th) in enumerate(zip(rows.tolist(), theta.tolist())):
        # dense_stages: the step's stages and the interpolant's own (dopri8's seven)
        weights = solver.tableau.interpolation_weights(th)
        increment = sum(w * k[b] for w, k in zip(weights, solver.dense_stages(step), strict=True))
        torch.testing.assert_close(got[m], y0[b] + h[b] * increment, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got[2], step.y1[1], rtol=1e-13, atol=1e-13)  # theta = 1 is the step's end
