"""The Jacobians implicit methods build: dense, per-sample blocks, banded, user-supplied, forward differences."""

import pytest
import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.jacobian import (
    banded_jacobian,
    block_jacobian,
    dense_jacobian,
    difference_jvp,
    exact_banded_jacobian,
    jacobian,
    largest_stray,
    user_jacobian,
)


def robertson(y):
    """Robertson's kinetics, per sample: y of shape (B, 3)."""
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                        0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                        3e7 * y2**2], dim=-1)


def robertson_jacobian(y):
    y1, y2, y3 = y.unbind(-1)
    zero = torch.zeros_like(y1)
    rows = [torch.stack([-0.04 + zero, 1e4 * y3, 1e4 * y2], -1),
            torch.stack([0.04 + zero, -1e4 * y3 - 6e7 * y2, -1e4 * y2], -1),
            torch.stack([zero, 6e7 * y2, zero], -1)]
    return torch.stack(rows, dim=-2)


@pytest.fixture
def states():
    torch.manual_seed(0)
    return torch.rand(5, 3, dtype=torch.float64) * torch.tensor([1.0, 1e-4, 1.0], dtype=torch.float64)


def test_block_jacobian_is_the_closed_form_per_sample(states):
    blocks = block_jacobian(robertson, states)
    assert blocks.shape == (5, 3, 3)
    torch.testing.assert_close(blocks, robertson_jacobian(states), rtol=1e-12, atol=1e-12)


def test_block_jacobian_matches_the_diagonal_blocks_of_the_dense_one(states):
    dense = dense_jacobian(robertson, states).reshape(5, 3, 5, 3)
    blocks = block_jacobian(robertson, states)
    for b in range(5):
        torch.testing.assert_close(blocks[b], dense[b, :, b, :])
        others = torch.cat([dense[b, :, :b, :], dense[b, :, b + 1:, :]], dim=1)
        assert torch.count_nonzero(others) == 0


def test_block_jacobian_of_a_state_with_several_dimensions():
    weight = torch.randn(6, 6, dtype=torch.float64)

    def f(y):  # (B, 2, 3) -> (B, 2, 3)
        return torch.tanh(y.reshape(y.shape[0], 6) @ weight.T).reshape(y.shape)

    y = torch.randn(4, 2, 3, dtype=torch.float64)
    blocks = block_jacobian(f, y)
    for b in range(4):
        expected = torch.autograd.functional.jacobian(lambda z: f(z.unsqueeze(0))[0], y[b]).reshape(6, 6)
        torch.testing.assert_close(blocks[b], expected)


def test_block_jacobian_falls_back_to_differences_without_a_graph(states):
    def no_graph(y):
        with torch.no_grad():
            return robertson(y)

    blocks = block_jacobian(no_graph, states)
    torch.testing.assert_close(blocks, robertson_jacobian(states), rtol=1e-3, atol=1e-6)


def test_dense_jacobian_falls_back_to_differences_without_a_graph():
    a = torch.tensor([[-2.0, 1.0], [0.5, -3.0]], dtype=torch.float64)

    def no_graph(y):
        with torch.no_grad():
            return a @ y

    torch.testing.assert_close(dense_jacobian(no_graph, torch.tensor([1.0, 2.0], dtype=torch.float64)), a)


def test_block_jacobian_works_for_an_f_vmap_cannot_batch(states):
    def in_place(y):
        out = robertson(y).clone()
        if float(out.abs().sum()) > -1:  # data-dependent control flow
            out.mul_(1.0)
        return out

    torch.testing.assert_close(block_jacobian(in_place, states), robertson_jacobian(states))


def test_user_jacobian_is_checked_and_reshaped(states):
    out = jacobian(robertson, states, per_sample=True, jac=lambda t, y: robertson_jacobian(y), t=0.0)
    torch.testing.assert_close(out, robertson_jacobian(states))
    flat = torch.zeros(15, 15, dtype=torch.float64)
    assert user_jacobian(lambda t, y: flat.reshape(5, 3, 5, 3), 0.0, states, per_sample=False).shape == (15, 15)
    with pytest.raises(InvalidInputError, match=r"returned shape \(3, 3\).*expected \(batch, d, d\)"):
        user_jacobian(lambda t, y: torch.zeros(3, 3), 0.0, states, per_sample=True)
    with pytest.raises(InvalidInputError, match="must return a tensor"):
        user_jacobian(lambda t, y: [[0.0]], 0.0, states, per_sample=True)


def test_difference_jvp_approximates_the_jacobian_product():
    a = torch.tensor([[-2.0, 1.0], [0.5, -3.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    v = torch.tensor([0.3, -0.7], dtype=torch.float64)

    def f(z):
        return a @ z + 0.1 * z**2

    expected = (a + torch.diag(0.2 * y)) @ v
    torch.testing.assert_close(difference_jvp(f, y, v, f(y)), expected, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(difference_jvp(f, y, torch.zeros(2, dtype=torch.float64), f(y))) == 0


def test_an_implicit_solve_reports_its_jacobians_and_factorisations():
    import neurode

    y0 = torch.tensor([1.0, 1e-5, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    sol = neurode.solve(lambda t, y: robertson(y.unsqueeze(0))[0] * 1e-3, y0, t, solver="implicit_euler", step_size=0.1)
    assert sol.stats.n_accepted == 10
    assert sol.stats.n_jac == sol.stats.n_lu == 10  # one Jacobian and one factorisation per step
    explicit = neurode.solve(lambda t, y: -y, y0, torch.linspace(0, 1, 5, dtype=torch.float64))
    assert explicit.stats.n_jac == explicit.stats.n_lu == 0


def banded_field(lband: int, uband: int):
    """A nonlinear field whose component i reads components i - lband .. i + uband (a banded Jacobian)."""

    def f(y):
        out = -y**3
        for k in range(1, lband + 1):
            out[:, k:] = out[:, k:] + (0.5 / k) * torch.sin(y[:, :-k])
        for k in range(1, uband + 1):
            out[:, :-k] = out[:, :-k] + (0.3 * k) * y[:, k:] * y[:, :-k]
        return out

    return f


@pytest.mark.parametrize("lband, uband", [(2, 2), (1, 3), (0, 0), (3, 0)])
def test_banded_jacobian_is_the_autograd_band_from_lband_plus_uband_plus_one_evaluations(lband, uband):
    torch.manual_seed(1)
    y = torch.rand(3, 20, dtype=torch.float64) + 0.5
    f = banded_field(lband, uband)
    calls = []

    def counted(z):
        calls.append(z.shape[0])
        return f(z)

    band = banded_jacobian(counted, y, f(y), lband, uband)
    assert len(calls) == lband + uband + 1  # Curtis–Powell–Reid groups, whatever d
    exact = block_jacobian(f, y)
    assert band.shape == (3, 20, lband + uband + 1)
    for b in range(3):
        for i in range(20):
            for k in range(lband + uband + 1):
                j = i - lband + k
                expected = exact[b, i, j] if 0 <= j < 20 else 0.0
                assert float(band[b, i, k]) == pytest.approx(float(expected), abs=1e-6)
    # the field really is banded as declared (the comparison above covers its whole Jacobian)
    mask = torch.ones(20, 20, dtype=torch.bool).triu(-lband).tril(uband)
    assert float(exact[:, ~mask].abs().max()) == 0.0


def test_banded_jacobian_needs_matching_shapes():
    with pytest.raises(InvalidInputError, match=r"banded_jacobian needs y and f0 of one shape"):
        banded_jacobian(lambda z: z, torch.ones(4), torch.ones(4), 1, 1)


def _band_of(dense: torch.Tensor, lband: int, uband: int) -> torch.Tensor:
    d = dense.shape[-1]
    i = torch.arange(d)[:, None]
    j = i - lband + torch.arange(lband + uband + 1)[None, :]
    inside = (j >= 0) & (j < d)
    return torch.where(inside, dense[..., i, j.clamp(0, d - 1)], torch.zeros(()))


@pytest.mark.parametrize("lband, uband", [(1, 1), (2, 1), (0, 2)])
def test_the_exact_band_is_the_dense_jacobians_band_and_nothing_strays(lband, uband):
    # a nonlinear field coupling each component to lband neighbours below and uband above, per sample
    def f(y):
        out = -y**3
        for k in range(1, lband + 1):
            out = out + k * torch.nn.functional.pad(y[:, :-k], (k, 0)) ** 2
        for k in range(1, uband + 1):
            out = out + torch.sin(torch.nn.functional.pad(y[:, k:], (0, k)) * (k + 1))
        return out

    y = torch.randn(3, 11, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    band, strays = exact_banded_jacobian(f, y, lband, uband)
    stray, *_ = largest_stray(strays)
    dense = block_jacobian(f, y)
    torch.testing.assert_close(band, _band_of(dense, lband, uband), rtol=0, atol=1e-14)
    assert stray < 1e-13
    # declared too narrow: the entries left out land on other rows' band entries of their group; the weighted
    # product finds them anyway, in a column that has them
    narrow = (max(lband - 1, 0), uband - (lband == 0))
    stray, sample, column = largest_stray(exact_banded_jacobian(f, y, *narrow)[1])
    rows, cols = torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij")
    out_of_band = (cols - rows > narrow[1]) | (rows - cols > narrow[0])
    assert stray > 0.1 and bool(dense[sample, :, column][out_of_band[:, column]].abs().max() > 0)


def test_a_field_without_a_graph_has_no_exact_band():
    assert exact_banded_jacobian(lambda y: y.detach() * 2, torch.ones(2, 4, dtype=torch.float64), 1, 1) is None
