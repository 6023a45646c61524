"""``neurode.solve(..., compile=True)``: the step, evaluations of f included, as compiled code.

Compiling costs seconds per state shape and dtype, so the tests that compile
are marked slow and share one problem.
"""

import os
import shutil

import pytest
import torch

import neurode
from neurode.framework.compiled_step import CompiledRungeKutta
from neurode.framework.errors import InvalidInputError
from neurode.framework.solve import make_solver

F64 = torch.float64

#: Inductor builds its CPU kernels with a C++ compiler; without one there is nothing to compile with
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c),
    reason="torch.compile's CPU backend needs a C++ compiler",
)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


def _solve_and_grad(func, adjoint, compile):
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 4, dtype=F64)
    # the compiled step takes no tangent (compile=True has no tangent control): compare like with like
    sol = neurode.solve(func, y0, t, adjoint=adjoint, rtol=1e-8, atol=1e-10, compile=compile, tangent_control=False)
    grads = torch.autograd.grad((sol.ys**2).sum(), (y0, *func.parameters()))
    return sol, torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
def test_compiled_steps_give_the_eager_solution_and_gradients(adjoint):
    func = MLP()
    eager, g_eager = _solve_and_grad(func, adjoint, False)
    compiled, g_compiled = _solve_and_grad(func, adjoint, True)
    # the same method and step sequence; the stage arithmetic differs only in rounding
    assert (compiled.stats.nfe, compiled.stats.n_steps) == (eager.stats.nfe, eager.stats.n_steps)
    assert compiled.stats.nfe_backward == eager.stats.nfe_backward
    assert torch.allclose(compiled.ys, eager.ys, rtol=1e-11, atol=1e-13)
    assert torch.allclose(g_compiled, g_eager, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@needs_compiler
def test_compiled_steps_pass_args_and_produce_dense_outputs_between_steps():
    k = torch.tensor([0.5, 2.0], dtype=F64)
    y0 = torch.tensor([[1.0], [1.0]], dtype=F64)
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    def decay(t_, y, rate):
        return -rate[:, None] * y

    sol = neurode.solve(decay, y0, t, args=k, compile=True, rtol=1e-9, atol=1e-12)
    eager = neurode.solve(decay, y0, t, args=k, rtol=1e-9, atol=1e-12)
    exact = torch.exp(-k[None, :, None] * t[:, None, None])
    assert sol.stats.n_steps == eager.stats.n_steps < len(t) * 3
    assert torch.allclose(sol.ys, eager.ys, rtol=1e-12, atol=1e-14)
    assert torch.allclose(sol.ys, exact, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    ({"y0": (torch.ones(2), torch.ones(1))}, "tensor state, not a tuple"),
    ({"per_sample": True}, "not supported with per-sample"),
    ({"solver": "explicit_adams"}, "explicit Runge-Kutta solver, got 'explicit_adams'"),
])
def test_unsupported_compile_requests_say_so(kwargs, match):
    args = {"y0": torch.ones(2, 1), "t": torch.linspace(0.0, 1.0, 3)} | kwargs
    func = (lambda t, y: tuple(-v for v in y)) if isinstance(args["y0"], tuple) else (lambda t, y: -y)
    with pytest.raises(InvalidInputError, match=match):
        neurode.solve(func, args.pop("y0"), args.pop("t"), compile=True, **args)


def test_compiled_solver_refuses_what_it_cannot_compile():
    with pytest.raises(InvalidInputError, match="explicit Runge"):
        CompiledRungeKutta(object())
    with pytest.raises(InvalidInputError, match="perturb"):
        CompiledRungeKutta(make_solver("rk4", {"perturb": True})[0])


def test_a_failing_compiler_is_reported_as_such(monkeypatch):
    import torch._dynamo.exc

    from neurode.framework import compiled_step

    def broken(*args, **kwargs):
        # built without its constructor, whose signature changes between torch versions
        exc = torch._dynamo.exc.BackendCompilerFailed.__new__(torch._dynamo.exc.BackendCompilerFailed)
        exc.args = ("no C++ compiler",)
        raise exc

    monkeypatch.setattr(compiled_step.torch, "compile", lambda fn, **options: broken)
    monkeypatch.setattr(compiled_step, "_COMPILED", {})
    with pytest.raises(compiled_step.CompileError, match="Inductor's CPU backend needs a working C"):
        neurode.solve(lambda t, y: -y, torch.ones(2), torch.linspace(0.0, 1.0, 3), compile=True)


@pytest.mark.slow
@needs_compiler
def test_compiled_steps_serve_events_dense_output_and_decreasing_time():
    def fall(t, y):  # a ball dropped from 10 m
        return torch.stack([y[1], -9.81 * torch.ones_like(y[0])])

    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 5.0], dtype=F64)
    event = neurode.solve(fall, y0, t, event_fn=lambda t_, y: y[0], compile=True)
    assert float(event.event_t) == pytest.approx((2 * 10 / 9.81) ** 0.5, rel=1e-6)
    dense = neurode.solve(fall, y0, t, dense=True, compile=True)
    assert float(dense.dense(torch.tensor(1.0, dtype=F64))[0]) == pytest.approx(10 - 9.81 / 2, rel=1e-9)
    backward = neurode.solve(fall, y0, torch.tensor([1.0, 0.0], dtype=F64), compile=True)
    assert torch.allclose(backward.ys[-1], torch.tensor([10 - 9.81 / 2, 9.81], dtype=F64), rtol=1e-9)
