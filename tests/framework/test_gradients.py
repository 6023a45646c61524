"""Gradients through a solve, for every gradient method: finite differences, exact solutions, each other.

``direct`` backpropagates through the solver's operations; ``checkpoint``
recomputes them step by step and must give the same numbers; ``backsolve``
solves the adjoint ODE and must agree to about the tolerance. All three are
checked with ``torch.autograd.gradcheck`` (float64 finite differences) with
respect to ``y0`` and a parameter tensor, against the closed-form gradients
of a linear ODE, and for the output times ``t`` (whose gradient is
``f(t, y(t))`` paired with the cotangent).
"""

from __future__ import annotations

import pytest
import torch

import neurode
from neurode.framework.registry import get_registry

F64 = torch.float64
METHODS = get_registry().names("adjoint")
#: solves tight enough that a continuous adjoint agrees with the discrete gradient far below gradcheck's 1e-5
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _pendulum(theta):
    def func(t, y):
        return torch.stack([y[..., 1], -theta[0] * torch.sin(y[..., 0]) - theta[1] * y[..., 1]
                            + theta[2] * torch.cos(t)], dim=-1)

    return func


Y0 = torch.tensor([[1.0, 0.0], [0.3, -0.5]], dtype=F64)
THETA = torch.tensor([1.3, 0.2, 0.4], dtype=F64)
T = torch.tensor([0.0, 0.6, 1.5], dtype=F64)


def _solve(method, func, y0, t, **kwargs):
    return neurode.solve(func, y0, t, adjoint=method, **kwargs)


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("solver", ["dopri5", "rk4"])
def test_gradcheck_with_respect_to_y0_and_parameters(method, solver):
    options = TIGHT if solver == "dopri5" else {"step_size": 0.1}

    def outputs(y0, theta):
        return _solve(method, _pendulum(theta), y0, T, solver=solver, adjoint_params=(theta,), **options).ys

    assert torch.autograd.gradcheck(outputs, (Y0.clone().requires_grad_(), THETA.clone().requires_grad_()))


def test_gradcheck_of_odeint_with_respect_to_y0_and_parameters():
    # the torchdiffeq-compatible entry point, which always uses direct
    def outputs(y0, theta):
        return neurode.odeint(_pendulum(theta), y0, T, **TIGHT)

    assert torch.autograd.gradcheck(outputs, (Y0.clone().requires_grad_(), THETA.clone().requires_grad_()))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("method", METHODS)
def test_gradients_of_a_linear_ode_are_the_matrix_exponential(method):
    # y' = A y has y(t) = exp(A t) y0: the exact gradients of <w, y(2)> with respect to y0 and A are
    # autograd's through torch.linalg.matrix_exp
    A = torch.tensor([[-0.3, 1.0], [-1.0, -0.1]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([0.7, -0.2], dtype=F64, requires_grad=True)
    w = torch.tensor([1.5, -0.5], dtype=F64)
    t1 = torch.tensor([0.0, 2.0], dtype=F64)
    sol = _solve(method, lambda t, y: A @ y, y0, t1, adjoint_params=(A,), **TIGHT)
    got = torch.autograd.grad((sol.ys[-1] * w).sum(), (y0, A))

    A_ = A.detach().clone().requires_grad_(True)
    y0_ = y0.detach().clone().requires_grad_(True)
    exact = torch.autograd.grad(((torch.linalg.matrix_exp(2.0 * A_) @ y0_) * w).sum(), (y0_, A_))
    for g, e in zip(got, exact):
        assert torch.allclose(g, e, rtol=1e-8, atol=1e-10), (g, e)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_with_respect_to_output_times_is_the_vector_field(method):
    # d y(t_i) / d t_i = f(t_i, y(t_i)) for i >= 1; the start time moves every output the other way
    theta = THETA
    func = _pendulum(theta)
    t = T.clone().requires_grad_(True)
    w = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=F64)
    sol = _solve(method, func, Y0, t, adjoint_params=(), **TIGHT)
    (grad_t,) = torch.autograd.grad((sol.ys[1:] * w).sum(), t)
    with torch.no_grad():
        ys = sol.ys.detach()
        expected_later = torch.stack([(func(t[i], ys[i]) * w).sum() for i in (1, 2)])
    assert torch.allclose(grad_t[1:], expected_later, rtol=1e-7, atol=1e-9)
    # the start time t0 (y0 held fixed) moves every output: against a central finite difference
    eps = 1e-6
    shifted = [neurode.solve(func, Y0, torch.cat([T[:1] + s, T[1:]]), **TIGHT).ys[1:] for s in (eps, -eps)]
    fd = float(((shifted[0] - shifted[1]) * w).sum()) / (2 * eps)
    assert float(grad_t[0]) == pytest.approx(fd, rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------- the methods against each other


@pytest.mark.parametrize("solver, options", [("dopri5", {}), ("tsit5", {}), ("bosh3", {"rtol": 1e-5}),
                                             ("rk4", {"step_size": 0.05}), ("dopri5", {"step_t": T})])
def test_checkpoint_gradients_equal_direct_to_round_off(solver, options):
    if "checkpoint" not in METHODS:
        pytest.skip("checkpoint not registered")
    grads = {}
    for method in ("direct", "checkpoint"):
        theta = THETA.clone().requires_grad_(True)
        y0 = Y0.clone().requires_grad_(True)
        t = T.clone().requires_grad_(True)
        sol = _solve(method, _pendulum(theta), y0, t, solver=solver, adjoint_params=(theta,), **options)
        grads[method] = torch.autograd.grad((sol.ys ** 2).sum(), (y0, theta, t))
    for d, c in zip(grads["direct"], grads["checkpoint"]):
        assert torch.allclose(c, d, rtol=1e-12, atol=1e-13), (c - d).abs().max()


def test_checkpoint_gradients_of_a_tuple_state_equal_direct():
    if "checkpoint" not in METHODS:
        pytest.skip("checkpoint not registered")

    def func(t, state):
        x, v = state
        return v, -THETA[0] * torch.sin(x)

    grads = {}
    for method in ("direct", "checkpoint"):
        x0 = Y0[:, 0].clone().requires_grad_(True)
        v0 = Y0[:, 1].clone().requires_grad_(True)
        sol = _solve(method, func, (x0, v0), T, adjoint_params=())
        grads[method] = torch.autograd.grad(sol.ys[0].sum() + (sol.ys[1] ** 2).sum(), (x0, v0))
    for d, c in zip(grads["direct"], grads["checkpoint"]):
        assert torch.allclose(c, d, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "direct"])
def test_backward_pass_reports_its_cost(method):
    theta = THETA.clone().requires_grad_(True)
    sol = _solve(method, _pendulum(theta), Y0, T, adjoint_params=(theta,))
    assert sol.stats.nfe_backward == 0 and sol.stats.n_steps_backward == 0
    sol.ys.sum().backward()
    assert sol.stats.nfe_backward > 0 and sol.stats.n_steps_backward > 0
    if method == "checkpoint":  # recomputes each accepted step once
        assert sol.stats.n_steps_backward == sol.stats.n_accepted


def test_odeint_adjoint_is_solve_with_backsolve():
    if "backsolve" not in METHODS:
        pytest.skip("backsolve not registered")
    grads = []
    for run in ("odeint_adjoint", "solve"):
        theta = THETA.clone().requires_grad_(True)
        y0 = Y0.clone().requires_grad_(True)
        if run == "odeint_adjoint":
            ys = neurode.odeint_adjoint(_pendulum(theta), y0, T, adjoint_params=(theta,))
        else:
            # torchdiffeq's default backward norm includes the parameter part; neurode.solve's is the seminorm
            ys = _solve("backsolve", _pendulum(theta), y0, T, adjoint_params=(theta,),
                        adjoint_options={"options": {"norm": "full"}}).ys
        grads.append(torch.autograd.grad(ys.sum(), (y0, theta)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_gradients_reach_every_parameter_of_a_module():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    for method in METHODS:
        func = Field()
        func.zero_grad()
        _solve(method, func, Y0, T).ys.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in func.parameters()), method
