"""Bootstrapped continuous extensions: a higher-order dense output from a few extra stages.

A Runge–Kutta pair whose published interpolant is of lower order than the
method (dopri8's free interpolant is of order 5, for an 8th-order step) can be
raised by *bootstrapping* (Enright, Jackson, Nørsett & Thomsen 1986,
"Interpolants for Runge–Kutta formulas", ACM TOMS 12(3), §4; Hairer, Nørsett &
Wanner I, §II.6): evaluate ``f`` at interior points of the step on the current
interpolant, and fit a Hermite–Birkhoff polynomial to

    u(0) = y0,  u(1) = y1,  u'(0) = h f(t0, y0),  u'(1) = h f(t1, y1),
    u'(θ_j) = h f(t0 + θ_j h, u_prev(θ_j))          j = 1..m.

A derivative sample taken on an interpolant with local error ``O(h^(q+1))``
enters ``u`` with an error ``O(h^(q+2))``, and ``m + 4`` conditions fix a
polynomial of degree ``m + 3``, whose interpolation error is ``O(h^(m+4))``.
So a round raises the order of the dense output from ``q`` to at most
``min(q + 1, m + 3)``: by one, given enough nodes. Nodes for which the
conditions are dependent (``0, 1/4, 1/2, 3/4, 1``: Boole's rule integrates the
derivative exactly) are refused.

Every extra stage is an ordinary explicit stage — its input is a linear
combination of the stages before it — so the result is a tableau extension:
the extra nodes ``c``, their rows of ``a`` over all earlier stages, and the
interpolant's coefficient rows over every stage. The fit is solved in exact
rational arithmetic, so the end conditions ``u(0) = y0`` and ``u(1) = y1``
hold to the rounding of the final coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

Rows = tuple[tuple[float, ...], ...]


def _weights(interpolant: Sequence[Sequence[Fraction]], theta: Fraction) -> list[Fraction]:
    """``w_i(θ) = Σ_p B_ip θ^(p+1)`` for each stage ``i``."""
    return [sum((coef * theta ** (p + 1) for p, coef in enumerate(row)), Fraction(0)) for row in interpolant]


def _solve(matrix: list[list[Fraction]], rhs: list[list[Fraction]]) -> list[list[Fraction]]:
    """Gauss–Jordan elimination, exact: ``matrix @ x = rhs`` for ``x`` (rows of ``rhs`` are right-hand sides)."""
    n = len(matrix)
    aug = [list(matrix[i]) + list(rhs[i]) for i in range(n)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if aug[r][col] != 0), None)
        if pivot is None:
            raise ValueError("the Hermite–Birkhoff conditions are singular for these nodes; choose other nodes")
        aug[col], aug[pivot] = aug[pivot], aug[col]
        inv = 1 / aug[col][col]
        aug[col] = [x * inv for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                factor = aug[r][col]
                aug[r] = [x - factor * y for x, y in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def bootstrap(
    c: Sequence[float],
    b: Sequence[float],
    interpolant: Sequence[Sequence[float]],
    rounds: Sequence[Sequence[Fraction | float]],
) -> tuple[tuple[float, ...], Rows, Rows]:
    """Raise an FSAL method's dense output by bootstrapping rounds of extra stages.

    Args:
        c: the method's nodes (``s`` stages, the last one ``f(t1, y1)``: FSAL).
        b: its solution weights.
        interpolant: its dense-output coefficients, ``s`` rows, ``B_ip`` for ``θ^(p+1)``.
        rounds: the interior nodes ``θ_j`` of each round, in order; round ``r``
            samples ``f`` on the interpolant that round ``r - 1`` produced.

    Returns:
        ``(dense_c, dense_a, interpolant)``: the extra stages' nodes, their rows
        of ``a`` (row ``j`` has ``s + j`` entries) and the new interpolant's
        coefficient rows (one per stage, extra ones included).
    """
    s = len(c)
    if len(b) != s or len(interpolant) != s:
        raise ValueError(f"c, b and interpolant must all have {s} entries, got {len(b)} and {len(interpolant)}")
    if c[-1] != 1 or any(x <= 0 or x >= 1 for r in rounds for x in r):
        raise ValueError(f"bootstrapping needs an FSAL last stage (c = 1, got {c[-1]}) and nodes in (0, 1), "
                         f"got {rounds}")
    current = [[Fraction(x) for x in row] for row in interpolant]
    b_exact = [Fraction(x) for x in b]
    dense_c: list[Fraction] = []
    dense_a: list[list[Fraction]] = []
    for nodes in rounds:
        nodes = [Fraction(x) for x in nodes]
        first = s + len(dense_c)
        for theta in nodes:
            row = _weights(current, theta)
            n_before = s + len(dense_c)
            dense_a.append(row + [Fraction(0)] * (n_before - len(row)))
            dense_c.append(theta)
        n = s + len(dense_c)
        degree = len(nodes) + 3
        powers = range(1, degree + 1)

        def unit(i: int, n: int = n) -> list[Fraction]:
            return [Fraction(int(j == i)) for j in range(n)]

        # u(θ) = y0 + h Σ_p C_p θ^p with C_p a combination of the stages: one condition per row
        matrix = [[Fraction(int(p == 1)) for p in powers], [Fraction(1)] * degree, [Fraction(p) for p in powers]]
        rhs = [unit(0), b_exact + [Fraction(0)] * (n - s), unit(s - 1)]
        for j, theta in enumerate(nodes):
            matrix.append([p * theta ** (p - 1) for p in powers])
            rhs.append(unit(first + j))
        coefficients = _solve(matrix, rhs)  # (degree, n)
        current = [[coefficients[p][i] for p in range(degree)] for i in range(n)]
    return (
        tuple(float(x) for x in dense_c),
        tuple(tuple(float(x) for x in row) for row in dense_a),
        tuple(tuple(float(x) for x in row) for row in current),
    )
