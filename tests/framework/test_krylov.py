"""GMRES against dense solves: one system, batched systems with their own convergence, restarts, breakdown."""

import pytest
import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.krylov import batched_gmres, gmres


def stiff_matrix(n: int, seed: int = 0) -> torch.Tensor:
    """I - hγ J for a diffusion-like J: the shape of a Newton–Krylov system."""
    generator = torch.Generator().manual_seed(seed)
    lap = -2 * torch.eye(n, dtype=torch.float64) + torch.diag(torch.ones(n - 1, dtype=torch.float64), 1) \
        + torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    noise = 0.1 * torch.randn(n, n, generator=generator, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64) - 5.0 * lap + noise


def test_gmres_solves_a_system_to_its_tolerance():
    a = stiff_matrix(40)
    b = torch.randn(40, dtype=torch.float64)
    x, info = gmres(lambda v: a @ v, b, rtol=1e-10, restart=40)
    assert info.converged
    assert torch.linalg.vector_norm(b - a @ x) <= 1e-10 * torch.linalg.vector_norm(b) * 1.0001
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    assert info.iterations <= 40  # full GMRES terminates within n steps


def test_gmres_takes_the_shape_of_b_and_a_starting_guess():
    a = stiff_matrix(12)
    b = torch.randn(3, 4, dtype=torch.float64)
    exact = torch.linalg.solve(a, b.reshape(-1)).reshape(3, 4)
    x, info = gmres(lambda v: (a @ v.reshape(-1)).reshape(3, 4), b, rtol=1e-12)
    torch.testing.assert_close(x, exact)
    _, warm = gmres(lambda v: (a @ v.reshape(-1)).reshape(3, 4), b, x0=exact, rtol=1e-8)
    assert warm.iterations == 0 and warm.converged


def test_restarted_gmres_converges_and_a_small_budget_is_reported():
    a = stiff_matrix(60, seed=1)
    b = torch.randn(60, dtype=torch.float64)
    x, info = gmres(lambda v: a @ v, b, rtol=1e-9, restart=5, max_iters=2000)
    assert info.converged and info.iterations > 5  # needed restarts
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    _, short = gmres(lambda v: a @ v, b, rtol=1e-12, max_iters=3)
    assert not short.converged and short.iterations == 3 and short.residual_norm > 0


def test_batched_gmres_solves_independent_systems():
    mats = torch.stack([stiff_matrix(10, seed=s) * (1 + 10 * s) for s in range(4)])
    b = torch.randn(4, 10, dtype=torch.float64)
    x, info = batched_gmres(lambda v: torch.einsum("bij,bj->bi", mats, v), b, rtol=1e-11)
    assert info.converged
    torch.testing.assert_close(x, torch.linalg.solve(mats, b))


def test_happy_breakdown_gives_the_exact_solution_without_nans():
    a = torch.diag(torch.tensor([2.0, 3.0, 4.0, 5.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # an eigenvector: the Krylov space has dimension 1
    x, info = gmres(lambda v: a @ v, b, rtol=1e-14)
    assert info.converged and info.iterations == 1
    torch.testing.assert_close(x, torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64))
    zero, info = gmres(lambda v: a @ v, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert info.iterations == 0 and torch.count_nonzero(zero) == 0


@pytest.mark.parametrize("kwargs, match", [({"rtol": 0.0, "atol": 0.0}, "not both 0"), ({"restart": 0}, "restart"),
                                           ({"max_iters": 0}, "max_iters")])
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        gmres(lambda v: v, torch.ones(3), **kwargs)
    with pytest.raises(InvalidInputError, match=r"shape \(batch, d\)"):
        batched_gmres(lambda v: v, torch.ones(3))


def test_band_preconditioned_gmres_needs_far_fewer_iterations_and_equals_a_dense_solve():
    from neurode.framework.banded import BandFactors

    # I - hγ J for a stiff 1-d diffusion–reaction J (lband = uband = 1), a lagged P: its band at another hγ and J
    n, hg = 200, torch.tensor([4.0, 0.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    band = torch.stack([torch.full((2, n), 1e3), torch.full((2, n), -2e3), torch.full((2, n), 1e3)], -1).double()
    band[:, :, 1] -= 10 * torch.rand(2, n, generator=generator, dtype=torch.float64)
    band[:, 0, 0] = band[:, -1, 2] = 0.0
    j = torch.diag_embed(band[:, :, 1]) + torch.diag_embed(band[:, 1:, 0], -1) + torch.diag_embed(band[:, :-1, 2], 1)
    a = torch.eye(n, dtype=torch.float64) - hg[:, None, None] * j
    b = torch.randn(2, n, generator=generator, dtype=torch.float64)
    factors = BandFactors.factor(band * 1.05, 1, 1, hg * 0.8)

    def matvec(v):
        return torch.einsum("bij,bj->bi", a, v)

    plain_x, plain = batched_gmres(matvec, b, rtol=1e-10, restart=n)
    x, info = batched_gmres(matvec, b, rtol=1e-10, restart=n, preconditioner=lambda v: factors.solve(v))
    assert plain.converged and info.converged
    assert info.iterations * 5 < plain.iterations  # measured: 6 against 200 (= n)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # right preconditioning: the residual tested is the true one
    assert float(torch.linalg.vector_norm(b - matvec(x), dim=1).max()) <= info.residual_norm * 1.01 + 1e-14
    one, single = gmres(lambda v: a[0] @ v, b[0], rtol=1e-10, restart=n,
                        preconditioner=lambda v: factors.solve(v[None], torch.tensor([0]))[0])
    torch.testing.assert_close(one, x[0], rtol=1e-8, atol=1e-10)
