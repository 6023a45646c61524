"""Implicit-function-theorem gradients of a root (framework/implicit_gradient.py)."""

import pytest
import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.implicit_gradient import implicit_root

F64 = torch.float64
H = 0.1


def stiff_matrix(scale: float = 1.0) -> torch.Tensor:
    return torch.tensor([[-1.0, 0.5], [0.2, -1000.0]], dtype=F64) * scale


def stages(y0: torch.Tensor, a: torch.Tensor, linear_solver: str = "lu") -> torch.Tensor:
    """The implicit Euler stage ``K = a (y0 + h K)`` by a solve off the graph, differentiable by the theorem."""
    with torch.no_grad():
        root = torch.linalg.solve(torch.eye(2, dtype=F64) - H * a, a @ y0)
    return implicit_root(lambda k: k - a @ (y0 + H * k), root, linear_solver=linear_solver)


@pytest.mark.parametrize("linear_solver", ["lu", "gmres"])
def test_the_gradient_is_the_implicit_function_theorems(linear_solver):
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    a = stiff_matrix().requires_grad_(True)
    k = stages(y0, a, linear_solver)
    exact = torch.linalg.solve(torch.eye(2, dtype=F64) - H * a, a @ y0)
    assert torch.equal(k.detach(), exact.detach())  # the forward value is the root, unchanged
    cotangent = torch.tensor([0.3, -1.7], dtype=F64)
    for got, want in zip(torch.autograd.grad(k, (y0, a), cotangent), torch.autograd.grad(exact, (y0, a), cotangent)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # GMRES's least-squares solves are reproducible only to round-off: gradcheck's re-entrance test gets that slack
    assert torch.autograd.gradcheck(lambda y, m: stages(y, m, linear_solver), (y0, a),
                                    nondet_tol=1e-12 if linear_solver == "gmres" else 0.0)


def test_closure_captures_get_their_gradient_without_being_named():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    scale = torch.tensor(1.3, dtype=F64, requires_grad=True)  # read by the residual, never passed to implicit_root
    a = stiff_matrix()

    def root_of(s):
        with torch.no_grad():
            root = torch.linalg.solve(torch.eye(2, dtype=F64) - H * s * a, s * a @ y0)
        return implicit_root(lambda k: k - s * a @ (y0 + H * k), root)

    assert torch.autograd.gradcheck(root_of, (scale,))


@pytest.mark.parametrize("linear_solver", ["lu", "gmres"])
def test_per_sample_systems_are_solved_independently(linear_solver, monkeypatch):
    # B samples, each its own 2 x 2 stage system: the gradient of each is that of its own closed form, and the
    # transposed solve works on (B, 2, 2) blocks, never on one (2B)^2 matrix
    batch = 5
    rates = torch.linspace(1.0, 3.0, batch, dtype=F64).requires_grad_(True)
    y0 = torch.randn(batch, 2, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    a = stiff_matrix()

    def field(y):
        return rates[:, None] * (y @ a.T)

    with torch.no_grad():
        mats = torch.eye(2, dtype=F64) - H * rates[:, None, None] * a
        root = torch.linalg.solve(mats, field(y0).unsqueeze(-1)).squeeze(-1)
    sizes = []
    solve_ex = torch.linalg.solve_ex
    monkeypatch.setattr(torch.linalg, "solve_ex", lambda m, b: sizes.append(tuple(m.shape)) or solve_ex(m, b))
    k = implicit_root(lambda z: z - field(y0 + H * z), root, per_sample=True, linear_solver=linear_solver)
    exact = torch.linalg.solve(torch.eye(2, dtype=F64) - H * rates[:, None, None] * a,
                               (rates[:, None] * (y0 @ a.T)).unsqueeze(-1)).squeeze(-1)
    cotangent = torch.randn(batch, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    for got, want in zip(torch.autograd.grad(k, (y0, rates), cotangent),
                         torch.autograd.grad(exact, (y0, rates), cotangent)):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    if linear_solver == "lu":
        assert sizes == [(batch, 2, 2)]


def test_a_given_jacobian_is_used_and_checked():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    a = stiff_matrix()
    calls = []

    def jacobian():
        calls.append(1)
        return torch.eye(2, dtype=F64) - H * a

    k = implicit_root(lambda z: z - a @ (y0 + H * z), torch.zeros(2, dtype=F64), jacobian=jacobian)
    assert not calls  # formed only when a backward pass runs
    (g,) = torch.autograd.grad(k.sum(), y0)
    assert calls == [1]
    torch.testing.assert_close(g, torch.linalg.solve(torch.eye(2, dtype=F64) - H * a, a).sum(0))
    k = implicit_root(lambda z: z - a @ (y0 + H * z), torch.zeros(2, dtype=F64), jacobian=lambda: torch.eye(3))
    with pytest.raises(InvalidInputError, match=r"\(2, 2\)"):
        k.sum().backward()


def test_without_a_gradient_to_record_the_residual_is_not_evaluated():
    calls = []

    def residual(k):
        calls.append(1)
        return k

    root = torch.ones(3, dtype=F64)
    with torch.no_grad():
        assert implicit_root(residual, root) is not None
    assert not calls
    out = implicit_root(residual, root)  # nothing the residual reads requires grad
    assert not out.requires_grad and torch.equal(out, root)


def test_second_derivatives_are_refused_not_silently_wrong():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    k = stages(y0, stiff_matrix())
    with pytest.raises(RuntimeError, match="unrolled"):
        torch.autograd.grad(k.sum(), y0, create_graph=True)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(InvalidInputError, match="linear_solver"):
        implicit_root(lambda k: k, torch.ones(2), linear_solver="qr")
    with pytest.raises(InvalidInputError, match="root's shape"):
        implicit_root(lambda k: k.sum(), torch.ones(2, requires_grad=True))
    with pytest.raises(InvalidInputError, match="per-sample"):
        implicit_root(lambda k: k, torch.ones(()), per_sample=True)


def test_an_unconverged_gmres_solve_warns():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    a = stiff_matrix()
    with torch.no_grad():
        root = torch.linalg.solve(torch.eye(2, dtype=F64) - H * a, a @ y0)
    k = implicit_root(lambda z: z - a @ (y0 + H * z), root, linear_solver="gmres", rtol=1e-30, max_iters=1)
    with pytest.warns(RuntimeWarning, match="inexact"):
        torch.autograd.grad(k.sum(), y0)
