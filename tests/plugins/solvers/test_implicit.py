"""The fixed-step implicit Runge–Kutta methods under torchdiffeq's names (issue 15, item 1)."""

import math

import pytest
import torch

import neurode
from neurode.framework.errors import InvalidInputError, SolverError
from neurode.framework.implicit_rk import ImplicitRungeKutta, ImplicitTableau
from neurode.plugins.solvers.tableaus.implicit import METHODS
from neurode.testing import check_solver

F64 = torch.float64
NAMES = [tableau.name for tableau in METHODS]
L_STABLE = ["implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2"]


@pytest.mark.parametrize("name", NAMES)
def test_meets_the_solver_contract_with_its_declared_order(name):
    report = check_solver(name, devices=("cpu",))
    assert abs(report.measured_order - report.order) < 0.15


def test_the_names_are_torchdiffeqs():
    names = set(neurode.get_registry().names("solver")) if hasattr(neurode.get_registry(), "names") else None
    for name in NAMES:
        assert neurode.get_registry().get("solver", name).obj is not None
    if names is not None:
        assert set(NAMES) <= names


@pytest.mark.parametrize("name", L_STABLE)
def test_l_stable_methods_take_steps_far_beyond_the_explicit_stability_limit(name):
    # y' = -1000 (y - cos t): with h = 0.1 (h * lambda = -100) an explicit method explodes; these track cos t
    def stiff(t, y):
        return -1000.0 * (y - torch.cos(t))

    t = torch.linspace(0.0, 2.0, 21, dtype=F64)
    ys = neurode.solve(stiff, torch.zeros(1, dtype=F64), t, solver=name, step_size=0.1).ys
    slow_manifold = torch.cos(t[5:]) + torch.sin(t[5:]) / 1000  # the solution once the transient has decayed
    assert torch.allclose(ys[5:, 0], slow_manifold, atol=2e-3)
    explicit = neurode.solve(stiff, torch.zeros(1, dtype=F64), t, solver="rk4", step_size=0.1).ys
    assert explicit[-1].abs() > 1e10  # |R(-100)| = 4e6 per step for rk4


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
@pytest.mark.parametrize("name", ["gl4", "radauIIA5", "trbdf2"])
def test_gradients_match_the_closed_form(name, adjoint):
    # y' = a y: y(T) = y0 exp(a T), dy(T)/da = T y(T), dy(T)/dy0 = exp(a T)
    a = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.3], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    sol = neurode.solve(lambda t_, y: a * y, y0, t, solver=name, step_size=0.01, adjoint=adjoint,
                        adjoint_params=(a,))
    ga, gy0 = torch.autograd.grad(sol.ys[-1, 0], (a, y0))
    exact_y = 1.3 * math.exp(-1.4)
    bound = 1e-4 if name == "trbdf2" else 1e-7  # second order at h = 0.01
    assert abs(float(ga) - 2.0 * exact_y) < bound and abs(float(gy0) - math.exp(-1.4)) < bound


def test_gradients_through_the_newton_iterations_pass_gradcheck():
    def fn(y0, k):
        return neurode.solve(lambda t, y: -k * y**3, y0, torch.tensor([0.0, 1.0], dtype=F64), solver="radauIIA3",
                             step_size=0.25, adjoint_params=(k,)).ys

    y0 = torch.tensor([0.8, -0.5], dtype=F64, requires_grad=True)
    k = torch.tensor(1.5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (y0, k))


def test_a_newton_failure_is_a_solver_error_naming_t_and_the_step():
    # y' = y^2 from y0 = 1 blows up at t = 1: the implicit Euler stage equation K = (1 + h K)^2 has no real
    # solution for h > 1/4, and at h = 1/2 the iteration matrix 1 - h f'(y0) is singular
    for h, message in ((0.4, "did not converge"), (0.5, "singular")):
        with pytest.raises(SolverError, match=rf"{message}.*t=0 with step size {h}") as info:
            neurode.solve(lambda t, y: y**2, torch.ones(1, dtype=F64), torch.tensor([0.0, h], dtype=F64),
                          solver="implicit_euler", step_size=h, max_iters=20)
        assert info.value.t == 0.0 and info.value.dt == h


def test_options_are_checked():
    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidInputError, match="max_iters"):
        neurode.solve(lambda t_, y: -y, y0, t, solver="gl4", step_size=0.1, max_iters=0)
    with pytest.raises(InvalidInputError, match="newton_tol"):
        neurode.solve(lambda t_, y: -y, y0, t, solver="gl4", step_size=0.1, newton_tol=2.0)
    with pytest.raises(InvalidInputError, match="per-sample|adaptive"):
        neurode.solve(lambda t_, y: -y, torch.ones(2, 1, dtype=F64), torch.stack([t, t]), solver="gl4")


def test_a_tableau_is_checked_when_it_is_made():
    with pytest.raises(ValueError, match="sum"):
        ImplicitTableau(name="bad", c=(0.5,), a=((0.4,),), b=(1.0,), order=1)
    with pytest.raises(ValueError, match="entries"):
        ImplicitTableau(name="bad", c=(0.5, 1.0), a=((0.5,),), b=(1.0,), order=1)
    with pytest.raises(TypeError, match="ImplicitTableau"):
        ImplicitRungeKutta("gl4")


def test_gl4_uses_the_gauss_nodes():
    # torchdiffeq's gl4 data gives both nodes as 1/2 - sqrt(3)/6; the Gauss nodes are 1/2 -/+ sqrt(3)/6
    gl4 = next(t for t in METHODS if t.name == "gl4")
    assert gl4.c == pytest.approx((0.5 - math.sqrt(3) / 6, 0.5 + math.sqrt(3) / 6))


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_the_jacobian_is_not_mistaken_for_a_parameter(adjoint):
    # the Newton matrix's Jacobian is taken under grad mode; the gradient methods that watch f (capture.py) must
    # find the module's parameter only, and backsolve's augmented dynamics (not twice differentiable) still steps
    class Decay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rate = torch.nn.Parameter(torch.tensor(-0.5, dtype=F64))

        def forward(self, t, y):
            return self.rate * y

    grads = []
    for method in ("direct", adjoint):
        func = Decay()
        y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        sol = neurode.solve(func, y0, torch.tensor([0.0, 1.0], dtype=F64), solver="gl4", step_size=0.1,
                            adjoint=method)
        grads.append(torch.autograd.grad(sol.ys[-1].sum(), (y0, func.rate)))
    for d, m in zip(*grads):
        assert torch.allclose(m, d, rtol=1e-6)
    assert torch.allclose(grads[0][1], torch.tensor(3 * math.exp(-0.5), dtype=F64), rtol=1e-7)
