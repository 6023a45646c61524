"""dopri8's 7th-order dense output (tableaus/dopri8.py): order, ends, both loops, gradients, cost.

The interpolant is bootstrapped from the method's order-5 free interpolant with
seven extra stages; these tests hold it to the facts a user interpolating
between an 8th-order method's long steps relies on.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import neurode
from neurode.framework.registry import get_registry
from neurode.plugins.solvers.tableaus.dopri8 import DOPRI8
from neurode.testing import tableau_orders
from neurode.testing.problems import ManufacturedProblem

F64 = torch.float64


def _solver(**options):
    return get_registry().get("solver", "dopri8").obj(**options)


def _float_time(problem):
    # the shared loop hands f a float t and a perturbation flag (its wrapper converts them); called directly, here
    return lambda t, y, perturb=None: problem(torch.as_tensor(t, dtype=F64), y)


def _one_step(solver, problem, h, t0=0.0):
    y0, f = problem.exact(t0), _float_time(problem)
    return solver.step(f, t0, h, y0, solver.init(f, t0, y0))


def test_the_dense_output_meets_every_order_condition_up_to_7_and_torchdiffeqs_up_to_4():
    # the rooted-tree conditions with b replaced by w(θ) (Hairer et al. I, §II.6): exact, not a fitted slope
    assert tableau_orders(DOPRI8)["dense"] == 7
    quartic = dataclasses.replace(DOPRI8, interpolant=DOPRI8.torchdiffeq_interpolant, dense_c=(), dense_a=())
    assert tableau_orders(quartic)["dense"] == 4


def test_the_free_interpolant_it_starts_from_is_of_order_5():
    from neurode.plugins.solvers.tableaus.dopri8 import FREE_INTERPOLANT

    free = dataclasses.replace(DOPRI8, interpolant=FREE_INTERPOLANT, dense_c=(), dense_a=())
    assert tableau_orders(free)["dense"] == 5


@pytest.mark.parametrize("theta", [0.3, 0.75])
def test_dense_output_inside_one_step_converges_at_order_7(theta):
    # one step of size h from the exact state: the local interpolation error is O(h^8) for an order-7 interpolant
    # (the quartic's is O(h^5))
    problem, solver = ManufacturedProblem(batch=2), _solver()
    errors = []
    for h in (0.8, 0.4, 0.2):  # at h = 0.1 the error (1e-14) is round-off
        step = _one_step(solver, problem, h)
        errors.append(float((solver.interpolate(step, theta) - problem.exact(theta * h)).abs().max()))
    slopes = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:])]
    assert 7.7 < min(slopes) and max(slopes) < 9.0, (errors, slopes)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_interpolant_passes_through_both_ends_of_the_step(dtype):
    # a tensor θ takes the polynomial itself (a float 0 or 1 would return y0/y1 without evaluating it), as does
    # the batch loop's power form; in monomial form the degree-7 coefficients (up to 2.5e3) missed y1 by 5e-14
    problem, solver = ManufacturedProblem(batch=2), _solver()
    f = _float_time(problem)
    y0 = problem.exact(0.0, dtype=dtype)
    def f_shared(t, y, perturb=None):
        return f(t, y.double()).to(dtype)

    shared = solver.step(f_shared, 0.0, 0.5, y0, (f_shared(0.0, y0),))
    t0 = torch.zeros(2, dtype=F64)
    per_sample = solver.step(lambda t, y: problem(t, y.double()).to(dtype), t0, torch.full((2,), 0.5, dtype=F64), y0,
                             (problem(t0, y0.double()).to(dtype),))
    eps = torch.finfo(dtype).eps
    for theta, end in ((0.0, "y0"), (1.0, "y1")):
        value = solver.interpolate(shared, torch.tensor(theta, dtype=F64))
        torch.testing.assert_close(value, getattr(shared, end), rtol=eps, atol=eps)
        rows = torch.tensor([0, 1])
        value = solver.interpolate_per_sample(per_sample, rows, torch.full((2,), theta, dtype=F64))
        torch.testing.assert_close(value, getattr(per_sample, end), rtol=eps, atol=eps)


def test_per_sample_interpolation_equals_the_shared_one():
    # the batch loop's power form with the same step for every sample = the shared loop's interpolant
    problem, solver = ManufacturedProblem(batch=3), _solver()
    y0, h = problem.exact(0.0), 0.4
    shared = _one_step(solver, problem, h)
    t0 = torch.zeros(3, dtype=F64)
    per_sample = solver.step(problem, t0, torch.full((3,), h, dtype=F64), y0, (problem(t0, y0),))
    rows = torch.tensor([0, 1, 2, 2])
    theta = torch.tensor([0.2, 0.5, 0.5, 0.9], dtype=F64)
    got = solver.interpolate_per_sample(per_sample, rows, theta)
    for m, (b, th) in enumerate(zip(rows.tolist(), theta.tolist())):
        # the same polynomial, summed in another order (end-exact form against weights): ~100 ulps
        torch.testing.assert_close(got[m], solver.interpolate(shared, th)[b], rtol=1e-13, atol=1e-13)


def _pendulum(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) + 0.3 * torch.cos(t)], dim=-1)


def test_per_sample_solve_is_as_accurate_as_the_shared_solve_between_steps():
    # per-sample time grids (the batch loop's power form), outputs between steps, against a tight stepped-onto solve
    y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5], [-1.0, 0.2]], dtype=F64)
    t = torch.linspace(0.0, 4.0, 9, dtype=F64)
    exact = neurode.solve(_pendulum, y0, t, solver="dopri8", rtol=1e-13, atol=1e-13, step_t=t).ys
    shared = neurode.solve(_pendulum, y0, t, solver="dopri8", rtol=1e-10, atol=1e-10)
    per_sample = neurode.solve(_pendulum, y0, t.expand(3, -1), solver="dopri8", rtol=1e-10, atol=1e-10)
    assert float((shared.ys - exact).abs().max()) < 1e-9
    assert float((per_sample.ys - exact).abs().max()) < 1e-9


def test_gradients_through_an_interpolated_output_pass_gradcheck():
    # direct gradients: through the step, the seven dense stages and the polynomial, w.r.t. y0 and a parameter
    k = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.37, 0.8], dtype=F64)

    def output(y0, k):
        def f(t, y):
            return torch.stack([y[1], -k * torch.sin(y[0])])

        # one step of 0.8: the output at 0.37 comes from the interpolant
        sol = neurode.solve(f, y0, t, solver="dopri8", step_t=torch.tensor([0.0, 0.8], dtype=F64),
                            rtol=1e-3, atol=1e-3, first_step=0.8)
        assert sol.stats.n_steps == 1  # so t = 0.37 is inside it
        return sol.ys[1]

    assert torch.autograd.gradcheck(output, (y0, k))


def test_the_extra_stages_are_paid_only_on_steps_with_an_output_inside():
    problem = ManufacturedProblem(batch=2)
    ends = torch.tensor([0.0, 3.0], dtype=F64)
    many = torch.linspace(0.0, 3.0, 61, dtype=F64)

    def nfe(t, **options):
        return neurode.solve(problem, problem.exact(0.0), t, solver="dopri8", rtol=1e-9, atol=1e-9, **options).stats

    quartic, order7 = nfe(many, torchdiffeq_interpolant=True), nfe(many)
    assert order7.n_steps == quartic.n_steps  # the same steps: only the outputs differ
    # 61 outputs over 11 accepted steps: a step with outputs inside pays seven evaluations once, however many
    extra = order7.nfe - quartic.nfe
    assert extra % 7 == 0 and 7 * (quartic.n_accepted - 2) <= extra <= 7 * quartic.n_accepted, (order7, quartic)
    # only the last step (which the loop takes past t = 3 and interpolates back into) has an output inside
    assert nfe(ends).nfe <= nfe(ends, torchdiffeq_interpolant=True).nfe + 7


def test_odeint_keeps_torchdiffeqs_quartic():
    problem = ManufacturedProblem(batch=2)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    odeint = neurode.odeint(problem, problem.exact(0.0), t, method="dopri8", rtol=1e-9, atol=1e-9)
    quartic = neurode.solve(problem, problem.exact(0.0), t, solver="dopri8", rtol=1e-9, atol=1e-9,
                            torchdiffeq_interpolant=True, tangent_control=False).ys
    torch.testing.assert_close(odeint, quartic, rtol=0, atol=0)
