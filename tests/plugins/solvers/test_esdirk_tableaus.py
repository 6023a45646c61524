"""Kværnø's ESDIRK tableaus: row sums, order conditions of b and b̂, stiff accuracy, L-stability, from the data."""

import numpy as np
import pytest

from neurode.plugins.solvers.tableaus.esdirk import METHODS
from neurode.testing.tableaus import order_residuals


def _stability(a: np.ndarray, b: np.ndarray, z: complex) -> complex:
    """R(z) = 1 + z bᵀ (I - zA)⁻¹ 1 (Hairer & Wanner II, §IV.3)."""
    s = len(b)
    return 1 + z * b @ np.linalg.solve(np.eye(s) - z * a, np.ones(s))


def _limit_at_infinity(a: np.ndarray, b: np.ndarray) -> float:
    """R(∞) = P(z)/Q(z) as z → ∞, from the coefficients of det(I - z(A - 1bᵀ)) and det(I - zA) (np.poly)."""
    s = len(b)
    # det(I - zM) = Σ_k c_k z^k with det(λI - M) = Σ_k c_k λ^(s-k), the coefficients np.poly gives
    numerator = np.poly(a - np.outer(np.ones(s), b))
    denominator = np.poly(a)
    degree = max(k for k in range(s + 1) if abs(denominator[k]) > 1e-14)
    assert all(abs(x) < 1e-12 for x in numerator[degree + 1:])
    return abs(numerator[degree] / denominator[degree])


@pytest.mark.parametrize("tableau", METHODS, ids=lambda t: t.name)
def test_tableau_is_a_stiffly_accurate_l_stable_pair_of_its_orders(tableau):
    a, b, b_hat = np.array(tableau.a), np.array(tableau.b), np.array(tableau.b_hat)
    assert np.allclose(a.sum(axis=1), tableau.c, rtol=0, atol=1e-15)
    assert abs(b.sum() - 1) < 1e-15 and abs(b_hat.sum() - 1) < 1e-15
    assert np.array_equal(b, a[-1]) and np.array_equal(b_hat, a[-2])  # both stiffly accurate (Kværnø's design)
    residuals = order_residuals(a, b, tableau.order + 1)
    assert max(residuals[q] for q in range(1, tableau.order + 1)) < 1e-14
    assert residuals[tableau.order + 1] > 1e-4  # the declared order is the order
    embedded = order_residuals(a, b_hat, tableau.embedded_order + 1)
    assert max(embedded[q] for q in range(1, tableau.embedded_order + 1)) < 1e-14
    assert embedded[tableau.embedded_order + 1] > 1e-4
    assert _limit_at_infinity(a, b) < 1e-12  # L-stable: R(z) -> 0 as z -> -inf
    assert abs(_stability(a, b, -1e6)) < 1e-5
    # A-stable: |R| <= 1 on the imaginary axis (and so in the left half-plane, R being analytic there)
    assert max(abs(_stability(a, b, 1j * y)) for y in np.logspace(-3, 6, 400)) <= 1 + 1e-12
    assert tableau.citation.startswith("Kværnø, BIT 44 (2004)")


def test_a_wrong_coefficient_is_refused_by_the_tableau():
    from dataclasses import replace

    tableau = METHODS[0]
    rows = [list(r) for r in tableau.a]
    rows[2][1] += 1e-3
    with pytest.raises(ValueError, match="row 2 of a sums to"):
        replace(tableau, a=tuple(tuple(r) for r in rows))
