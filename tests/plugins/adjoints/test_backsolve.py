"""The continuous adjoint: agreement with direct gradients, the seminorm, inherited options."""

import pytest
import torch

import neurode

F64 = torch.float64


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=F64))

    def forward(self, t, y):
        return torch.tanh(y) @ self.A.T


def _grads(adjoint, **kwargs):
    torch.manual_seed(0)
    func = Linear()
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=F64, requires_grad=True)
    t = torch.linspace(0, 3, 7, dtype=F64)
    sol = neurode.solve(func, y0, t, adjoint=adjoint, **kwargs)
    (sol.ys ** 2).sum().backward()
    return y0.grad, func.A.grad, sol.stats


@pytest.mark.parametrize("controller", ["i", "pi", "pid"])
def test_backsolve_matches_direct_to_tolerance(controller):
    gy_d, ga_d, _ = _grads("direct", rtol=1e-10, atol=1e-12, controller=controller)
    gy_b, ga_b, stats = _grads("backsolve", rtol=1e-10, atol=1e-12, controller=controller)
    assert torch.allclose(gy_b, gy_d, rtol=1e-6, atol=1e-8)
    assert torch.allclose(ga_b, ga_d, rtol=1e-6, atol=1e-8)
    assert stats.nfe_backward > 0 and stats.n_steps_backward > 0


def test_seminorm_takes_no_more_backward_evaluations_and_stays_accurate():
    _, ga_d, _ = _grads("direct", rtol=1e-8, atol=1e-10)
    _, ga_full, full = _grads("backsolve", rtol=1e-8, atol=1e-10)
    _, ga_semi, semi = _grads("backsolve", rtol=1e-8, atol=1e-10, adjoint_options={"options": {"norm": "seminorm"}})
    assert semi.nfe_backward <= full.nfe_backward
    assert torch.allclose(ga_semi, ga_d, rtol=1e-4, atol=1e-6)


def test_backsolve_inherits_fixed_step_options_of_the_forward_solve():
    # With rk4 and a step size, the backward solve must step as finely as the forward one:
    # the gradient then equals direct's up to the O(h^4) difference of the two discretisations.
    _, ga_d, _ = _grads("direct", solver="rk4", step_size=0.05)
    _, ga_b, stats = _grads("backsolve", solver="rk4", step_size=0.05)
    assert torch.allclose(ga_b, ga_d, rtol=1e-5, atol=1e-7)
    assert stats.n_steps_backward >= 3 / 0.05 - 1


def test_unknown_norm_is_rejected():
    with pytest.raises(neurode.NeurodeError, match="seminorm"):
        _grads("backsolve", adjoint_options={"options": {"norm": "l2"}})


def test_the_backward_solve_keeps_the_forward_controller():
    # as torchdiffeq's adjoint inherits the forward options: a controller instance is started again backwards
    from neurode.framework.controller import PIController

    class Spy(PIController):
        starts = 0

        def start(self):
            Spy.starts += 1
            return super().start()

    func = Linear()
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=F64, requires_grad=True)
    sol = neurode.solve(func, y0, torch.linspace(0, 3, 4, dtype=F64), adjoint="backsolve", controller=Spy())
    assert Spy.starts == 1
    sol.ys.sum().backward()
    assert Spy.starts == 1 + 3  # one backward solve per output interval
    # options of its own that configure a controller replace it
    Spy.starts = 0
    sol = neurode.solve(func, y0, torch.linspace(0, 3, 4, dtype=F64), adjoint="backsolve", controller=Spy(),
                        adjoint_options={"options": {"safety": 0.8}})
    sol.ys.sum().backward()
    assert Spy.starts == 1


# --------------------------------------------------------------------------- torchdiffeq's adjoint callbacks


class _AdjointCallbacks(Linear):
    """``callback_*_adjoint`` (torchdiffeq's names): step callbacks of odeint_adjoint's backward solve."""

    def __init__(self):
        super().__init__()
        self.forward_steps = 0
        self.backward = {"step": [], "accept": [], "reject": []}

    def callback_step(self, t0, y0, dt):
        self.forward_steps += 1

    def callback_step_adjoint(self, t0, y0, dt):
        self.backward["step"].append((float(t0), y0))

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.backward["accept"].append(float(t0))

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self.backward["reject"].append(float(t0))


def test_adjoint_callbacks_are_called_by_the_backward_solve_only():
    func = _AdjointCallbacks()
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    ys = neurode.odeint_adjoint(func, y0, torch.tensor([0.0, 2.0], dtype=F64))
    steps = func.forward_steps
    assert steps > 0 and func.backward["step"] == []  # the forward solve calls the forward callbacks only
    ys.sum().backward()
    backward = func.backward
    assert func.forward_steps == steps
    assert len(backward["step"]) == len(backward["accept"]) + len(backward["reject"]) > 0
    t0s = [t for t, _ in backward["step"]]
    assert t0s[0] == 2.0 and all(0.0 < t <= 2.0 for t in t0s)  # from the end time back
    # the state passed is the augmented state (dL/dt, y, a = dL/dy, dL/dA), as torchdiffeq passes it
    assert [tuple(part.shape) for part in backward["step"][0][1]] == [(), (2,), (2,), (2, 2)]


def test_adjoint_step_callback_of_a_fixed_grid_is_called_once_per_step():
    func, t0s = Linear(), []
    func.callback_step_adjoint = lambda t0, y0, dt: t0s.append(round(float(t0), 12))
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    ys = neurode.odeint_adjoint(func, y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4",
                                options={"step_size": 0.1})
    assert t0s == []
    ys.sum().backward()
    assert t0s == [round(1.0 - 0.1 * k, 12) for k in range(10)]


def test_a_field_that_depends_on_nothing_differentiated_has_zero_adjoint_dynamics():
    # dy/dt = g(t): with t not differentiated, no vector-Jacobian product exists (torch would raise);
    # dL/dy0 is then dL/dy(T) carried back unchanged
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    ys = neurode.odeint_adjoint(lambda t, y: torch.cos(t).expand(2), y0, t, adjoint_params=())
    (ys[-1] * torch.tensor([3.0, -1.0], dtype=F64)).sum().backward()
    assert torch.equal(y0.grad, torch.tensor([3.0, -1.0], dtype=F64))
    assert torch.allclose(ys[:, 0], 1.0 + torch.sin(t), rtol=1e-6)
