"""Algebraic checks of a Butcher tableau: the order conditions, counted on rooted trees.

A Runge–Kutta method has order ``p`` exactly when, for every rooted tree
``τ`` with at most ``p`` vertices, ``Σ_i b_i Φ_i(τ) = 1 / γ(τ)`` (Butcher 2016,
*Numerical Methods for Ordinary Differential Equations*, §31; Hairer, Nørsett &
Wanner I, §II.2, Theorem 2.13). Here ``Φ(•) = 1`` and, for a tree whose root
has the subtrees ``τ_1 .. τ_m``, ``Φ(τ) = Π_k (A Φ(τ_k))`` elementwise, and
``γ(τ) = |τ| Π_k γ(τ_k)``.

Checking these conditions catches what a convergence measurement cannot: a
typo in the tenth digit of a coefficient lowers the order, but only at step
sizes where the error is already below round-off. The same conditions with
``b`` replaced by the dense-output weights ``w(θ)`` and ``1/γ`` by ``θ^|τ|/γ``
give the order of the interpolant (Hairer et al. I, §II.6, eq. 6.8).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from neurode.framework.tableau import ButcherTableau

#: A rooted tree as the sorted tuple of its root's subtrees; ``()`` is the single vertex.
Tree = tuple


@functools.cache
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with exactly ``order`` vertices (1, 1, 2, 4, 9, 20, 48, 115, ... of them)."""
    if order < 1:
        return ()
    if order == 1:
        return ((),)
    trees = set()
    # the root's subtrees form a multiset of trees whose orders sum to order - 1
    for sizes in _partitions(order - 1):
        for children in itertools.product(*(rooted_trees(s) for s in sizes)):
            trees.add(tuple(sorted(children)))
    return tuple(sorted(trees))


def _partitions(n: int, largest: int | None = None):
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    for first in range(min(n, largest), 0, -1):
        for rest in _partitions(n - first, first):
            yield (first, *rest)


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def tree_density(tree: Tree) -> int:
    """``γ(τ)``: the exact solution's weight of the elementary differential of ``τ``."""
    density = tree_order(tree)
    for child in tree:
        density *= tree_density(child)
    return density


def _stage_weights(tree: Tree, a: np.ndarray) -> np.ndarray:
    phi = np.ones(a.shape[0])
    for child in tree:
        phi = phi * (a @ _stage_weights(child, a))
    return phi


def _matrix(tableau: ButcherTableau, dense: bool = False) -> np.ndarray:
    """The stage matrix; with ``dense``, extended by the dense-output stages (their rows may use every stage)."""
    rows = tableau.a + (tableau.dense_a if dense else ())
    a = np.zeros((len(rows), len(rows)))
    for i, row in enumerate(rows):
        a[i, : len(row)] = row
    return a


def order_residuals(a: np.ndarray, weights: Sequence[float], max_order: int, theta: float = 1.0) -> dict[int, float]:
    """``max_τ |Σ_i w_i Φ_i(τ) - θ^|τ|/γ(τ)|`` over the trees of each order ``1..max_order``."""
    w = np.asarray(weights, dtype=np.float64)
    return {
        q: max(abs(float(w @ _stage_weights(tree, a)) - theta**q / tree_density(tree)) for tree in rooted_trees(q))
        for q in range(1, max_order + 1)
    }


def algebraic_order(a: np.ndarray, weights: Sequence[float], *, theta: float = 1.0, tol: float = 1e-12,
                    max_order: int = 10) -> int:
    """The largest ``p`` such that every order condition up to ``p`` holds within ``tol``."""
    p = 0
    for q, residual in order_residuals(a, weights, max_order, theta).items():
        if residual > tol:
            break
        p = q
    return p


def tableau_orders(tableau: ButcherTableau, *, tol: float = 1e-12) -> dict[str, int | None]:
    """Algebraic orders of a tableau's solution, its embedded solution and its dense output.

    ``"dense"`` is the smallest order of the interpolant over a few interior
    ``θ`` (``None`` without an interpolant); ``"embedded"`` is ``None`` for a
    method without an error estimate.
    """
    a = _matrix(tableau)
    limit = tableau.order + 2
    orders: dict[str, int | None] = {"solution": algebraic_order(a, tableau.b, tol=tol, max_order=limit)}
    if tableau.b_error is None:
        orders["embedded"] = None
    else:
        b_hat = np.asarray(tableau.b) - np.asarray(tableau.b_error)
        orders["embedded"] = algebraic_order(a, b_hat, tol=tol, max_order=limit)
    if tableau.interpolant is None:
        orders["dense"] = None
    else:
        a_dense = _matrix(tableau, dense=True)
        orders["dense"] = min(
            algebraic_order(a_dense, tableau.interpolation_weights(theta), theta=theta, tol=tol, max_order=limit)
            for theta in (0.2, 0.5, 0.9)
        )
    return orders


def check_tableau(tableau: ButcherTableau, *, tol: float = 1e-12) -> dict[str, int | None]:
    """Assert that a tableau is a consistent explicit Runge–Kutta method of its declared order.

    Checks, each with its own message:

    * ``c_i = Σ_j a_ij`` (the stages see the time they are evaluated at, so
      non-autonomous problems keep the order);
    * the solution weights meet every order condition up to ``tableau.order``
      — and not those of ``order + 1``, so the declared order is not an
      understatement that would make the step-size controller too cautious;
    * an embedded pair: the error weights sum to zero and the embedded
      solution has order at least 1;
    * a dense interpolant: it reproduces the step's end (``w(1) = b``, and
      ``0`` on the dense-output stages) and has order at least 1 inside the
      step; its extra stages see their own times (``c_i = Σ_j a_ij``).

    Returns :func:`tableau_orders`. Raises ``AssertionError`` naming the
    tableau, the condition and the values seen.
    """
    name = tableau.name
    a = _matrix(tableau)
    row_sums = _matrix(tableau, dense=True).sum(axis=1)
    nodes = tableau.c + tableau.dense_c
    bad = [i for i, (ci, si) in enumerate(zip(nodes, row_sums)) if abs(ci - si) > tol * max(1.0, abs(ci))]
    if bad:
        i = bad[0]
        raise AssertionError(
            f"tableau {name!r}: stage {i} has c_{i} = {nodes[i]!r} "
            f"but its row of a sums to {float(row_sums[i])!r}; "
            f"expected c_i = sum_j a_ij for every stage (wrong stages: {bad})"
        )
    residuals = order_residuals(a, tableau.b, tableau.order + 1)
    for q in range(1, tableau.order + 1):
        if residuals[q] > tol:
            raise AssertionError(
                f"tableau {name!r} declares order {tableau.order} but its weights b violate an order-{q} condition "
                f"by {residuals[q]:.3g} (tolerance {tol:g}); a coefficient of a, b or c is wrong"
            )
    if residuals[tableau.order + 1] <= tol:
        raise AssertionError(
            f"tableau {name!r} declares order {tableau.order} but its weights b also satisfy every order-"
            f"{tableau.order + 1} condition; declare order={tableau.order + 1}"
        )
    if tableau.b_error is not None:
        total = sum(tableau.b_error)
        if abs(total) > tol:
            raise AssertionError(
                f"tableau {name!r}: the error weights b_error must sum to 0 (b and b_hat both sum to 1), "
                f"got {total!r}"
            )
    orders = tableau_orders(tableau, tol=tol)
    if tableau.b_error is not None and not orders["embedded"]:
        raise AssertionError(f"tableau {name!r}: the embedded solution b - b_error is not even consistent (order 0)")
    if tableau.interpolant is not None:
        end = tableau.interpolation_weights(1.0)
        b_all = tableau.b + (0.0,) * len(tableau.dense_c)
        worst = max(abs(w - b) for w, b in zip(end, b_all, strict=True))
        if worst > tol:
            raise AssertionError(
                f"tableau {name!r}: the dense interpolant at theta=1 differs from b by {worst:.3g}; "
                "the interpolated solution would jump at every step's end"
            )
        if not orders["dense"]:
            raise AssertionError(f"tableau {name!r}: the dense interpolant is not consistent (order 0 inside the step)")
    return orders
