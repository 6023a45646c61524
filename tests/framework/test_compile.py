"""Dynamics compiled with ``torch.compile`` run inside neurode's loops, forward and backward.

What is compiled is the user's vector field; the integration loop itself stays
eager Python (it branches on accept/reject decisions every step). The test is
marked slow: compiling costs seconds.
"""

import pytest
import torch

import neurode


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, t, y):
        return self.net(y)


@pytest.mark.slow
def test_compiled_dynamics_give_the_eager_results_and_gradients():
    torch.manual_seed(0)
    func = MLP()
    compiled = torch.compile(func, dynamic=False)
    y0 = torch.randn(4, 2)
    t = torch.linspace(0, 1, 3)
    eager = neurode.odeint(func, y0, t)
    assert torch.allclose(neurode.odeint(compiled, y0, t), eager, atol=1e-5)
    grads = []
    for f in (func, compiled):
        y = y0.clone().requires_grad_(True)
        sol = neurode.solve(f, y, t, adjoint="checkpoint")
        grads.append(torch.autograd.grad(sol.ys.sum(), y)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
