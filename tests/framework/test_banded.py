"""Block cyclic reduction of banded ``I - c A``: equal to a dense solve for every shape of band, block and batch;
a sample whose reduction breaks down is left unpreconditioned; bandwidths are checked."""

import pytest
import torch

from neurode.framework.banded import BandFactors, band_matvec, check_bandwidths
from neurode.framework.errors import InvalidInputError

F64 = torch.float64


def dense(band: torch.Tensor, lband: int, uband: int) -> torch.Tensor:
    """The (B, d, d) matrices of band storage band[b, i, k] = A[i, i - lband + k]."""
    batch, d, width = band.shape
    a = torch.zeros(batch, d, d, dtype=band.dtype)
    for i in range(d):
        for k in range(width):
            if 0 <= i - lband + k < d:
                a[:, i, i - lband + k] = band[:, i, k]
    return a


@pytest.mark.parametrize("d, lband, uband, block", [
    (1, 0, 0, None), (2, 1, 0, None), (10, 2, 2, None), (7, 1, 3, None), (33, 2, 1, None), (64, 2, 2, None),
    (17, 0, 0, None), (50, 3, 2, 8), (5, 2, 2, 5), (300, 2, 2, None)])
def test_cyclic_reduction_equals_a_dense_solve(d, lband, uband, block):
    # block counts odd, even, powers of two and not, a padded last block, one block: every branch of the reduction
    generator = torch.Generator().manual_seed(d)
    band = torch.randn(3, d, lband + uband + 1, generator=generator, dtype=F64)
    c = torch.tensor([0.01, 0.1, 0.3], dtype=F64)  # each sample its own hγ
    rhs = torch.randn(3, d, generator=generator, dtype=F64)
    factors = BandFactors.factor(band, lband, uband, c, block=block)
    exact = torch.linalg.solve(torch.eye(d, dtype=F64) - c[:, None, None] * dense(band, lband, uband), rhs)
    assert factors.usable.all()
    torch.testing.assert_close(factors.solve(rhs), exact, rtol=1e-10, atol=1e-12)
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(factors.solve(rhs[rows], rows), exact[rows], rtol=1e-10, atol=1e-12)


def test_a_sample_whose_reduction_breaks_down_gets_its_right_hand_side_back():
    band = torch.zeros(2, 6, 3, dtype=F64)
    band[:, :, 1] = 1.0  # A = I: I - c A is singular for c = 1
    factors = BandFactors.factor(band, 1, 1, torch.tensor([0.5, 1.0], dtype=F64))
    assert factors.usable.tolist() == [True, False]
    rhs = torch.arange(12, dtype=F64).reshape(2, 6)
    out = factors.solve(rhs)
    torch.testing.assert_close(out[0], 2 * rhs[0])
    torch.testing.assert_close(out[1], rhs[1])  # no preconditioning rather than non-finite values


@pytest.mark.parametrize("lband, uband, d, match", [(-1, 0, None, "lband .* >= 0"), (0, 1.5, None, "uband"),
                                                    (True, 0, None, "lband"), (3, 1, 3, "lband=3 must be less than"),
                                                    (0, 4, 4, "uband=4 must be less than")])
def test_bandwidths_are_checked(lband, uband, d, match):
    with pytest.raises(InvalidInputError, match=match):
        check_bandwidths(lband, uband, d)


def test_band_storage_and_blocks_are_checked():
    with pytest.raises(InvalidInputError, match="has 5 diagonals"):
        BandFactors.factor(torch.zeros(1, 8, 3, dtype=F64), 2, 2, torch.ones(1, dtype=F64))
    with pytest.raises(InvalidInputError, match="cannot hold"):
        BandFactors.factor(torch.zeros(1, 8, 5, dtype=F64), 2, 2, torch.ones(1, dtype=F64), block=1)


def test_band_matvec_is_the_dense_product():
    generator = torch.Generator().manual_seed(3)
    batch, d, lband, uband = 2, 9, 2, 1
    band = torch.randn(batch, d, lband + uband + 1, generator=generator, dtype=torch.float64)
    i = torch.arange(d)[:, None]
    j = i - lband + torch.arange(lband + uband + 1)[None, :]
    band = torch.where((j >= 0) & (j < d), band, torch.zeros(()))  # storage: zero outside the matrix
    dense = torch.zeros(batch, d, d, dtype=torch.float64)
    for row in range(d):
        for k in range(lband + uband + 1):
            if 0 <= row - lband + k < d:
                dense[:, row, row - lband + k] = band[:, row, k]
    x = torch.randn(batch, d, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(band_matvec(band, lband, uband, x), (dense @ x[..., None])[..., 0], rtol=0, atol=1e-14)
