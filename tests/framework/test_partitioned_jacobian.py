"""The partitioned (block-diagonal, quadrature parts left out) Jacobian's iteration matrix."""

import pytest
import torch

from neurode.framework.errors import InvalidInputError
from neurode.framework.partitioned_jacobian import PartitionedJacobian

F64 = torch.float64


def test_the_factors_solve_the_stage_system_part_by_part():
    # state (q, u[2], v[2], p[3]): u and v coupled within themselves, q and p quadratures (zero columns)
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randn(2, 2, 2, dtype=F64, generator=generator)
    a = torch.tensor([[5 / 12, -1 / 12], [3 / 4, 1 / 4]], dtype=F64)  # Radau IIA, two stages
    h, size = 0.3, 8
    jac = PartitionedJacobian(size, (1, 3), blocks)
    dense = torch.zeros(size, size, dtype=F64)
    dense[1:3, 1:3], dense[3:5, 3:5] = blocks
    matrix = torch.eye(2 * size, dtype=F64) - h * torch.kron(a, dense)
    residual = torch.randn(2, size, dtype=F64, generator=generator)
    factors = jac.factor(h, a)
    assert not factors.singular
    torch.testing.assert_close(factors.solve(residual).reshape(-1), torch.linalg.solve(matrix, residual.reshape(-1)))


def test_parts_are_checked():
    with pytest.raises(InvalidInputError, match="disjoint"):
        PartitionedJacobian(4, (0, 1), torch.zeros(2, 2, 2))
    with pytest.raises(InvalidInputError, match="inside"):
        PartitionedJacobian(3, (2,), torch.zeros(1, 2, 2))
    with pytest.raises(InvalidInputError, match="starts"):
        PartitionedJacobian(4, (0,), torch.zeros(2, 2, 2))
    with pytest.raises(InvalidInputError, match=r"\(parts, m, m\)"):
        PartitionedJacobian(4, (0,), torch.zeros(1, 2, 3))
