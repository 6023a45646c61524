"""Stiff methods end their steps on the output times (``AbstractSolver.steps_onto_outputs``).

Inside a step too long for a fast mode, an interpolant from ``y0`` to ``y1`` carries a perturbation of that mode
almost undamped (the exact solution damps it by ``e^{λ t}``); the step's end is damped by the method's stability
function. So a stiff solve's outputs, and gradients through them, are step ends.
"""

import pytest
import torch

import neurode

F64 = torch.float64
STIFF = torch.tensor([[-1.0, 0.0], [1.0, -1000.0]], dtype=F64)
SLOW = torch.tensor([1.0, 1.0 / 999.0], dtype=F64)  # on the slow manifold: the controller takes long steps
TIMES = torch.tensor([0.0, 0.05, 0.1], dtype=F64)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
@pytest.mark.parametrize("name", ["kvaerno4", "kvaerno5", "esdirk547l2sa", "rodas4", "rodas5p"])
def test_the_gradient_through_a_stiff_solve_does_not_carry_the_fast_mode(name, per_sample):
    # dy(t)/dy0 along the fast eigenvector is e^{-1000 t} ~ 0 at the outputs; interpolated inside two long steps
    # it came out as 2.0 (kvaerno5), 3.2 (esdirk547l2sa), 0.59 (kvaerno4) against a slow-mode gradient of 1.3
    y0 = SLOW.clone().requires_grad_(True)
    a = STIFF.clone().requires_grad_(True)
    weights = torch.tensor([0.7, -1.1], dtype=F64)
    options = dict(solver=name, rtol=1e-6, atol=1e-8)
    if per_sample:
        ys = neurode.solve(lambda t, y: y @ a.T, y0[None], TIMES[None], per_sample=True, **options).ys[:, 0]
    else:
        ys = neurode.solve(lambda t, y: a @ y, y0, TIMES, **options).ys
    grads = torch.autograd.grad((ys[1:] @ weights).sum(), (y0, a))
    exact = sum(torch.linalg.matrix_exp(t * a) @ y0 for t in TIMES[1:])
    for got, want in zip(grads, torch.autograd.grad(exact @ weights, (y0, a))):
        # what is left is the method's own damping over a step, R(h λ) ~ 1 / (h λ), not an interpolant's
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.03 * float(want.abs().max()))


def test_outputs_are_step_ends_and_explicit_methods_still_interpolate():
    ts = torch.linspace(0.0, 1.0, 7, dtype=F64)
    stiff = neurode.solve(lambda t, y: STIFF @ y, SLOW, ts, solver="kvaerno5", rtol=1e-6, atol=1e-8)
    explicit = neurode.solve(lambda t, y: -y, SLOW, ts, solver="dopri5", rtol=1e-6, atol=1e-8)
    assert stiff.stats.n_accepted >= len(ts) - 1  # at least one step per output interval
    assert explicit.stats.n_accepted < len(ts) - 1  # dopri5 steps past outputs and interpolates back
