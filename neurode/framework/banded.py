"""Banded iteration matrices ``I - c J`` factored by block cyclic reduction: the band preconditioner's solve.

A matrix with ``lband`` sub- and ``uband`` superdiagonals (scipy's and LSODA's names) is stored as
``(B, d, lband + uband + 1)``: ``band[b, i, k] = A_b[i, i - lband + k]`` (zero where that column is outside
``0..d-1``), one band per sample. Cut into blocks of ``m >= max(lband, uband)`` rows, it is block
tridiagonal — every entry lies in a diagonal block or in one of its two neighbours — with ``⌈d / m⌉``
blocks of ``m × m`` (the last one padded with the identity).

Such a system is solved here by **block cyclic reduction** (Hockney 1965; Buzbee, Golub & Nielson, SIAM
J. Numer. Anal. 7 (1970) 627; Golub & Van Loan, "Matrix Computations", 4th ed., §4.5.4): every odd block
row is eliminated from its even neighbours at once, which leaves a block tridiagonal system of half the
size in the even blocks; repeat until one block is left, then substitute back level by level. Each level is
a handful of batched ``m × m`` operations over all blocks and all samples, so a factorisation is
``O(log(d / m))`` kernel launches and ``O(d m²)`` work, and no ``d × d`` matrix is ever formed. The block
Thomas algorithm (block LU, Golub & Van Loan §4.5.1) does the same work in ``⌈d / m⌉`` *sequential* steps:
on a GPU, or with Python's dispatch cost on a CPU, that is a launch per block where cyclic reduction needs
one per level (9 levels for the 1-d Brusselator's 500 blocks of 2 × 2).

Pivoting is partial *within* each ``m × m`` block (``torch.linalg.lu_factor_ex``), not across blocks: the
reduction is an LU factorisation of the odd–even permuted matrix without block pivoting, stable for
block diagonally dominant matrices (Golub & Van Loan §4.5.4) — which ``I - hγ J`` of a diffusion or a
reaction–diffusion operator is for the steps a stiff solver takes. A sample whose reduction meets a
singular block or a non-finite value is marked not :attr:`~BandFactors.usable`, and :meth:`BandFactors.solve`
returns its right-hand side unchanged (no preconditioning) instead of non-finite values: a preconditioner
may be poor, never wrong, since GMRES minimises the true residual whatever it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError


def check_bandwidths(lband: int, uband: int, d: int | None = None) -> None:
    """Clear errors for half-bandwidths that cannot describe a ``d × d`` band (``d`` unknown: ``None``)."""
    for name, value in (("lband", lband), ("uband", uband)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{name} (a half-bandwidth of the Jacobian) must be an integer >= 0, "
                                    f"got {value!r}")
        if d is not None and value >= d:
            raise InvalidInputError(f"{name}={value} must be less than the {d} components of a state (a sample's "
                                    f"state in a per-sample solve): a band that wide is the whole matrix")


def band_columns(d: int, lband: int, uband: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The band storage's layout: ``(i, j, inside)``, rows ``i`` ``(d, 1)``, the column ``j = i - lband + k`` of
    every entry ``(d, width)`` (clamped into the matrix, so usable as an index) and whether it is inside it."""
    i = torch.arange(d, device=device)[:, None]
    j = i - lband + torch.arange(lband + uband + 1, device=device)[None, :]
    inside = (j >= 0) & (j < d)
    return i, j.clamp(0, d - 1), inside


def _block_layout(d: int, lband: int, uband: int, m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every band entry goes in the ``(nb, 3, m, m)`` block storage (flat index), and which are inside."""
    i, j, inside = band_columns(d, lband, uband, device)
    which = j // m - i // m + 1  # 0: the block left of the diagonal one, 1: diagonal, 2: right
    flat = (((i // m) * 3 + which) * m + i % m) * m + j % m
    return flat[inside], inside.flatten()


def _shift(odd: torch.Tensor, evens: int, *, left: bool) -> torch.Tensor:
    """The odd-block quantity each of the ``evens`` even blocks sees on its left (odd block k-1 for even block
    k) or on its right (odd block k), zero where that neighbour does not exist."""
    zero = torch.zeros_like(odd[:, :1])
    return (torch.cat([zero, odd], 1) if left else torch.cat([odd, zero], 1))[:, :evens]


def band_matvec(band: torch.Tensor, lband: int, uband: int, x: torch.Tensor) -> torch.Tensor:
    """``A_b x_b`` for every row of ``x`` (``(B, d)``), ``A_b`` stored as ``band`` (``(B, d, lband + uband + 1)``,
    zero outside the matrix): ``(A x)_i = Σ_k band[i, k] x[i - lband + k]``."""
    width = lband + uband + 1
    windows = torch.nn.functional.pad(x, (lband, uband)).unfold(1, width, 1)  # [b, i, k] = x[b, i - lband + k]
    return (band * windows).sum(-1)


@dataclass
class BandFactors:
    """The block cyclic reduction of ``I - c_b A_b`` for banded ``A_b``: :meth:`factor` it, then :meth:`solve`.

    Attributes:
        d, block: the size of the system and of its blocks.
        levels: one tuple per reduction level, ``(lu, pivots, D⁻¹L, D⁻¹U, L_even, U_even)``: the factors of the
            eliminated (odd) diagonal blocks, their couplings solved against them, and the couplings of the
            kept (even) blocks, each ``(B, blocks, ...)``.
        last: ``(lu, pivots)`` of the one block left.
        usable: ``(B,)`` bool, the samples whose reduction stayed finite and non-singular.
    """

    d: int
    block: int
    levels: list[tuple[torch.Tensor, ...]]
    last: tuple[torch.Tensor, torch.Tensor]
    usable: torch.Tensor

    @classmethod
    def factor(cls, band: torch.Tensor, lband: int, uband: int, c: torch.Tensor,
               block: int | None = None) -> BandFactors:
        """Factor ``I - c_b A_b`` (``band``: ``(B, d, lband + uband + 1)``, ``c``: ``(B,)``) by block cyclic
        reduction with blocks of ``block`` rows (default ``max(lband, uband, 1)``, the smallest that makes the
        band block tridiagonal: the least work, ``O(d m²)``)."""
        batch, d, width = band.shape
        check_bandwidths(lband, uband, d)
        if width != lband + uband + 1:
            raise InvalidInputError(f"a band of lband={lband}, uband={uband} has {lband + uband + 1} diagonals, "
                                    f"got storage of width {width}")
        m = max(lband, uband, 1) if block is None else block
        if m < max(lband, uband, 1):
            raise InvalidInputError(f"blocks of {m} rows cannot hold a band of lband={lband}, uband={uband}")
        nb = -(-d // m)
        flat, inside = _block_layout(d, lband, uband, m, band.device)
        values = -c.to(band.dtype)[:, None] * band.reshape(batch, -1)[:, inside]
        blocks = band.new_zeros(batch, nb * 3 * m * m)
        blocks[:, flat] = values
        blocks = blocks.view(batch, nb, 3, m, m)
        eye = torch.eye(m, dtype=band.dtype, device=band.device)
        lower, diag, upper = blocks[:, :, 0], blocks[:, :, 1] + eye, blocks[:, :, 2]
        usable = torch.ones(batch, dtype=torch.bool, device=band.device)
        levels = []
        while diag.shape[1] > 1:
            evens = (diag.shape[1] + 1) // 2
            lu, pivots, info = torch.linalg.lu_factor_ex(diag[:, 1::2])
            usable &= (info == 0).all(dim=1)
            solved = torch.linalg.lu_solve(lu, pivots, torch.cat([lower[:, 1::2], upper[:, 1::2]], -1))
            inv_lower, inv_upper = solved[..., :m], solved[..., m:]
            lower_even, upper_even = lower[:, 0::2], upper[:, 0::2]
            # even block 2k: its left neighbour is odd block k-1, its right one odd block k (absent at the ends,
            # where the coupling is zero anyway; Golub & Van Loan §4.5.4):
            # D ← D - L D⁻¹U (left) - U D⁻¹L (right), L ← -L D⁻¹L (left), U ← -U D⁻¹U (right)
            left_upper, left_lower = (_shift(x, evens, left=True) for x in (inv_upper, inv_lower))
            right_lower, right_upper = (_shift(x, evens, left=False) for x in (inv_lower, inv_upper))
            diag = diag[:, 0::2] - lower_even @ left_upper - upper_even @ right_lower
            lower, upper = -(lower_even @ left_lower), -(upper_even @ right_upper)
            levels.append((lu, pivots, inv_lower, inv_upper, lower_even, upper_even))
        lu, pivots, info = torch.linalg.lu_factor_ex(diag)
        usable &= (info == 0).all(dim=1) & torch.isfinite(lu).flatten(1).all(dim=1)
        return cls(d, m, levels, (lu, pivots), usable)

    def solve(self, rhs: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(I - c A)⁻¹ rhs`` for ``rhs`` of shape ``(B, d)`` (or the samples ``rows`` of the factored batch);
        a sample whose factors are not usable gets ``rhs`` back."""
        pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
        batch, m = rhs.shape[0], self.block
        nb = -(-self.d // m)
        r = torch.nn.functional.pad(rhs, (0, nb * m - self.d)).view(batch, nb, m, 1)
        kept = []
        for lu, pivots, _, _, lower_even, upper_even in self.levels:
            evens = (r.shape[1] + 1) // 2
            odd = torch.linalg.lu_solve(pick(lu), pick(pivots), r[:, 1::2])
            r = r[:, 0::2] - pick(lower_even) @ _shift(odd, evens, left=True) - pick(upper_even) @ _shift(
                odd, evens, left=False)
            kept.append(odd)
        lu, pivots = self.last
        x = torch.linalg.lu_solve(pick(lu), pick(pivots), r)
        for (_, _, inv_lower, inv_upper, _, _), odd in zip(reversed(self.levels), reversed(kept)):
            # odd block 2k+1 from its even neighbours 2k and 2k+2 (absent past the end: zero coupling anyway):
            # x = D⁻¹r - D⁻¹L x_left - D⁻¹U x_right
            odds = odd.shape[1]
            padded = torch.cat([x, torch.zeros_like(x[:, :1])], 1)
            x_odd = odd - pick(inv_lower) @ padded[:, :odds] - pick(inv_upper) @ padded[:, 1 : odds + 1]
            full = x.new_empty(batch, x.shape[1] + odds, m, 1)
            full[:, 0::2], full[:, 1::2] = x, x_odd
            x = full
        x = x.reshape(batch, -1)[:, : self.d]
        return torch.where(pick(self.usable)[:, None], x, rhs)
