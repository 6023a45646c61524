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
