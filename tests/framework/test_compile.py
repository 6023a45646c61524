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


class ScaledMLP(MLP):
    def forward(self, t, y, args):
        return self.net(y) * args[0][:, None]


def test_compiled_dynamics_in_the_per_sample_loop_compile_four_graphs_for_every_gradient_method():
    # the active set shrinks as samples finish, so the compiled f sees every batch size from 16 down to 1; with
    # dynamic=True that is one graph for all sizes > 1 and one for size 1 (torch specialises it), each with
    # gradients off (the starting step, no-grad solves) and on (y requiring grad: direct, the checkpoint replay,
    # the backsolve VJPs). The loops give f the same kind of tensor everywhere (no strided views, no y requiring
    # grad under no_grad), so four graphs serve all four solves below, far from torch's recompile limit (8)
    torch.manual_seed(0)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    func = ScaledMLP().double()
    compiled = torch.compile(func, backend=counting_backend, dynamic=True)
    y0 = torch.randn(16, 2, dtype=torch.float64)
    w = torch.logspace(-1, 1, 16, dtype=torch.float64)
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        eager = neurode.solve(func, y0, t, per_sample=True, args=(w,))
        assert torch.equal(neurode.solve(compiled, y0, t, per_sample=True, args=(w,)).ys, eager.ys)
    for adjoint in ("direct", "checkpoint", "backsolve"):
        grads = []
        for f in (func, compiled):
            y = y0.clone().requires_grad_(True)
            # without tangent control: the compiled f's tangent is a finite difference, the eager one's is exact
            sol = neurode.solve(f, y, t, per_sample=True, args=(w,), adjoint=adjoint, tangent_control=False)
            grads.append(torch.autograd.grad(sol.ys.sum(), (y, *func.parameters())))
        for eager_grad, compiled_grad in zip(*grads):
            assert torch.allclose(eager_grad, compiled_grad, rtol=1e-12, atol=1e-12)
    # with tangent control (the default when gradients are recorded) a compiled f is never given dual tensors:
    # its tangent is a finite difference from plain no-grad evaluations, so no graph is added for it
    for adjoint in ("direct", "checkpoint"):
        grads = []
        for f in (func, compiled):
            y = y0.clone().requires_grad_(True)
            sol = neurode.solve(f, y, t, per_sample=True, args=(w,), adjoint=adjoint, rtol=1e-9, atol=1e-11)
            grads.append(torch.autograd.grad(sol.ys.sum(), (y, *func.parameters())))
        for eager_grad, compiled_grad in zip(*grads):
            assert torch.allclose(eager_grad, compiled_grad, rtol=1e-6, atol=1e-8)
    assert len(graphs) <= 4  # 8 (the limit, then eager fallback) before the loops normalised what f receives
