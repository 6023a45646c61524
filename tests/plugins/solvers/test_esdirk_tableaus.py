"""The ESDIRK tableaus (Kværnø; Kennedy & Carpenter): row sums, order conditions of b, b̂ and the dense output,
stiff accuracy, L-stability, from the data."""

from dataclasses import replace

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
    assert np.array_equal(b, a[-1])  # stiffly accurate
    if tableau.name.startswith("kvaerno"):
        assert np.array_equal(b_hat, a[-2])  # the embedded solution stiffly accurate too (Kværnø's design)
    residuals = order_residuals(a, b, tableau.order + 1)
    assert max(residuals[q] for q in range(1, tableau.order + 1)) < 1e-14
    assert residuals[tableau.order + 1] > 1e-4  # the declared order is the order
    embedded = order_residuals(a, b_hat, tableau.embedded_order + 1)
    assert max(embedded[q] for q in range(1, tableau.embedded_order + 1)) < 1e-14
    assert embedded[tableau.embedded_order + 1] > 1e-4
    assert _limit_at_infinity(a, b) < 1e-12  # L-stable: R(z) -> 0 as z -> -inf
    # and it gets there like 1/z (ESDIRK5(4)7L[2]SA: R(-1e6) = -1.6e-5)
    assert abs(_stability(a, b, -1e6)) < 1e-4 and abs(_stability(a, b, -1e8)) < 1e-6
    # A-stable: |R| <= 1 on the imaginary axis (and so in the left half-plane, R being analytic there)
    assert max(abs(_stability(a, b, 1j * y)) for y in np.logspace(-3, 6, 400)) <= 1 + 1e-12
    assert tableau.citation.startswith(("Kværnø, BIT 44 (2004)", "Kennedy & Carpenter, NASA/TM-2016-219173"))


def test_a_wrong_coefficient_is_refused_by_the_tableau():
    from dataclasses import replace

    tableau = METHODS[0]
    rows = [list(r) for r in tableau.a]
    rows[2][1] += 1e-3
    with pytest.raises(ValueError, match="row 2 of a sums to"):
        replace(tableau, a=tuple(tuple(r) for r in rows))


@pytest.mark.parametrize("tableau", [t for t in METHODS if t.dense is not None], ids=lambda t: t.name)
def test_continuous_extension_meets_the_order_conditions_at_every_theta_and_is_c1(tableau):
    # Hairer et al. I, §II.6, eq. 6.8: the weights b_j(θ) meet the order conditions with θ^|τ|/γ(τ) up to the
    # dense order, at every θ (a polynomial identity: checked at more θ than its degree)
    a, b = np.array(tableau.a), np.array(tableau.b)
    beta = np.array(tableau.dense)  # (stages, degree): coefficients of θ, θ², ...
    powers = np.arange(1, beta.shape[1] + 1)
    for theta in np.linspace(0.05, 1.0, 2 * beta.shape[1] + 3):
        weights = beta @ theta**powers
        residuals = order_residuals(a, weights, tableau.dense_order, theta=theta)
        assert max(residuals.values()) < 1e-13, (theta, residuals)
    assert np.allclose(beta.sum(axis=1), b, rtol=0, atol=1e-14)  # b(1) = b: the interpolant ends at y1
    derivative_at_one = beta @ powers
    assert np.allclose(derivative_at_one, np.eye(len(b))[-1], rtol=0, atol=1e-13)  # y'(t1) = k_s = f(y1)
    assert np.allclose(beta[:, 0], np.eye(len(b))[0], rtol=0, atol=0)  # y'(t0) = k_1 = f(y0)
    # and one order more fails: the declared dense order is the order
    theta = 0.5
    assert max(order_residuals(a, beta @ theta**powers, tableau.dense_order + 1, theta=theta).values()) > 1e-4


def test_a_continuous_extension_that_does_not_end_at_y1_is_refused():
    tableau = next(t for t in METHODS if t.dense is not None)
    bad = (tuple(x + (1e-6 if j == 1 else 0.0) for j, x in enumerate(tableau.dense[0])), *tableau.dense[1:])
    with pytest.raises(ValueError, match="weights at θ = 1"):
        replace(tableau, dense=bad)
