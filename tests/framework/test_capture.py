"""Gradient methods that evaluate ``f`` outside the user's graph find every tensor ``f`` reads.

Issue 10: with ``neurode.solve(lambda t, y: net(y), ...)`` the checkpointed and
continuous adjoints used to give the parameters of ``net`` no gradient at all
(or raise torch's "element 0 of tensors does not require grad"). They now
watch the forward solve (``framework/capture.py``).
"""

import pytest
import torch

import neurode
from neurode.framework.capture import TensorCapture, tensors_requiring_grad, unique_tensors
from neurode.framework.errors import InvalidInputError

F64 = torch.float64
T = torch.linspace(0.0, 1.0, 5, dtype=F64)
T_ROWS = torch.stack([T, 1.5 * T, 0.7 * T])


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()


def _grads(adjoint, func_of, per_sample, y0_requires_grad, leaves):
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=F64, requires_grad=y0_requires_grad)
    sol = neurode.solve(func_of(), y0, T_ROWS if per_sample else T, adjoint=adjoint, rtol=1e-9, atol=1e-11)
    inputs = ([y0] if y0_requires_grad else []) + list(leaves)
    return torch.autograd.grad((sol.ys.nan_to_num() ** 2).sum(), inputs)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per_sample"])
@pytest.mark.parametrize("y0_requires_grad", [True, False])
def test_a_closure_over_a_module_gets_directs_gradients(per_sample, y0_requires_grad):
    net = _net()

    def closure():
        return lambda t, y: net(y)

    leaves = list(net.parameters())
    direct = _grads("direct", closure, per_sample, y0_requires_grad, leaves)
    checkpoint = _grads("checkpoint", closure, per_sample, y0_requires_grad, leaves)
    backsolve = _grads("backsolve", closure, per_sample, y0_requires_grad, leaves)
    for d, c, b in zip(direct, checkpoint, backsolve):
        assert torch.allclose(c, d, rtol=1e-12, atol=1e-13)  # checkpoint: the same arithmetic, recomputed
        assert torch.allclose(b, d, rtol=1e-5, atol=1e-7)  # the continuous adjoint: to the tolerances


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_a_captured_non_leaf_tensor_passes_its_gradient_on(adjoint):
    # an encoder's output captured by the dynamics (a Latent-ODE-style context): the gradient reaches the encoder
    encoder = torch.nn.Linear(3, 2).double()
    x = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(1))
    grads = {}
    for method in ("direct", adjoint):
        context = torch.tanh(encoder(x))  # non-leaf, requires grad
        y0 = torch.tensor([1.0, -0.5], dtype=F64)
        sol = neurode.solve(lambda t, y: -y * context.exp(), y0, T, adjoint=method, rtol=1e-10, atol=1e-12)
        grads[method] = torch.autograd.grad(sol.ys.sum(), (encoder.weight, encoder.bias))
    for d, m in zip(grads["direct"], grads[adjoint]):
        assert torch.allclose(m, d, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_tensors_in_args_get_gradients(adjoint):
    rate = torch.tensor([0.5, -0.3], dtype=F64, requires_grad=True)
    grads = []
    for method in ("direct", adjoint):
        y0 = torch.tensor([1.0, 2.0], dtype=F64)
        sol = neurode.solve(lambda t, y, k: -k * y, y0, T, args=rate, adjoint=method, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(sol.ys.sum(), rate)[0])
    assert torch.allclose(grads[1], grads[0], rtol=1e-7)


def test_per_sample_checkpoint_differentiates_args_and_per_sample_backsolve_says_it_cannot():
    rate = torch.tensor([[0.5, 0.1], [1.0, 2.0], [0.2, 0.3]], dtype=F64, requires_grad=True)
    y0 = torch.ones(3, 2, dtype=F64)
    grads = []
    for method in ("direct", "checkpoint"):
        sol = neurode.solve(lambda t, y, k: -k * y, y0, T_ROWS, args=rate, adjoint=method, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(sol.ys.nan_to_num().sum(), rate)[0])
    assert torch.allclose(grads[1], grads[0], rtol=1e-12)
    with pytest.raises(InvalidInputError, match="args"):
        neurode.solve(lambda t, y, k: -k * y, y0, T_ROWS, args=rate, adjoint="backsolve")


def test_a_parameter_read_through_a_view_is_one_input():
    # self.weight.T under no_grad is a view that still requires grad: recorded as its base, once
    weight = torch.nn.Parameter(torch.eye(2, dtype=F64))
    capture = TensorCapture()
    with torch.no_grad(), capture:
        for _ in range(3):
            torch.ones(1, 2, dtype=F64) @ weight.T
    assert capture.tensors == (weight,)


def test_explicit_adjoint_params_are_exactly_what_is_differentiated():
    # torchdiffeq's contract: given adjoint_params, only those get gradients
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    b = torch.tensor(2.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64)
    for method in ("checkpoint", "backsolve"):
        sol = neurode.solve(lambda t, y: -a * b * y, y0, T, adjoint=method, adjoint_params=(a,))
        (ga,) = torch.autograd.grad(sol.ys.sum(), a)
        assert ga != 0
        with pytest.raises(RuntimeError, match="does not require grad|not have been used"):
            torch.autograd.grad(neurode.solve(lambda t, y: -a * b * y, y0, T, adjoint=method,
                                              adjoint_params=(a,)).ys.sum(), b)


def test_adjoint_params_are_checked():
    y0 = torch.ones(2, dtype=F64)
    p = torch.ones(2, dtype=F64, requires_grad=True)
    with pytest.raises(InvalidInputError, match="sequence of tensors"):
        neurode.solve(lambda t, y: -y, y0, T, adjoint="backsolve", adjoint_params=p)
    with pytest.raises(InvalidInputError, match="tensors only"):
        neurode.solve(lambda t, y: -y, y0, T, adjoint="backsolve", adjoint_params=(p, 3.0))
    # a generator (net.parameters()) is a sequence like any other
    net = _net()
    sol = neurode.solve(lambda t, y: net(y), torch.ones(1, 2, dtype=F64), T, adjoint="backsolve",
                        adjoint_params=net.parameters())
    assert all(g is not None for g in torch.autograd.grad(sol.ys.sum(), list(net.parameters())))


def test_odeint_adjoint_keeps_torchdiffeqs_error_for_a_plain_callable():
    with pytest.raises(ValueError, match="adjoint_params"):
        neurode.odeint_adjoint(lambda t, y: -y, torch.ones(2, dtype=F64, requires_grad=True), T)


def test_helpers():
    a, b = torch.ones(1, requires_grad=True), torch.ones(1)
    assert tensors_requiring_grad({"x": [a, b], "y": (a,), "z": 3}) == [a, a]
    assert unique_tensors([a, b], [a]) == (a, b)


def test_backsolve_defaults_to_the_seminorm_and_odeint_adjoint_to_the_full_norm():
    # Kidger, Chen & Lyons (2021): the parameter part of the adjoint state need not be error-controlled
    net = _net()
    t = torch.linspace(0.0, 10.0, 3, dtype=F64)

    def run(**kwargs):
        y0 = torch.tensor([[1.0, 0.5]], dtype=F64, requires_grad=True)
        sol = neurode.solve(lambda t_, y: net(y), y0, t, adjoint="backsolve", rtol=1e-6, atol=1e-8,
                            adjoint_params=tuple(net.parameters()), **kwargs)
        grads = torch.autograd.grad(sol.ys.sum(), (y0, *net.parameters()))
        return sol.stats.nfe_backward, grads

    semi_nfe, semi = run()
    full_nfe, full = run(adjoint_options={"options": {"norm": "full"}})
    assert semi_nfe < full_nfe
    for s, f in zip(semi, full):
        assert torch.allclose(s, f, rtol=1e-3, atol=1e-5)
    # odeint_adjoint: torchdiffeq's default (the full norm), step for step
    y0 = torch.tensor([[1.0, 0.5]], dtype=F64, requires_grad=True)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t_, y):
            return self.net(y)

    func = Field()
    ys = neurode.odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-8)
    full_grads = torch.autograd.grad(ys.sum(), (y0, *net.parameters()))
    for a, b in zip(full_grads, full):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
