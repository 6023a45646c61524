"""A Jacobian that is block-diagonal over parts of the state, with quadrature parts left out.

Some systems are large only because they carry passengers: components that
are integrated along but never feed back into the dynamics. The continuous
adjoint's augmented state ``[y, a, g_θ, g_t]`` (Chen et al. 2018, Algorithm 1)
is one: ``g_θ`` and ``g_t`` are quadratures — their columns of the Jacobian
are zero — and there may be hundreds of thousands of them, one per
parameter. Its Jacobian is block lower-triangular,

    ∂/∂[y, a, g] [f, -Jᵀa, -aᵀ∂f/∂θ] = [[J, 0, 0], [-∂(Jᵀa)/∂y, -Jᵀ, 0], [*, *, 0]]

(Hairer, Nørsett & Wanner I, §I.14; Cao, Li, Petzold & Serban, SIAM J. Sci.
Comput. 24 (2003), §2), so a Newton iteration needs only its diagonal blocks
``J`` and ``-Jᵀ``: the quadratures converge with the stages they integrate.
Forming the dense Jacobian of the whole augmented state instead costs one
evaluation per parameter and a factorisation cubic in their number.

:class:`PartitionedJacobian` says that: equal-sized diagonal blocks over
contiguous parts of the flattened state; components outside every part are
taken as having zero columns (quadratures) and get the identity in the
iteration matrix. Dropping the off-diagonal blocks makes it the matrix of a
*simplified* Newton iteration (exact blocks, approximate coupling), which
converges to the same root; it is not the exact Jacobian a Rosenbrock
method's order relies on.

A solver option ``jac(t, y)`` may return one in place of a dense matrix;
:meth:`PartitionedJacobian.factor` gives the LU factors of the stage
iteration matrix ``I - h (A ⊗ J)`` part by part (one batched factorisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurode.framework.errors import InvalidInputError


@dataclass(frozen=True)
class PartitionedJacobian:
    """``∂f/∂y`` as diagonal blocks: ``blocks[p]`` is the ``(m, m)`` Jacobian of the state's part
    ``[starts[p], starts[p] + m)`` with respect to itself; ``size`` is the flattened state's length."""

    size: int
    starts: tuple[int, ...]
    blocks: torch.Tensor  # (P, m, m)

    def __post_init__(self) -> None:
        if self.blocks.ndim != 3 or self.blocks.shape[1] != self.blocks.shape[2]:
            raise InvalidInputError(f"PartitionedJacobian blocks must be (parts, m, m), got {tuple(self.blocks.shape)}")
        if len(self.starts) != self.blocks.shape[0]:
            raise InvalidInputError(f"PartitionedJacobian has {self.blocks.shape[0]} blocks but {len(self.starts)} "
                                    "starts")
        m, ends = self.blocks.shape[1], 0
        for start in sorted(self.starts):
            if start < ends or start + m > self.size:
                raise InvalidInputError(f"PartitionedJacobian parts must be disjoint and inside the state of size "
                                        f"{self.size}; starts {self.starts} with blocks of size {m} are not")
            ends = start + m

    def factor(self, h: float, a: torch.Tensor) -> PartitionedFactors:
        """The LU factors of ``I - h (A ⊗ J_p)`` for every part (``a``: the ``(s, s)`` stage matrix)."""
        parts, m = self.blocks.shape[0], self.blocks.shape[1]
        s = a.shape[0]
        coupled = (a[None, :, None, :, None] * self.blocks[:, None, :, None, :]).reshape(parts, s * m, s * m)
        eye = torch.eye(s * m, dtype=self.blocks.dtype, device=self.blocks.device)
        lu, pivots, info = torch.linalg.lu_factor_ex(eye - h * coupled)
        return PartitionedFactors(self, lu, pivots, bool((info != 0).any()))


@dataclass(frozen=True)
class PartitionedFactors:
    """Solves ``(I - h (A ⊗ J)) x = r`` for stage residuals ``r`` of shape ``(s, size)``, part by part."""

    jacobian: PartitionedJacobian
    lu: torch.Tensor
    pivots: torch.Tensor
    singular: bool

    def solve(self, residual: torch.Tensor) -> torch.Tensor:
        s = residual.shape[0]
        m = self.jacobian.blocks.shape[1]
        index = torch.tensor(self.jacobian.starts, device=residual.device)[:, None] + torch.arange(
            m, device=residual.device)  # (P, m)
        rhs = residual[:, index]  # (s, P, m)
        solved = torch.linalg.lu_solve(self.lu, self.pivots, rhs.permute(1, 0, 2).reshape(len(index), s * m, 1))
        out = residual.clone()  # the quadratures: identity
        out[:, index] = solved.reshape(len(index), s, m).permute(1, 0, 2)
        return out
